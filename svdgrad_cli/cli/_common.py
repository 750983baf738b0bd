"""What the commands share: options, reading inputs, writing results, warnings, errors.

Everything that maps an exception to an exit status lives in :func:`exit_status`, used by the
:func:`guarded` decorator around each command and by ``main()``. Every file access goes through
:mod:`svdgrad_cli.io`. Nothing here imports JAX at module level: ``svdgrad --help`` must stay fast.
"""

from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer

if TYPE_CHECKING:  # rich is imported when a console is first needed
    from rich.console import Console
    from rich.table import Table

from ..errors import ArgumentError
from ..io import (  # check_single_stdin, read_source, source_paths: for the commands
    InputError,
    check_single_stdin,  # noqa: F401
    describe,
    named_sources,
    read_source,  # noqa: F401
    read_sources,
    source_paths,  # noqa: F401
    write_results,
)

# exit statuses
EXIT_OK = 0
EXIT_FAILED = 1  # a check failed, or the computation itself failed
EXIT_USAGE = 2  # a bad call or a bad input
EXIT_INTERRUPTED = 130
EXIT_PIPE = 128 + 13  # standard output's reader went away (the SIGPIPE convention); no message


@functools.lru_cache(maxsize=1)
def _console_classes() -> tuple[type, type]:
    """rich's Console for standard error and for standard output (rich imported here: a run
    that prints nothing through rich never imports it)."""
    from rich.console import Console

    class _ErrConsole(Console):
        """Standard error: once its reader is gone, the messages are dropped (rich would exit
        1)."""

        def on_broken_pipe(self) -> None:
            self.quiet = True

    class _OutConsole(Console):
        """Standard output: a closed pipe is a BrokenPipeError, which ends the command quietly
        (rich itself would exit with status 1)."""

        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))

    return _ErrConsole, _OutConsole


def stderr_console() -> Console:
    """``err_console``, made on first use."""
    console = globals().get("err_console")
    return console if console is not None else __getattr__("err_console")


def __getattr__(name: str) -> Any:
    if name == "err_console":  # the console on standard error, made on first use
        console = _console_classes()[0](stderr=True, highlight=False, soft_wrap=True)
        globals()["err_console"] = console
        return console
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def out_console() -> Console:
    """A console on the current standard output (looked up at call time).

    Wide when the output is a file or a pipe, so that tables are not cut.
    """
    return _console_classes()[1](highlight=False, width=None if stdout_is_terminal() else 160)


def stdout_is_terminal() -> bool:
    """Whether standard output is a terminal (tests replace this)."""
    try:
        return bool(sys.stdout.isatty())
    except (AttributeError, ValueError):
        return False


# --------------------------------------------------------------------------- errors


class UsageProblem(Exception):
    """A bad call found by the CLI itself (exit status 2). One line, naming the argument."""


class ComputeProblem(Exception):
    """The computation ran but its result cannot be trusted or used (exit status 1)."""


