"""The ``svdgrad`` Typer application and its console entry point ``main()``."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from .. import __version__
from . import _common as c
from . import check as _check
from . import jvp as _jvp
from . import svd as _svd
from . import vjp as _vjp

app = typer.Typer(
    name="svdgrad",
    help="Derivatives of the singular value decomposition A = U diag(S) Vh, forward (jvp) and "
    "reverse (vjp) mode, the factorisation itself (svd), and checks of them (check).\n\n"
    "Arrays are read from PATH.npy, PATH.npz:NAME, PATH.h5:/DATASET or - (a .npy stream on "
    "standard input); leading dimensions are a batch.",
    epilog="[bold]Example[/bold]\n\n  $ svdgrad jvp A.npy dA.npy -o out.npz",
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.command("svd", epilog=_svd.EPILOG)(_svd.svd)
app.command("jvp", epilog=_jvp.EPILOG)(_jvp.jvp)
app.command("vjp", epilog=_vjp.EPILOG)(_vjp.vjp)
app.command("check", epilog=_check.EPILOG)(_check.check)

try:
    from .bench import bench
except ImportError:  # the bench command is optional
    bench = None
if bench is not None:
    app.command("bench")(bench)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"svdgrad {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="Show the version and exit.",
        ),
    ] = False,
    no_cache: Annotated[
        bool,
        typer.Option(
            "--no-cache",
            help="Do not use JAX's persistent compilation cache (kept in $SVDGRAD_CACHE_DIR, "
            "else $XDG_CACHE_HOME/svdgrad/jax).",
        ),
    ] = False,
) -> None:
    """Derivatives of the singular value decomposition A = U diag(S) Vh."""
    c.USE_CACHE = not no_cache


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app, never show a traceback.

    When standard output's reader goes away (``svdgrad check ... | head -1``), the command ends
    quietly with status 141 (128 + SIGPIPE): no message, and standard output is pointed at the
    null device so that Python does not report a BrokenPipeError when it exits. rich's consoles
    (the help pages' too) would exit with status 1 there; in this process they raise
    BrokenPipeError instead, and where typer itself ends on it (with status 1, after wrapping
    the standard streams), the status is 141 too.
    """
    import errno
    import os

    from rich.console import Console

    def on_broken_pipe(console: Console) -> None:
        console.quiet = True
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))

    Console.on_broken_pipe = on_broken_pipe  # type: ignore[method-assign]
    try:
        from typer._click.exceptions import ClickException, NoArgsIsHelpError
    except ImportError:  # pragma: no cover - another typer layout
        ClickException = NoArgsIsHelpError = ()  # type: ignore[assignment,misc]
    try:
        code = app(args=argv, prog_name="svdgrad", standalone_mode=False)
    except NoArgsIsHelpError as exc:  # type: ignore[misc]
        exc.show()
        code = c.EXIT_USAGE
    except ClickException as exc:  # type: ignore[misc]
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        message = " ".join(exc.format_message().split())
        c.err_console.print(f"error: {message}{hint}", markup=False)
        code = getattr(exc, "exit_code", c.EXIT_USAGE)
    except SystemExit as exc:
        code = exc.code
        if type(sys.stdout).__name__ == "PacifyFlushWrapper":  # typer's end on EPIPE
            code = c.EXIT_PIPE
    except BaseException as exc:  # KeyboardInterrupt included
        code = c.report_error(exc)
    code = code if isinstance(code, int) else 0
    try:
        sys.stdout.flush()  # what is still buffered, while a closed pipe can be told apart
    except BrokenPipeError:
        code = c.EXIT_PIPE
    except (OSError, ValueError, AttributeError):
        pass
    if code == c.EXIT_PIPE:
        from ..io import silence_stdout

        silence_stdout()
    sys.exit(code)
