"""The ``svdgrad`` Typer application and its console entry point ``main()``.

The application is built on first use (``from svdgrad_cli.cli.app import app`` builds it):
``main()`` first asks :mod:`._helpcache` whether the request is a help page rendered before, and
then nothing else is imported.
"""

import sys

from . import _helpcache

_HELP = (
    "Derivatives of the singular value decomposition A = U diag(S) Vh, forward (jvp) and "
    "reverse (vjp) mode, the factorisation itself (svd), and checks of them (check).\n\n"
    "Arrays are read from PATH.npy, PATH.npz:NAME, PATH.h5:/DATASET or - (a .npy stream on "
    "standard input); leading dimensions are a batch."
)
_EPILOG = "[bold]Example[/bold]\n\n  $ svdgrad jvp A.npy dA.npy -o out.npz"


def _reflow(text: str | None) -> str | None:
    """Help text with the line breaks inside a paragraph taken out, so that rich wraps it to
    the terminal (typer's rich mode keeps them). Paragraphs with indented lines (examples) or
    bullets keep theirs."""
    if not text:
        return text
    import inspect

    paragraphs = []
    for paragraph in inspect.cleandoc(text).split("\n\n"):
        lines = paragraph.split("\n")
        if len(lines) > 1 and not any(
            line[:1].isspace() or line.startswith(("- ", "* ", "\b")) for line in lines
        ):
            paragraph = " ".join(line.strip() for line in lines)
        paragraphs.append(paragraph)
    return "\n\n".join(paragraphs)


def _help_classes() -> tuple[type | None, type | None]:
    """The group and command classes that give the help pages their form: flags without a
    placeholder, options with their metavar (a choice as cpu|gpu|auto), arguments by their name
    (A, not {A} <str>), and no [x>=1] range notes (the help texts state the ranges).

    (None, None) with a typer that lacks the hooks overridden here: its own help format then.
    """
    try:
        from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption
    except ImportError:  # pragma: no cover - another typer layout
        return None, None
    hooks = (
        (TyperOption, "display_type_rich"),
        (TyperOption, "_get_number_range_help_str"),
        (TyperArgument, "display_type_rich"),
        (TyperArgument, "_usage_display_name"),
        (TyperArgument, "_get_number_range_help_str"),
        (TyperArgument, "display_name_raw"),
        (TyperCommand, "get_params"),
        (TyperGroup, "get_params"),
    )
    if not all(hasattr(cls, name) for cls, name in hooks):  # pragma: no cover
        return None, None

    class Option(TyperOption):
        def display_type_rich(self, ctx):  # type: ignore[override]
            if self.is_flag or getattr(self, "count", False):
                return None
            if self.metavar is not None:
                return self.metavar
            shown = super().display_type_rich(ctx)
            descriptor = getattr(self, "type_descriptor", None)
            if getattr(descriptor, "is_choice", False) and isinstance(shown, str):
                return shown.replace("<", "").replace(">", "")  # cpu|gpu|auto
            return (self.name or "value").upper()

        def _get_number_range_help_str(self):  # type: ignore[override]
            return None

    class Argument(TyperArgument):
        def display_type_rich(self, ctx):  # type: ignore[override]
            return None  # the name column shows the argument

        def _usage_display_name(self) -> str:
            name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
            return name if self.nargs == 1 else f"{name}..."

        def _get_number_range_help_str(self):  # type: ignore[override]
            return None

    def plain(params):
        for param in params:
            if type(param) is TyperOption:
                param.__class__ = Option
            elif type(param) is TyperArgument:
                param.__class__ = Argument
        return params

    class Command(TyperCommand):
        def get_params(self, ctx):
            return plain(super().get_params(ctx))

    class Group(TyperGroup):
        def get_params(self, ctx):
            return plain(super().get_params(ctx))

    return Group, Command


COMMANDS = ("svd", "jvp", "vjp", "check", "bench")