def _one_line(text: object, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


#: the project's own errors for a bad call or a bad input: exit status 2
USAGE_ERRORS: tuple[type[BaseException], ...] = (InputError, UsageProblem, ArgumentError)

_OUT_OF_MEMORY = "error: out of memory while computing; use smaller inputs"


def _computation_failed(exc: BaseException) -> bool:
    """A failure of the numerics rather than of svdgrad's code: floating-point errors, LAPACK's
    LinAlgError, and the runtime errors of XLA (recognised by name: JAX is not imported here)."""
    if isinstance(exc, (ArithmeticError, np.linalg.LinAlgError)):
        return True
    return any(t.__name__ in ("XlaRuntimeError", "JaxRuntimeError") for t in type(exc).__mro__)


def _cluster_status(exc: BaseException) -> tuple[int, str] | None:
    """The dask engine's errors (svdgrad_cli.distributed, looked up only when it was imported):
    a missing extra or an unreachable scheduler is a bad call (2); a cluster that failed during
    the run (every worker gone, the scheduler lost) is a failed computation (1)."""
    dist = sys.modules.get("svdgrad_cli.distributed")
    if dist is None:
        return None
    if isinstance(exc, (dist.MissingExtra, dist.SchedulerUnreachable)):
        return EXIT_USAGE, f"error: {_one_line(exc)}"
    if isinstance(exc, dist.ClusterError):
        return EXIT_FAILED, f"error: {_one_line(exc, 1000)}"
    return None


def exit_status(exc: BaseException) -> tuple[int, str]:
    """The exit status and the one-line message for an exception: the only such mapping.

    2 for the project's own errors (a bad call or input: InputError and OutputError,
    UsageProblem, the library's ArgumentError); 1 for a result that cannot be used
    (ComputeProblem), a failed computation, or an internal error (any other exception is a
    bug, and the message asks for a report); 130 for an interrupt; EXIT_PIPE and no message when
    standard output was closed by its reader.
    """
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted; no output was written"
    if isinstance(exc, BrokenPipeError):
        return EXIT_PIPE, ""
    if isinstance(exc, USAGE_ERRORS):  # OutputError is an InputError
        return EXIT_USAGE, f"error: {_one_line(exc)}"
    cluster = _cluster_status(exc)
    if cluster is not None:
        return cluster
    if isinstance(exc, ComputeProblem):
        return EXIT_FAILED, f"error: {_one_line(exc, 1000)}"
    if isinstance(exc, MemoryError):
        return EXIT_FAILED, _OUT_OF_MEMORY
    detail = f"{type(exc).__name__}: {_one_line(exc) or 'no details'}"
    if _computation_failed(exc):
        if "RESOURCE_EXHAUSTED" in str(exc):
            return EXIT_FAILED, _OUT_OF_MEMORY
        return EXIT_FAILED, f"error: the computation failed ({detail})"
    if isinstance(exc, OSError):  # the system refused (a full disk, an I/O error), not a bug
        return EXIT_FAILED, f"error: the system refused an operation ({detail})"
    return (
        EXIT_FAILED,
        f"error: internal error ({detail}); please report it with the command you ran",
    )


def report_error(exc: BaseException) -> int:
    """Print the one-line message for ``exc`` on standard error (none for a closed pipe);
    return its exit status."""
    code, message = exit_status(exc)
    if message:
        try:
            stderr_console().print(message, markup=False)
        except Exception:  # stderr itself is gone; the status still tells
            pass
    return code


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a command body; turn every exception into one stderr line and an exit status."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, SystemExit):
            raise
        except BaseException as exc:
            if type(exc).__module__.startswith("typer"):  # click/typer usage errors
                raise
            raise typer.Exit(report_error(exc)) from None

    return wrapper


# --------------------------------------------------------------------------- shared options


class Device(str, Enum):
    cpu = "cpu"
    gpu = "gpu"
    auto = "auto"


class Convention(str, Enum):
    jax = "jax"
    torch = "torch"


_NUM = "Numerics"
_OUT = "Output"

FullOpt = Annotated[
    bool,
    typer.Option(
        "--full/--thin",
        help="Full SVD (U is m x m, Vh is n x n) or thin SVD (k = min(m, n) columns).",
    ),
]
ValuesOnlyOpt = Annotated[
    bool, typer.Option("--values-only", help="Singular values only: S and its derivative.")
]
ComplexOpt = Annotated[
    bool,
    typer.Option("--complex", help="Compute in complex arithmetic even for a real input."),
]
DeviceOpt = Annotated[
    Device,
    typer.Option("--device", case_sensitive=False, help="Where JAX computes."),
]
ConventionOpt = Annotated[
    Convention,
    typer.Option(
        "--convention",
        case_sensitive=False,
        help="Cotangent pairing for complex inputs: jax (no conjugation, as jax.vjp) or torch "
        "(conjugating, as PyTorch autograd).",
    ),
]
OutputOpt = Annotated[
    str | None,
    typer.Option(
        "-o",
        "--output",
        metavar="DEST",
        rich_help_panel=_OUT,
        help="PATH.npz, PATH.h5[:/GROUP], PATH.npy (with --only) or - (standard output). "
        "Default: a summary on a terminal, a .npz stream when standard output is a pipe.",
    ),
]
OnlyOpt = Annotated[
    str | None,
    typer.Option("--only", metavar="NAME", rich_help_panel=_OUT, help="Write only this output."),
]
EpsOpt = Annotated[
    float,
    typer.Option(
        "--eps",
        min=0.0,
        metavar="E",
        rich_help_panel=_NUM,
        help="Lorentzian broadening of 1/(s_j^2 - s_i^2); E >= 0, 0 is exact.",
    ),
]
DegTolOpt = Annotated[
    float | None,
    typer.Option(
        "--degeneracy-tol",
        min=0.0,
        metavar="T",
        rich_help_panel=_NUM,
        help="Pairs with |s_i - s_j| <= T (T >= 0) drop their 1/(s_j - s_i) term. "
        "Default: 64 x machine eps x max(S).",
    ),
]
RankTolOpt = Annotated[
    float | None,
    typer.Option(
        "--rank-tol",
        min=0.0,
        metavar="R",
        rich_help_panel=_NUM,
        help="Singular values <= R (R >= 0) are left out of the 1/s terms. "
        "Default: max(S) x max(m, n) x machine eps.",
    ),
]
AllowGaugeOpt = Annotated[
    bool,
    typer.Option(
        "--allow-gauge-dependence",
        rich_help_panel=_NUM,
        help="Accept cotangents whose result depends on the arbitrary gauge of the singular "
        "vectors (you get the transpose of the JVP's gauge choice).",
    ),
]


ChunkOpt = Annotated[
    int | None,
    typer.Option(
        "--chunk",
        min=1,
        metavar="N",
        rich_help_panel=_OUT,
        help="Stream a stack (..., m, n) into an .h5 output N >= 1 matrices at a time, reading .h5 "
        "and .npy inputs piecewise; memory stays bounded by N. Default with an .h5 output: as "
        "many as fit in a quarter of the available memory.",
    ),
]


class Solver(str, Enum):
    auto = "auto"
    dense = "dense"
    iterative = "iterative"


_TRUNC = "Truncated SVD"

RankOpt = Annotated[
    int | None,
    typer.Option(
        "--rank",
        metavar="R",
        show_default=False,
        rich_help_panel=_TRUNC,
        help="Keep the top R singular triplets (U m x R, S R, Vh R x n) and the truncation "
        "error err = ||A - U S Vh||_F; their derivatives include the coupling to the discarded "
        "spectrum. 1 <= R <= min(m, n); not with --full.",
    ),
]
SolverOpt = Annotated[
    Solver | None,
    typer.Option(
        "--solver",
        case_sensitive=False,
        show_default=False,
        rich_help_panel=_TRUNC,
        help="With --rank: dense (full thin SVD, closed form), iterative (subspace iteration "
        "and conjugate gradients, products by A only) or auto (the default: iterative when "
        "min(m, n) >= 400 and R <= min(m, n) / 8).",
    ),
]


_CLUSTER = "Cluster (pip install 'svdgrad\\[dask]')"

WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=1,
        metavar="N",
        show_default=False,
        rich_help_panel=_CLUSTER,
        help="Compute the stack on a dask LocalCluster of N >= 1 worker processes on this machine "
        "(loopback only), one task per --chunk; the output is PATH.h5[:/GROUP] or "
        "PATH.zarr[:/GROUP].",
    ),
]
SchedulerOpt = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        metavar="ADDRESS",
        show_default=False,
        rich_help_panel=_CLUSTER,
        help="Compute the stack on the running dask scheduler at ADDRESS (tcp://host:port); "
        "the input files must be at the same paths on its workers.",
    ),
]


