"""svdgrad check: verify the derivatives against independent references."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import zipfile
from enum import Enum
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from .._pipes import silence_stdout
from ..io import InputError, read_source, source_paths
from . import _common as c
from .jvp import A_ARG
from .vjp import GS_OPT, GU_OPT, GVH_OPT

EPILOG = """\
[bold]Example[/bold]

  $ svdgrad check A.npy --all-cases --json report.json

  $ svdgrad check A.npy --dA dA.npy --against mine.npz --factors f.npz

  $ svdgrad check A.npy --rank 3

  $ svdgrad check A.npy --steps --plot steps.png

Exit status 0 when every check passes, 1 when one fails
(the last line names it), 2 for a bad call or input.
"""

AGAINST_NAMES = ("dU", "dS", "dVh", "gA")
TANGENT_OUTPUTS = ("dU", "dS", "dVh", "derr")
PLOT_EXTENSIONS = (".png", ".svg")
#: the exit status when standard output's reader goes away (128 + SIGPIPE), without a message
EXIT_PIPE = getattr(c, "EXIT_PIPE", 141)


class Solver(str, Enum):
    auto = "auto"
    dense = "dense"
    iterative = "iterative"


_TRUNC = "Truncated SVD"
_STEPS = "Finite-difference steps"


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    x = float(x)
    return f"{x:.1e}" if np.isfinite(x) else "-"


# --------------------------------------------------------------------------- reading


def read_against(spec: str, names=AGAINST_NAMES) -> dict[str, np.ndarray]:
    """Your results: the arrays named dU, dS, dVh, gA (derr with --rank) in a .npz file or an
    .h5 file or group, or one .npy file named after the output it holds (dS.npy)."""
    path = source_paths(spec)
    low = str(path).lower() if path is not None else ""
    inner = spec[len(str(path)) + 1 :] if path is not None and len(spec) > len(str(path)) else ""
    wanted = ", ".join(names)
    if spec == "-" or path is None or not low.endswith((".npz", ".h5", ".hdf5", ".npy")):
        raise c.UsageProblem(
            f"--against '{spec}': needs a .npz file or PATH.h5[:/GROUP] holding any of {wanted}, "
            f"or a .npy file named after the one it holds (e.g. dS.npy)"
        )
    if not path.is_file():
        raise c.UsageProblem(f"--against '{spec}': file not found; check the path")
    if low.endswith(".npy"):
        name = path.name[:-4]
        if inner or name not in names:
            raise c.UsageProblem(
                f"--against '{spec}': a .npy file holds one result, named by the file: call it "
                f"{' or '.join(n + '.npy' for n in names)} (or save a .npz holding them by name)"
            )
        return {name: read_source(str(path), arg="--against", vector=name in ("dS", "derr"))}
    if low.endswith(".npz"):
        if inner:
            raise c.UsageProblem(
                f"--against '{spec}': give the .npz file alone; its arrays are read by name "
                f"({wanted})"
            )
        try:
            with zipfile.ZipFile(path) as zf:
                members = {n[:-4] if n.endswith(".npy") else n for n in zf.namelist()}
        except Exception as exc:
            raise InputError(f"--against '{spec}': not a readable .npz archive ({exc})") from None
        present = [n for n in names if n in members]
        sources = {n: f"{path}:{n}" for n in present}
    else:
        import h5py

        group = "/" + inner.strip("/") if inner else "/"
        try:
            with h5py.File(path, "r") as h5:
                grp = h5.get(group)
                if not isinstance(grp, h5py.Group):
                    raise c.UsageProblem(
                        f"--against '{spec}': '{group}' is not a group in {path}; name the group "
                        "that holds the datasets"
                    )
                present = [n for n in names if isinstance(grp.get(n), h5py.Dataset)]
        except c.UsageProblem:
            raise
        except Exception as exc:
            raise InputError(f"--against '{spec}': cannot read as HDF5 ({exc})") from None
        prefix = group.rstrip("/")
        sources = {n: f"{path}:{prefix}/{n}" for n in present}
    if not sources:
        raise c.UsageProblem(
            f"--against '{spec}': holds none of {wanted}; save your results under those names"
        )
    return {
        n: read_source(s, arg="--against", vector=n in ("dS", "derr")) for n, s in sources.items()
    }


def read_factors(spec: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sources = c.factor_sources(spec, "--factors")
    return tuple(
        read_source(sources[n], arg="--factors", vector=n == "S") for n in ("U", "S", "Vh")
    )


# --------------------------------------------------------------------------- output


class _Console(Console):
    """Standard output; a reader that went away raises BrokenPipeError (rich would exit 1)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