def _build(only: str | None = None):
    """The Typer application; with ``only``, that command alone (a run of one command need not
    import the others' modules)."""
    import importlib
    from typing import Annotated

    import typer

    from .. import __version__
    from . import _common as c

    group_cls, command_cls = _help_classes()
    extra = {"cls": group_cls} if group_cls is not None else {}
    app = typer.Typer(
        name="svdgrad",
        help=_HELP,
        epilog=_EPILOG,
        pretty_exceptions_enable=False,
        no_args_is_help=True,
        add_completion=False,
        rich_markup_mode="rich",
        context_settings={"help_option_names": ["-h", "--help"]},
        **extra,
    )

    def add(name, fn, epilog=None):
        import inspect

        kw = {"cls": command_cls} if command_cls is not None else {}
        app.command(name, help=_reflow(inspect.getdoc(fn)), epilog=_reflow(epilog), **kw)(fn)

    for name in COMMANDS:
        if only is not None and name != only:
            continue
        try:
            module = importlib.import_module(f".{name}", __package__)
        except ImportError:
            if name == "bench":  # the bench command is optional
                continue
            raise
        add(name, getattr(module, name), getattr(module, "EPILOG", None))

    def version_callback(value: bool) -> None:
        if value:
            typer.echo(f"svdgrad {__version__}")
            raise typer.Exit(0)

    @app.callback()
    def root(
        version: Annotated[
            bool,
            typer.Option(
                "--version",
                callback=version_callback,
                is_eager=True,
                help="Show the version and exit.",
            ),
        ] = False,
        no_cache: Annotated[
            bool,
            typer.Option(
                "--no-cache",
                help="Do not use svdgrad's caches: JAX's persistent compilation cache and the "
                "rendered help pages (kept in $SVDGRAD_CACHE_DIR, else "
                "$XDG_CACHE_HOME/svdgrad/jax).",
            ),
        ] = False,
    ) -> None:
        """Derivatives of the singular value decomposition A = U diag(S) Vh."""
        c.USE_CACHE = not no_cache

    return app


def __getattr__(name: str):
    if name == "app":
        app = _build()
        globals()["app"] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app, never show a traceback.

    A help page rendered before under the same conditions comes from the help cache
    (:mod:`._helpcache`), without importing typer; any other request, and a help page seen for
    the first time (which is then stored), runs the application.
    """
    words = sys.argv[1:] if argv is None else list(argv)
    page = _helpcache.lookup(words)
    if page is not None and page.chunks is not None:
        sys.exit(page.replay())
    if page is None:
        sys.exit(_run(argv))
    with page.recording():
        code = _run(argv)
    page.store(code)
    sys.exit(code)


def _quiet_broken_pipes() -> None:
    """Every rich console raises BrokenPipeError when its reader goes away (rich would print a
    message and exit with status 1); main() turns it into the quiet status 141."""
    import errno
    import os

    from rich.console import Console

    def on_broken_pipe(console: Console) -> None:
        console.quiet = True
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))

    Console.on_broken_pipe = on_broken_pipe  # type: ignore[method-assign]


def _run(argv: list[str] | None) -> int:
    """Run the app; the exit status.

    When standard output's reader goes away (``svdgrad check ... | head -1``), the command ends
    quietly with status 141 (128 + SIGPIPE): no message, and standard output is pointed at the
    null device so that Python does not report a BrokenPipeError when it exits. rich's consoles
    (the help pages' too) would exit with status 1 there; in this process they raise
    BrokenPipeError instead, and where typer itself ends on it (with status 1, after wrapping
    the standard streams), the status is 141 too.
    """
    from . import _common as c

    words = sys.argv[1:] if argv is None else list(argv)
    one_command = bool(words) and words[0] in COMMANDS and not {"-h", "--help"} & set(words)
    if not one_command:  # typer's own rich consoles (help pages) may print
        _quiet_broken_pipes()
    try:
        from typer._click.exceptions import ClickException, NoArgsIsHelpError
    except ImportError:  # pragma: no cover - another typer layout
        ClickException = NoArgsIsHelpError = ()  # type: ignore[assignment,misc]
    if "app" in globals():
        app = globals()["app"]
    elif one_command:  # its own module only; it prints through svdgrad's consoles
        app = _build(only=words[0])
    else:
        app = __getattr__("app")
    try:
        code = app(args=argv, prog_name="svdgrad", standalone_mode=False)
    except NoArgsIsHelpError as exc:  # type: ignore[misc]
        _quiet_broken_pipes()
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
    return code