def truncation_args(rank: int | None, solver: Solver | None, full: bool | None) -> str | None:
    """The solver name for --rank (None without --rank); UsageProblem for what is seen before
    reading anything: --solver without --rank, R < 1, --rank with --full."""
    if rank is None:
        if solver is not None:
            raise UsageProblem(
                f"--solver {solver.value}: chooses the solver of the truncated SVD; add --rank R "
                "or drop --solver"
            )
        return None
    if rank < 1:
        raise UsageProblem(
            f"--rank {rank}: must be at least 1 (the number of singular triplets kept)"
        )
    if full:
        raise UsageProblem(
            f"--rank {rank} with --full: the top R triplets are a thin result (U is m x R, Vh is "
            "R x n); drop --full"
        )
    return (solver or Solver.auto).value


def check_rank(rank: int, shape: tuple) -> None:
    """UsageProblem unless 1 <= rank <= min(m, n) for A of this shape."""
    m, n = shape[-2:]
    k = min(m, n)
    if rank > k:
        raise UsageProblem(
            f"--rank {rank}: A of shape {tuple(shape)} has min(m, n) = {k} singular values; "
            f"choose R between 1 and {k}"
        )


def cut_text(info: Mapping[str, Any], rank: int) -> str | None:
    """What to say when the cut at ``rank`` lies inside a degenerate pair (else None)."""
    if not bool(np.any(np.asarray(info.get("cut_degenerate", False)))):
        return None
    gap = float(np.min(np.asarray(info.get("cut_gap", 0.0)), initial=np.inf))
    return (
        f"--rank {rank}: the cut lies inside a degenerate pair, s_{rank} = s_{rank + 1} (gap "
        f"(s_R - s_{{R+1}}) / s_R = {gap:.1e}), so the top {rank} triplets are one choice among "
        "many and have no derivative"
    )