def out_console() -> Console:
    """Terminal width on a terminal (COLUMNS where set); 160 columns into a file or a pipe."""
    return _Console(highlight=False, width=None if c.stdout_is_terminal() else 160)


def render(report: Any, console: Console | None = None) -> None:
    """One table per case (readable at 80 columns), its conditioning and notes, the step
    tables of --steps, and a closing line."""
    console = console or out_console()
    for case in report.cases:
        shape = "x".join(map(str, case.shape))
        table = Table(title=f"[bold]{case.case}[/] ({case.dtype}, {shape})", title_justify="left")
        table.add_column("output", no_wrap=True)
        table.add_column("reference", no_wrap=True)
        table.add_column("error", justify="right", no_wrap=True)
        table.add_column("FD noise", justify="right", no_wrap=True)
        table.add_column("tolerance", justify="right", no_wrap=True)
        table.add_column("result", no_wrap=True)
        for row in case.rows:
            verdict = {"PASS": "[bold green]PASS[/]", "FAIL": "[bold red]FAIL[/]"}.get(
                row.verdict, "[dim]info[/]"
            )
            table.add_row(
                row.output,
                row.reference,
                _fmt(row.rel_error),
                _fmt(row.fd_noise),
                _fmt(row.tolerance),
                verdict,
            )
        console.print(table)
        cond = case.conditioning
        parts = [
            f"smallest singular value {_fmt(cond.get('min_singular_value'))}",
            f"smallest gap {_fmt(cond.get('min_gap'))}",
            f"near-degenerate pairs {_fmt(cond.get('near_degenerate_pairs'))}",
            f"rank cut {_fmt(cond.get('rank_cut'))}",
        ]
        if "cut_gap" in cond:
            parts.append(f"gap at the cut {_fmt(cond.get('cut_gap'))}")
        parts.append(f"FD trustworthy {_fmt(cond.get('fd_trustworthy'))}")
        console.print(", ".join(parts), markup=False, highlight=False)
        for note in case.notes:
            console.print(f"note: {note}", markup=False, highlight=False)
        console.print()
    stepped = [case for case in report.cases if case.steps]
    for case in stepped:
        console.print(steps_table(case))
    if stepped:
        console.print(
            "h is relative: A + h (||A|| / ||dA||) dA. Truncation error falls as h^2, rounding "
            "error rises as eps / h; the check uses h = cbrt(eps) = 6.1e-06 and h / 2.",
            markup=False,
            highlight=False,
        )
        console.print()
    console.print(report.summary(), markup=False, highlight=False)


def steps_table(case: Any) -> Table:
    table = Table(title=f"FD error against the step h: {case.case}", title_justify="left")
    table.add_column("h", justify="right", no_wrap=True)
    table.add_column("error", justify="right", no_wrap=True)
    table.add_column("", no_wrap=True)
    for r in case.steps:
        table.add_row(_fmt(r["h"]), _fmt(r["error"]), "<- best" if r["best"] else "")
    return table


def write_json(report: Any, dest: str) -> None:
    text = json.dumps(report.to_json(), indent=2) + "\n"
    if dest == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    directory = os.path.dirname(dest) or "."
    if not os.path.isdir(directory):
        raise c.UsageProblem(
            f"--json '{dest}': directory '{directory}' does not exist; create it or choose "
            "another path"
        )
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(dest)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        from ..check.plot import file_mode

        os.chmod(tmp, file_mode())
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def check_plot_args(plot: str) -> None:
    """--plot: a .png or .svg file in an existing directory, and matplotlib installed."""
    if not plot.lower().endswith(PLOT_EXTENSIONS):
        raise c.UsageProblem(f"--plot '{plot}': the plot is written as FILE.png or FILE.svg")
    directory = os.path.dirname(plot) or "."
    if not os.path.isdir(directory):
        raise c.UsageProblem(
            f"--plot '{plot}': directory '{directory}' does not exist; create it or choose "
            "another path"
        )
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise c.UsageProblem(
            "--plot needs matplotlib, an optional extra: pip install 'svdgrad[plot]' "
            "(or pip install matplotlib)"
        ) from None


# --------------------------------------------------------------------------- the command


