"""`svdgrad bench`: time svdgrad's JVP and VJP against the SVD alone and against autodiff
(--suite derivatives), svdgrad's svd under jit(grad) and the per-call overhead of svd_jvp
and svd_vjp against JAX's own (--suite transforms), and the command line's processes against
Python importing what they need and against a plain JAX script (--suite startup)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from enum import Enum
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

_DEFAULT_SHAPES = "256x256,1024x1024,20000x64"
_DEFAULT_GRAD_SHAPES = "256x32x32,384x384"
_DEFAULT_OVERHEAD_SHAPE = "32x32"


def _ms(x) -> str:
    return "-" if x is None else f"{x * 1e3:.3f}"


def _x(x) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.2f}x"


def _s(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def _us(x) -> str:
    return "-" if x is None else f"{x * 1e6:.1f}"


def _shape(s) -> str:
    return "x".join(str(d) for d in s)


def _against(r) -> str:
    """The ratio to JAX, green within the target and red beyond it."""
    text = _x(r["ratio_to_jax"])
    if r["within_target"] is None:
        return text
    return f"[green]{text}[/green]" if r["within_target"] else f"[red]{text}[/red]"


def render(result: dict, console: Console) -> None:
    """Print the tables of a run_benchmark result."""
    if result["results"]:
        _render_derivatives(result, console)
    if result.get("transforms"):
        _render_transforms(result["transforms"], console)
    if result.get("startup"):
        _render_startup(result["startup"], console)
    m = result["machine"]
    c = result["config"]
    torch = f"torch {m['torch_version']}" if c["torch"] else "torch: not used"
    runs = (
        f" | {c['dtype']}, median of {c['repeat']} interleaved runs"
        if result["results"] or result.get("transforms")
        else ""
    )
    load = m.get("load_average")
    load = f" | load average {' '.join(f'{x:.2f}' for x in load)}" if load else ""
    console.print(
        f"jax {m['jax_version']} | device {m['device']} ({m['device_kind']}) | "
        f"{m['cpu_count']} CPUs | {m['processor']} | python {m['python_version']} | {torch}"
        f"{runs}{load}",
        style="dim",
    )


#: How the startup table names each comparison and its baseline.
_STARTUP_LABELS = {
    "help": ("svdgrad --help", "import typer, rich"),
    "jvp-small": ("jvp {small}x{small}, cached", "import jax.numpy"),
    "jvp-large": ("jvp {n}x{n}", "plain JAX script"),
}


def _render_startup(st: dict, console: Console) -> None:
    """The startup suite: one row per comparison, in at most 80 columns."""
    cmds = st["commands"]
    table = Table(
        title=f"Startup: whole processes, median wall time (s) of {st['repeat']} rounds after "
        "a warm-up"
    )
    table.add_column("svdgrad", no_wrap=True)
    table.add_column("s", justify="right", no_wrap=True)
    table.add_column("against", no_wrap=True)
    table.add_column("s", justify="right", no_wrap=True)
    table.add_column("ratio", justify="right", no_wrap=True)
    table.add_column("goal", justify="right", no_wrap=True)
    for comp in st["comparisons"]:
        ours, theirs = _STARTUP_LABELS.get(comp["name"], (comp["command"], comp["baseline"]))
        ratio = _x(comp["ratio"])
        if comp["within_goal"] is not None:
            colour = "green" if comp["within_goal"] else "red"
            ratio = f"[{colour}]{ratio}[/{colour}]"
        table.add_row(
            ours.format(small=st["small_size"], n=st["size"]),
            f"{cmds[comp['command']]['median_s']:.3f}",
            theirs,
            f"{cmds[comp['baseline']]['median_s']:.3f}",
            ratio,
            f"<= {comp['goal']:.2f}x",
        )
    console.print(table)
    cache = (
        "a private one, filled by the warm-up round"
        if st["cache_dir"] is None
        else (st["cache_dir"])
    )
    before, after = st.get("load_average_before"), st.get("load_average_after")
    load = (
        f" Load average (1 min) {before[0]:.2f} before, {after[0]:.2f} after."
        if before and after
        else ""
    )
    console.print(
        "float64. jvp: svdgrad jvp A.npy dA.npy -o out.npz. The plain JAX script loads both "
        "files, compiles jit(jvp(svd)) at every run and saves the six arrays. svdgrad's cache "
        f"(SVDGRAD_CACHE_DIR): {cache}.{load} Command lines and all samples are in the JSON "
        "(--json).",
        style="dim",
    )


def _render_transforms(tr: dict, console: Console) -> None:
    rows = tr["rows"]
    targets = tr["targets"]
    for measure, title, unit in (
        (
            "grad",
            "jit(grad(loss)) through svdgrad's svd and through jnp.linalg.svd (ms per call; "
            f"target / jax <= {targets['grad']:.2f}x)",
            "ms",
        ),
        (
            "overhead",
            f"One call at {_shape(tr['overhead_shape'])}: svd_jvp and svd_vjp against a jitted "
            f"jax.jvp / jax.vjp of jnp.linalg.svd (us per call; target / jax <= "
            f"{targets['overhead']:.2f}x)",
            "us",
        ),
    ):
        group = [r for r in rows if r["measure"] == measure]
        if not group:
            continue
        fmt = _ms if unit == "ms" else _us
        table = Table(title=title)
        table.add_column("shape", no_wrap=True)
        table.add_column("loss" if measure == "grad" else "call", no_wrap=True)
        table.add_column("method", no_wrap=True)
        table.add_column(f"median {unit}", justify="right", no_wrap=True)
        table.add_column("/ SVD", justify="right", no_wrap=True)
        table.add_column("/ jax", justify="right", no_wrap=True)
        table.add_column("min / min", justify="right")
        table.add_column("compile s", justify="right")
        previous = None
        for r in group:
            shape = _shape(r["shape"])
            if previous is not None and shape != previous:
                table.add_section()
            first = shape != previous
            previous = shape
            if r["status"] == "ok":
                cells = (
                    fmt(r["median_s"]),
                    _x(r["ratio_to_svd"]),
                    _against(r),
                    _x(r["min_ratio_to_jax"]),
                    _s(r["compile_s"]),
                )
            else:
                cells = (f"[yellow]{r['status']}[/yellow]", "-", "-", "-", "-")
            table.add_row(
                shape if first else "",
                r["variant"] or "-",
                "svd alone" if r["method"] == "svd" else r["method"],
                *cells,
            )
        console.print(table)
    losses = "; ".join(f"{k}: {v}" for k, v in tr["losses"].items())
    console.print(
        f"losses: {losses}. / jax is the ratio of the medians, min / min that of the fastest "
        "samples (steadier on a busy machine).",
        style="dim",
    )


def _render_derivatives(result: dict, console: Console) -> None:
    rows = result["results"]
    table = Table(
        title="Time per call (ms) and ratio of the medians to the SVD alone (/ SVD) and, for "
        "svdgrad, to JAX's autodiff (/ jax)"
    )
    width = max([len(r["case"]) for r in rows] + [4])
    table.add_column("shape", no_wrap=True)
    table.add_column("case", no_wrap=True, min_width=width)
    table.add_column("method", no_wrap=True)
    table.add_column("median ms", justify="right")
    table.add_column("min ms", justify="right")
    table.add_column("/ SVD", justify="right")
    table.add_column("/ jax", justify="right")
    previous = None
    line = 0
    for r in rows:
        key = (tuple(r["shape"]), r["case"])
        if previous is not None and key != previous:
            table.add_section()
        line = 0 if key != previous else line + 1
        previous = key
        if r["status"] == "ok":
            cells = (
                _ms(r["median_s"]),
                _ms(r["min_s"]),
                _x(r["ratio_to_svd"]),
                _x(r["ratio_to_jax"]),
            )
        else:
            cells = (f"[yellow]{r['status']}[/yellow]", "-", "-", "-")
        table.add_row(
            _shape(r["shape"]) if line == 0 else "",
            r["case"] if line == 0 else f"[dim]{r['dtype']}[/dim]" if line == 1 else "",
            r["method"],
            *cells,
        )
    console.print(table)

    shapes = [_shape(s) for s in result["config"]["shapes"]]
    comp = Table(title="Compile time: the first call, compilation included (s)")
    comp.add_column("case")
    comp.add_column("method")
    for s in shapes:
        comp.add_column(s, justify="right")
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for r in rows:
        v = _s(r["compile_s"]) if r["status"] == "ok" else r["status"]
        cells.setdefault((r["case"], r["method"]), {})[_shape(r["shape"])] = v
    for (case, method), by_shape in cells.items():
        comp.add_row(case, method, *(by_shape.get(s, "-") for s in shapes))
    console.print(comp)

    many = result.get("many_tangents")
    if many:
        t = many["tangents"]
        mt = Table(title=f"Many tangents: svd_jvp with T={t} tangents at {_shape(many['shape'])}")
        mt.add_column("calls")
        mt.add_column("median ms", justify="right")
        mt.add_column("per tangent ms", justify="right")
        mt.add_column("ratio", justify="right")
        if many["status"] == "ok":
            mt.add_row(
                f"1 call, dA ({t}, m, n)",
                _ms(many["batched_median_s"]),
                _ms(many["batched_per_tangent_s"]),
                _x(many["ratio"]),
            )
            mt.add_row(
                f"{t} calls, dA (m, n)",
                _ms(many["separate_median_s"]),
                _ms(many["separate_per_tangent_s"]),
                "1.00x",
            )
        else:
            mt.add_row(many["status"], "-", "-", "-")
        console.print(mt)


class Device(str, Enum):
    """Where JAX computes: auto is the GPU when JAX has one, else the CPU."""

    cpu = "cpu"
    gpu = "gpu"
    auto = "auto"


def bench(
    shapes: Annotated[
        str,
        typer.Option("--shapes", metavar="SHAPES", help="Comma-separated MxN shapes."),
    ] = _DEFAULT_SHAPES,
    dtype: Annotated[
        str,
        typer.Option(
            "--dtype",
            metavar="DTYPE",
            help="float32, float64, complex64 or complex128: the precision (each case decides "
            "real or complex).",
        ),
    ] = "float64",
    device: Annotated[
        Device,
        typer.Option(
            "--device",
            case_sensitive=False,
            help="Where JAX computes; auto: the GPU when JAX has one, else the CPU.",
        ),
    ] = Device.cpu,
    repeat: Annotated[
        int | None,
        typer.Option(
            "--repeat",
            min=1,
            metavar="N",
            help="Timed runs per contender, N >= 1 (the median is reported). Default: 5; 7 "
            "rounds for --suite startup.",
            show_default=False,
        ),
    ] = None,
    cases: Annotated[
        str | None,
        typer.Option(
            "--cases",
            metavar="CASES",
            help="Comma-separated cases, each thin or full, real or complex, usv or s, joined "
            "by hyphens (thin-real-usv, full-complex-s), or 'all' (the eight). Default: "
            "thin-real-usv (thin-complex-usv for a complex --dtype).",
            show_default=False,
        ),
    ] = None,
    json_path: Annotated[
        str | None,
        typer.Option(
            "--json",
            metavar="FILE",
            help="Also write the results as JSON to FILE ('-': standard output).",
        ),
    ] = None,
    no_torch: Annotated[
        bool, typer.Option("--no-torch", help="Leave torch out even when it is installed.")
    ] = False,
    tangents: Annotated[
        int,
        typer.Option(
            "--tangents",
            min=0,
            metavar="T",
            help="T >= 0 tangents for the many-tangents measurement; 0 skips it.",
        ),
    ] = 32,
    tangents_shape: Annotated[
        str,
        typer.Option(
            "--tangents-shape",
            metavar="MxN",
            help="Shape of A for the many-tangents measurement.",
        ),
    ] = "256x256",
    suite: Annotated[
        str,
        typer.Option(
            "--suite",
            metavar="SUITE",
            help="derivatives: svdgrad's JVP and VJP at --shapes (--cases, --tangents). "
            "transforms: jit(grad) through svdgrad's svd against jnp.linalg.svd at "
            "--grad-shapes, and the per-call overhead of svd_jvp and svd_vjp at "
            "--overhead-shape. startup: svdgrad --help and svdgrad jvp as whole processes "
            "(--startup-size). all: the three.",
        ),
    ] = "derivatives",
    grad_shapes: Annotated[
        str,
        typer.Option(
            "--grad-shapes",
            metavar="SHAPES",
            help="Comma-separated MxN or BxMxN shapes (B a batch) for jit(grad) (transforms).",
        ),
    ] = _DEFAULT_GRAD_SHAPES,
    overhead_shape: Annotated[
        str,
        typer.Option(
            "--overhead-shape",
            metavar="MxN",
            help="Shape of A for the per-call overhead (transforms).",
        ),
    ] = _DEFAULT_OVERHEAD_SHAPE,
    startup_size: Annotated[
        int,
        typer.Option(
            "--startup-size",
            min=1,
            metavar="N",
            help="N >= 1: the end-to-end svdgrad jvp of the startup suite runs on an NxN "
            "float64 matrix.",
        ),
    ] = 1536,
    startup_cache_dir: Annotated[
        str | None,
        typer.Option(
            "--startup-cache-dir",
            metavar="DIR",
            help="SVDGRAD_CACHE_DIR for the startup suite's processes. Default: a private "
            "directory, new at each run and filled by its warm-up round, so that the results "
            "do not depend on your cache.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Time svdgrad's JVP and VJP against the SVD alone and against JAX (and torch) autodiff.

    The derivatives and transforms suites run in one process; every contender is compiled
    and warmed up first, then run round-robin.

    Reported: the median of --repeat runs, its ratio to the SVD alone and to jax.jvp/jax.vjp.

    Compile times (the first call) come separately; torch joins when it is installed.

    --suite transforms times jit(grad) of a loss through svdgrad's svd against jnp.linalg.svd,
    and one svd_jvp/svd_vjp call on a small matrix against a jitted jax.jvp/jax.vjp.

    They run in 64-bit mode, without the persistent compilation cache (compile times are real).

    --suite startup times whole processes (wall time, interleaved rounds, the first a warm-up):
    svdgrad --help against python -c "import typer, rich"; svdgrad jvp at 64x64, its cache
    warm, against python -c "import jax.numpy"; svdgrad jvp at --startup-size against a plain
    JAX script that compiles every time. Inputs, outputs and svdgrad's cache live in a
    temporary directory (--startup-cache-dir to name the cache).

    [bold]Examples[/bold]

      $ svdgrad bench --shapes 512x512 --repeat 3

      $ svdgrad bench --suite transforms --repeat 9

      $ svdgrad bench --suite startup --json startup.json

      $ svdgrad bench --device auto --json bench.json
    """
    import svdgrad_cli.bench as harness

    try:
        harness.check_suite(suite)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--suite'") from None
    try:
        shape_list = harness.parse_shapes(shapes)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--shapes'") from None
    try:
        many_shape = harness.parse_shape(tangents_shape)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--tangents-shape'") from None
    try:
        grad_list = harness.parse_batch_shapes(grad_shapes)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--grad-shapes'") from None
    try:
        overhead = harness.parse_shape(overhead_shape)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--overhead-shape'") from None
    try:
        harness.check_dtype(dtype)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--dtype'") from None
    try:
        case_list = harness.parse_cases(cases, dtype)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--cases'") from None

    from . import _common as c

    err = Console(stderr=True)
    device = Device(device).value
    if device == "auto":  # the GPU when JAX has one
        _configure_jax(c)
        from ..api import resolve_device

        device = "gpu" if resolve_device("auto").platform in ("gpu", "cuda", "rocm") else "cpu"
    if device == "gpu":  # a bad call, like --device gpu elsewhere: exit status 2
        _configure_jax(c)
        from ..api import resolve_device

        try:
            resolve_device("gpu")
        except RuntimeError as exc:
            err.print(f"error: --device gpu: {c._one_line(exc)}", markup=False, highlight=False)
            raise typer.Exit(c.EXIT_USAGE) from None
    # with --json - the JSON owns stdout and the tables go to stderr
    out = err if json_path == "-" else Console()
    with err.status("importing JAX") as status:
        _configure_jax(c)

        def progress(msg: str) -> None:
            if err.is_terminal:
                status.update(msg)
            else:  # a log file gets one line per step
                err.print(msg, highlight=False)

        try:
            result = harness.run_benchmark(
                shape_list,
                dtype=dtype,
                device=device,
                repeat=5 if repeat is None else repeat,
                cases=case_list,
                use_torch=not no_torch,
                tangents=tangents,
                tangents_shape=many_shape,
                progress=progress,
                suite=suite,
                grad_shapes=grad_list,
                overhead_shape=overhead,
                startup_size=startup_size,
                startup_repeat=harness.DEFAULT_STARTUP_REPEAT if repeat is None else repeat,
                startup_cache_dir=startup_cache_dir,
            )
        except RuntimeError as exc:  # e.g. --device gpu without a GPU
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from None

    render(result, out)
    if json_path is not None:
        text = json.dumps(result, indent=2, allow_nan=False)
        if json_path == "-":
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
        else:
            # written beside the destination and renamed: never a half-written report
            tmp = f"{json_path}.{os.getpid()}.tmp"
            try:
                with open(tmp, "w", encoding="utf-8") as fh:
                    fh.write(text + "\n")
                os.replace(tmp, json_path)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.remove(tmp)
                err.print(f"error: --json '{json_path}': cannot write ({exc.strerror})")
                raise typer.Exit(2) from None
            err.print(f"wrote {json_path}")


def _configure_jax(c) -> None:
    """64-bit mode (float64 stays float64) and the fast LAPACK start, as every command has;
    not the persistent compilation cache, which would turn compile times into load times."""
    import jax

    jax.config.update("jax_enable_x64", True)
    c._fast_lapack_init()


__all__ = ["bench", "render"]