def cut_check(info: Mapping[str, Any], rank: int) -> None:
    """ComputeProblem (exit 1) when the cut lies inside a degenerate pair."""
    text = cut_text(info, rank)
    if text is not None:
        raise ComputeProblem(
            f"{text}; choose another --rank, one that keeps or drops the whole block of equal "
            "singular values (s_R > s_{R+1})"
        )


def solver_warnings(info: Mapping[str, Any], dtype: Any) -> None:
    """Warn when the iterative solver stopped short of its target (a small gap at the cut)."""
    limit = 1e4 * float(np.finfo(np.dtype(dtype)).eps)
    parts = [
        f"{what} {max_of(info, key):.1e}"
        for key, what in (
            ("range_residual", "top-triplet residual"),
            ("solver_residual", "conjugate-gradient residual"),
        )
        if max_of(info, key) > limit
    ]
    if parts:
        warn(
            f"the iterative solver stopped short of full precision ({', '.join(parts)}, relative; "
            f"gap at the cut {float(np.min(np.asarray(info.get('cut_gap', 0.0)))):.1e}): the "
            "results are about that accurate; --solver dense is exact"
        )


def merge_truncation(infos: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The truncation fields of the Diagnostics of several chunks: the worst of each."""
    infos = list(infos)
    out: dict[str, Any] = {
        "cut_degenerate": any(bool(np.any(i.get("cut_degenerate", False))) for i in infos),
        "cut_gap": min(
            (float(np.min(np.asarray(i.get("cut_gap", np.inf)))) for i in infos),
            default=0.0,
        ),
    }
    for key in ("range_residual", "solver_residual"):
        out[key] = max((max_of(i, key) for i in infos), default=0.0)
    return out


@dataclass(frozen=True)
class Numerics:
    eps: float = 0.0
    degeneracy_tol: float | None = None
    rank_tol: float | None = None

    def kwargs(self) -> dict[str, Any]:
        return {"eps": self.eps, "degeneracy_tol": self.degeneracy_tol, "rank_tol": self.rank_tol}


# --------------------------------------------------------------------------- inputs


def read_inputs(sources: Iterable[tuple[str, str | None, bool]]) -> dict[str, np.ndarray]:
    """Read (argument name, SOURCE or None, is-a-vector) triples; None sources are skipped."""
    return read_sources(sources)


def as_complex(arr: np.ndarray) -> np.ndarray:
    if np.iscomplexobj(arr):
        return arr
    return arr.astype(np.complex64 if arr.dtype == np.float32 else np.complex128)


def check_trailing_shape(A: np.ndarray, X: np.ndarray, arg: str, expected: tuple, what: str):
    """UsageProblem unless X ends in ``expected`` and its batch broadcasts with A's."""
    nd = len(expected)
    if X.ndim < nd or tuple(X.shape[X.ndim - nd :]) != tuple(expected):
        raise UsageProblem(
            f"{arg}: has shape {X.shape}, but {what} of A with shape {A.shape} must end in "
            f"{tuple(expected)}; pass an array of that shape"
        )
    try:
        np.broadcast_shapes(A.shape[:-2], X.shape[: X.ndim - nd])
    except ValueError:
        raise UsageProblem(
            f"{arg}: batch dimensions {X.shape[: X.ndim - nd]} do not broadcast with A's "
            f"{A.shape[:-2]}; make the leading dimensions equal or 1"
        ) from None


FACTOR_NAMES = ("U", "S", "Vh")


def factor_sources(spec: str, option: str = "--factors") -> dict[str, str]:
    """The sources of U, S and Vh inside ``spec``: a .npz file, or an .h5 file or group.

    ``f.npz`` gives ``f.npz:U`` ...; ``out.h5:/jvp`` gives ``out.h5:/jvp/U`` ... (the root group
    when no group is named). InputError or UsageProblem (exit 2) when the form is wrong, the
    file or group does not exist, or one of the three is missing. Nothing is read yet.
    """
    wanted = ", ".join(FACTOR_NAMES)
    found = named_sources(
        spec, option, FACTOR_NAMES, f"{wanted} (as 'svdgrad svd -o f.npz' writes them)"
    )
    missing = [n for n in FACTOR_NAMES if n not in found]
    if missing:
        raise UsageProblem(
            f"{option} '{spec}': holds no {' or '.join(missing)}; it must hold {wanted} "
            "(as 'svdgrad svd' and 'svdgrad jvp' write them)"
        )
    return found


# --------------------------------------------------------------------------- JAX set-up

#: Set by ``svdgrad --no-cache``; the environment variable SVDGRAD_NO_CACHE=1 does the same.
USE_CACHE = True


def cache_dir() -> Path:
    """Where JAX's persistent compilation cache lives: SVDGRAD_CACHE_DIR, else
    $XDG_CACHE_HOME/svdgrad/jax, else ~/.cache/svdgrad/jax (computed in _helpcache, which
    the help pages' cache uses before anything else is imported)."""
    from ._helpcache import cache_dir as path

    return Path(path())


def _fast_lapack_init() -> None:
    """Register JAX's CPU LAPACK kernels without importing all of scipy.linalg.

    jaxlib takes the LAPACK function pointers from scipy.linalg.cython_lapack; importing that
    module the ordinary way first runs scipy/linalg/__init__.py, which costs about a third of a
    second at every start. A placeholder parent package lets the compiled module load alone;
    the placeholder is removed at once, so a later ``import scipy.linalg`` is the real one. Any
    surprise falls back to jaxlib's own (slower) initialisation.
    """
    if "scipy.linalg" in sys.modules:
        return
    import importlib
    import importlib.util
    import types

    try:
        spec = importlib.util.find_spec("scipy.linalg")
        from jaxlib.cpu import _lapack
    except Exception:
        return
    if spec is None or not spec.submodule_search_locations:
        return
    placeholder = types.ModuleType("scipy.linalg")
    placeholder.__path__ = list(spec.submodule_search_locations)
    sys.modules["scipy.linalg"] = placeholder
    try:
        importlib.import_module("scipy.linalg.cython_lapack")
        _lapack.initialize()
    except Exception:
        pass
    finally:
        sys.modules.pop("scipy.linalg.cython_lapack", None)
        if sys.modules.get("scipy.linalg") is placeholder:
            del sys.modules["scipy.linalg"]


def configure_jax() -> None:
    """Import JAX in 64-bit mode (the command line keeps float64 and complex128 inputs; the
    library leaves this setting to its caller) and point its persistent compilation cache at
    cache_dir(), so that a second run of the same command skips compilation. A cache that cannot
    be created is skipped."""
    import jax

    jax.config.update("jax_enable_x64", True)
    _fast_lapack_init()

    if not caching():
        return
    if jax.config.jax_compilation_cache_dir:  # the caller chose one already
        return
    path = cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return
    if not os.access(path, os.W_OK):
        return
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def caching() -> bool:
    """Whether svdgrad's caches are on (not --no-cache, not SVDGRAD_NO_CACHE=1)."""
    return USE_CACHE and os.environ.get("SVDGRAD_NO_CACHE", "") in ("", "0")


def resolve_device(device: Device | str) -> Any:
    configure_jax()
    from ..api import resolve_device as _resolve

    name = device.value if isinstance(device, Device) else str(device)
    try:
        return _resolve(name)
    except RuntimeError as exc:
        raise UsageProblem(f"--device {name}: {_one_line(exc)}") from None


def check_output_args(output: str | None, only: str | None, names: Iterable[str]) -> None:
    """Problems with -o/--only that can be seen before computing anything."""
    names = list(names)
    if only is not None and only not in names:
        raise UsageProblem(f"--only: unknown output '{only}'; choose one of: {', '.join(names)}")
    if output is not None and output.lower().endswith(".npy") and only is None:
        raise UsageProblem(
            f"-o/--output '{output}': a .npy file holds one array; add --only NAME "
            f"(one of: {', '.join(names)}) or write a .npz/.h5 file"
        )


# --------------------------------------------------------------------------- outputs


def warn(message: str) -> None:
    stderr_console().print(f"warning: {message}", markup=False)


def tolerance_warnings(info: Mapping[str, Any], numerics: Numerics) -> None:
    """Warnings for every way a tolerance, broadening or rank cut affected the result."""
    degenerate = int(np.asarray(info.get("degenerate_pairs", 0)))
    rank_cut = int(np.asarray(info.get("rank_cut", 0)))
    if degenerate > 0 and numerics.eps == 0:
        tol = (
            f"{numerics.degeneracy_tol:g}"
            if numerics.degeneracy_tol is not None
            else "default 64 x eps x max(S)"
        )
        warn(
            f"{degenerate} near-degenerate singular value pair(s): their 1/(s_j - s_i) term was "
            f"cut (--degeneracy-tol {tol})"
        )
    if rank_cut > 0:
        warn(
            f"{rank_cut} singular value(s) at or below the rank tolerance were left out of the "
            "1/s terms (--rank-tol)"
        )
    if numerics.eps > 0:
        warn(f"Lorentzian broadening --eps {numerics.eps:g} changes the result")


def to_numpy(results: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {name: np.asarray(value) for name, value in results.items()}


def summary_table(results: Mapping[str, np.ndarray]) -> Table:
    from rich.table import Table

    table = Table(title="results (not saved: pass -o DEST or pipe standard output)")
    for col in ("name", "shape", "dtype", "norm"):
        table.add_column(col, justify="right" if col == "norm" else "left")
    for name, shape, dtype, norm in describe(results):
        table.add_row(name, "x".join(map(str, shape)) or "()", str(dtype), f"{norm:.6g}")
    return table


def deliver(
    results: Mapping[str, Any],
    output: str | None,
    only: str | None,
    inputs: Iterable[str | None],
) -> None:
    """Write finished results: to DEST, to a piped stdout, or as a summary on a terminal."""
    arrays = to_numpy(results)
    if output is None:
        if stdout_is_terminal():
            shown = {only: arrays[only]} if only is not None else arrays
            out_console().print(summary_table(shown))
            return
        output = "-"
    write_results(output, arrays, only=only, inputs=list(inputs))


def gauge_tolerance(dtype: Any) -> float:
    """sqrt(machine eps) of the real type of ``dtype``."""
    return float(np.sqrt(np.finfo(np.dtype(dtype)).eps))


def max_of(info: Mapping[str, Any], key: str) -> float:
    """The largest entry of an info field (0 when absent)."""
    return float(np.max(np.asarray(info.get(key, 0.0)), initial=0.0))


def gauge_reasons(
    info: Mapping[str, Any], limit: float, complex_: bool, full: bool = False
) -> list[str]:
    """What the cotangents leave undetermined, one phrase per kind above ``limit``, largest
    first, each with its relative size (from rotation_relative, spectrum_relative and
    null_space_relative of the Diagnostics)."""
    degenerate = int(np.asarray(info.get("degenerate_pairs", 0))) > 0
    if complex_ and not degenerate:
        rotation = (
            "the result depends on the arbitrary phase of complex singular pairs",
            "u_i and v_i times the same phase are an SVD too",
        )
    else:
        rotation = (
            "the result depends on the basis chosen inside a block of equal singular values"
            + (" (or on the phase of complex singular pairs)" if complex_ else ""),
            "any rotation of that basis is an SVD too",
        )
    null = int(np.asarray(info.get("rank_cut", 0))) > 0 or not full
    parts = (
        ["on singular vectors of the null space (values at or below --rank-tol)"] if null else []
    )
    parts += ["on the extra columns of a full SVD"] if full else []
    null_space = [
        "the result depends " + " or ".join(parts),
        "any orthonormal basis of it is an SVD too",
    ]
    if null:
        null_space[0] += ", or gS is nonzero on a zero singular value"
        null_space[1] += ", and a zero singular value has no derivative"
    kinds = {
        "rotation_relative": rotation,
        "spectrum_relative": (
            "gS differs inside a block of equal singular values",
            "the cotangents do not say how the equal values split",
        ),
        "null_space_relative": tuple(null_space),
    }
    found = sorted(((max_of(info, key), *text) for key, text in kinds.items()), reverse=True)
    return [f"{head} (relative {size:.1e}): {tail}" for size, head, tail in found if size > limit]