@c.guarded
def check(
    a: A_ARG,
    da: Annotated[
        str | None,
        typer.Option(
            "--dA",
            metavar="SOURCE",
            show_default=False,
            help="Tangent direction (..., m, n); default: random (see --seed).",
        ),
    ] = None,
    gu: GU_OPT = None,  # type: ignore[valid-type]
    gs: GS_OPT = None,  # type: ignore[valid-type]
    gvh: GVH_OPT = None,  # type: ignore[valid-type]
    full: c.FullOpt = False,
    values_only: c.ValuesOnlyOpt = False,
    complex_: c.ComplexOpt = False,
    all_cases: Annotated[
        bool,
        typer.Option("--all-cases", help="Check all eight cases, not just the selected one."),
    ] = False,
    against: Annotated[
        str | None,
        typer.Option(
            "--against",
            metavar="RESULT",
            show_default=False,
            help="Your own results to compare (one case): a .npz or PATH.h5[:/GROUP] holding "
            "any of dU, dS, dVh, gA (derr with --rank), or one .npy file named after what it "
            "holds (dS.npy). Signs and phases are aligned to the rules' factors.",
        ),
    ] = None,
    factors: Annotated[
        str | None,
        typer.Option(
            "--factors",
            metavar="F",
            show_default=False,
            help="With --against: the U, S, Vh your results were computed at (.npz or "
            "PATH.h5[:/GROUP]); signs and phases are aligned from them, and gA is compared "
            "with the VJP at these factors.",
        ),
    ] = None,
    json_out: Annotated[
        str | None,
        typer.Option(
            "--json",
            metavar="REPORT",
            show_default=False,
            help="Also write the report as JSON to this file; '-' writes JSON to standard "
            "output instead of the table.",
        ),
    ] = None,
    steps: Annotated[
        bool,
        typer.Option(
            "--steps",
            rich_help_panel=_STEPS,
            help="Also show the finite-difference error against the step h, 1e-1 to 1e-13 "
            "(in the JSON report: 'steps', a list of {h, error, best}).",
        ),
    ] = False,
    plot: Annotated[
        str | None,
        typer.Option(
            "--plot",
            metavar="FILE",
            show_default=False,
            rich_help_panel=_STEPS,
            help="Draw the --steps curve into FILE.png or FILE.svg (implies --steps; needs "
            "matplotlib: pip install 'svdgrad\\[plot]').",
        ),
    ] = None,
    rank: Annotated[
        int | None,
        typer.Option(
            "--rank",
            metavar="R",
            show_default=False,
            rich_help_panel=_TRUNC,
            help="Check the truncated SVD of the top R triplets (and the truncation error), and "
            "show the error of the naive thin rule beside it. 1 <= R <= min(m, n); thin only.",
        ),
    ] = None,
    solver: Annotated[
        Solver | None,
        typer.Option(
            "--solver",
            case_sensitive=False,
            show_default=False,
            rich_help_panel=_TRUNC,
            help="With --rank: dense, iterative or auto (the default).",
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option("--seed", metavar="N", help="Seed of the random directions.")
    ] = 0,
    device: c.DeviceOpt = c.Device.cpu,
    convention: c.ConventionOpt = c.Convention.jax,
    eps: c.EpsOpt = 0.0,
    degeneracy_tol: c.DegTolOpt = None,
    rank_tol: c.RankTolOpt = None,
    allow_gauge_dependence: c.AllowGaugeOpt = False,
) -> None:
    """Check the derivatives against finite differences, JAX, identities and your results.

    Finite differences of U, S, V where they are smooth, and of
    gauge-invariant functions at equal and zero singular values;
    jax.jvp/jax.vjp where JAX's rule is exact; the adjoint identity;
    the chain rule; with --against, your own results. With
    --convention torch, the cotangents and the gA in --against are
    taken in PyTorch's conjugating convention.
    """
    from .. import check as chk

    # what can be seen before reading anything
    if solver is not None and rank is None:
        raise c.UsageProblem(
            f"--solver {solver.value}: chooses the solver of the truncated SVD; add --rank R "
            "or drop --solver"
        )
    if rank is not None and rank < 1:
        raise c.UsageProblem(f"--rank {rank}: must be at least 1 (the number of triplets kept)")
    if rank is not None and full:
        raise c.UsageProblem(
            f"--rank {rank} with --full: the top R triplets are a thin result; drop --full"
        )
    if against is not None and all_cases:
        raise c.UsageProblem(
            "--against: compares results of one case, so it cannot be used with --all-cases; "
            "select the case with --full/--thin, --complex and --values-only"
        )
    if factors is not None and against is None:
        raise c.UsageProblem(
            "--factors: the factors your --against results were computed at; add --against "
            "RESULT or drop --factors"
        )
    if values_only and not all_cases and (gu is not None or gvh is not None):
        raise c.UsageProblem(
            "--gU/--gVh: --values-only computes S alone, so only --gS is accepted; "
            "drop --values-only or the U/Vh cotangents"
        )
    if plot is not None:
        check_plot_args(plot)
        steps = True

    arrays = c.read_inputs(
        [
            ("A", a, False),
            ("--dA", da, False),
            ("--gU", gu, False),
            ("--gS", gs, True),
            ("--gVh", gvh, False),
        ]
    )
    A = arrays["A"]
    m, n = A.shape[-2:]
    if rank is not None and rank > min(m, n):
        raise c.UsageProblem(
            f"--rank {rank}: A of shape {tuple(A.shape)} has min(m, n) = {min(m, n)} singular "
            f"values; choose R between 1 and {min(m, n)}"
        )
    is_complex = complex_ or np.iscomplexobj(A)
    if all_cases:
        cases = [
            case
            for case in chk.ALL_CASES
            if (case.complex or not np.iscomplexobj(A))
            and not (rank is not None and case.full_matrices)
        ]
        if np.iscomplexobj(A):
            c.warn("A is complex: only the complex cases are checked")
        if rank is not None:
            c.warn("--rank: the truncated SVD is thin: only the thin cases are checked")
    else:
        cases = [chk.Case(full_matrices=full, complex=is_complex, compute_uv=not values_only)]
    if "--dA" in arrays:
        c.check_trailing_shape(A, arrays["--dA"], "--dA", (m, n), "the tangent")
    if "--gS" in arrays:
        k = min(m, n) if rank is None else rank
        what = "the cotangent of S" + ("" if rank is None else f" (top {rank})")
        c.check_trailing_shape(A, arrays["--gS"], "--gS", (k,), what)
    names = AGAINST_NAMES + (("derr",) if rank is not None else ())
    against_arrays = read_against(against, names) if against is not None else None
    factor_arrays = read_factors(factors) if factors is not None else None
    cots = {k: arrays.get(f"--{k}") for k in ("gU", "gS", "gVh")}
    if against_arrays:
        given = [x for x in against_arrays if x in TANGENT_OUTPUTS]
        if given and "--dA" not in arrays:
            c.warn(
                f"--against holds {', '.join(given)} but no --dA was given: they are compared "
                f"with the derivative along a random direction (--seed {seed}), which fails "
                "unless they were computed along it; pass the --dA you used"
            )
        if "gA" in against_arrays and all(v is None for v in cots.values()):
            c.warn(
                "--against holds gA but no cotangents were given: it is compared with the "
                f"gradient of random cotangents (--seed {seed}); pass the --gU/--gS/--gVh you "
                "used"
            )
    if convention == c.Convention.torch:  # torch_vjp(c) = conj(jax_vjp(conj(c)))
        cots = {k: (None if v is None else np.conj(v)) for k, v in cots.items()}
        if against_arrays and "gA" in against_arrays:
            against_arrays["gA"] = np.conj(against_arrays["gA"])
    numerics = c.Numerics(eps, degeneracy_tol, rank_tol)
    dev = c.resolve_device(device)

    extra: dict[str, Any] = {}
    if rank is not None:
        extra = {"rank": rank, "solver": (solver or Solver.auto).value}
    report = chk.run_checks(
        A,
        cases,
        dA=arrays.get("--dA"),
        **cots,
        against=against_arrays,
        factors=factor_arrays,
        seed=seed,
        device=dev,
        steps=steps,
        **extra,
        **numerics.kwargs(),
    )
    try:
        if json_out == "-":
            write_json(report, "-")
        else:
            render(report)
            sys.stdout.flush()
            if json_out is not None:
                write_json(report, json_out)
    except BrokenPipeError:
        silence_stdout()
        raise typer.Exit(EXIT_PIPE) from None
    if plot is not None:
        from ..check.plot import plot_steps

        plot_steps(report, plot, title=f"svdgrad check --steps {a}")
    if not report.passed:
        parts = [
            f"{r.case}: {r.detail}"
            if r.detail
            else f"{r.case} {r.output} {r.reference} (relative error {r.rel_error:.1e} > "
            f"{r.tolerance:.0e})"
            for r in report.failures()
        ]
        c.err_console.print("check failed: " + "; ".join(parts), markup=False)
        raise typer.Exit(c.EXIT_FAILED)
