"""svdgrad check: verify the derivatives against independent references."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from typing import Annotated, Any

import numpy as np
import typer
from rich.table import Table

from ..arrays import InputError, read_source, source_paths
from . import _common as c
from .jvp import A_ARG
from .vjp import GS_OPT, GU_OPT, GVH_OPT

EPILOG = """\
[bold]Example[/bold]

  $ svdgrad check A.npy --all-cases --json report.json

  $ svdgrad check A.npy --dA dA.npy --against mine.npz

Exit status 0 when every check passes, 1 when one fails.
"""

AGAINST_NAMES = ("dU", "dS", "dVh", "gA")


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    x = float(x)
    return f"{x:.1e}" if np.isfinite(x) else str(x)


def read_against(spec: str) -> dict[str, np.ndarray]:
    """The arrays named dU, dS, dVh, gA in a .npz or .h5 file (h5: at root or under a group)."""
    path = source_paths(spec)
    low = str(path).lower() if path is not None else ""
    inner = spec[len(str(path)) + 1 :] if path is not None and len(spec) > len(str(path)) else ""
    if spec == "-" or path is None or not low.endswith((".npz", ".h5", ".hdf5")):
        raise c.UsageProblem(
            f"--against '{spec}': needs a .npz file or PATH.h5[:/GROUP] holding any of "
            f"{', '.join(AGAINST_NAMES)}"
        )
    if not path.is_file():
        raise c.UsageProblem(f"--against '{spec}': file not found; check the path")
    if low.endswith(".npz"):
        if inner:
            raise c.UsageProblem(
                f"--against '{spec}': give the .npz file alone; its arrays are read by name "
                f"({', '.join(AGAINST_NAMES)})"
            )
        try:
            with zipfile.ZipFile(path) as zf:
                members = {n[:-4] if n.endswith(".npy") else n for n in zf.namelist()}
        except Exception as exc:
            raise InputError(f"--against '{spec}': not a readable .npz archive ({exc})") from None
        present = [n for n in AGAINST_NAMES if n in members]
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
                present = [n for n in AGAINST_NAMES if isinstance(grp.get(n), h5py.Dataset)]
        except c.UsageProblem:
            raise
        except Exception as exc:
            raise InputError(f"--against '{spec}': cannot read as HDF5 ({exc})") from None
        prefix = group.rstrip("/")
        sources = {n: f"{path}:{prefix}/{n}" for n in present}
    if not sources:
        raise c.UsageProblem(
            f"--against '{spec}': holds none of {', '.join(AGAINST_NAMES)}; save your results "
            "under those names"
        )
    return {n: read_source(s, arg="--against", vector=(n == "dS")) for n, s in sources.items()}


def render(report: Any) -> None:
    console = c.out_console()
    table = Table(title="svdgrad check")
    table.add_column("case", no_wrap=True)
    table.add_column("output", no_wrap=True)
    table.add_column("reference", no_wrap=True)
    table.add_column("relative error", justify="right", no_wrap=True)
    table.add_column("FD noise", justify="right", no_wrap=True)
    table.add_column("tolerance", justify="right", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    for case in report.cases:
        for row in case.rows:
            verdict = "[bold green]PASS[/]" if row.passed else "[bold red]FAIL[/]"
            table.add_row(
                row.case,
                row.output,
                row.reference,
                _fmt(row.rel_error),
                _fmt(row.fd_noise),
                _fmt(row.tolerance),
                verdict,
            )
    console.print(table)
    for case in report.cases:
        cond = case.conditioning
        console.print(
            f"[bold]{case.case}[/] ({case.dtype}, shape {'x'.join(map(str, case.shape))}): "
            f"smallest singular value {_fmt(cond.get('min_singular_value'))}, "
            f"smallest gap {_fmt(cond.get('min_gap'))}, "
            f"near-degenerate pairs {_fmt(cond.get('near_degenerate_pairs'))}, "
            f"rank cut {_fmt(cond.get('rank_cut'))}, "
            f"FD trustworthy {_fmt(cond.get('fd_trustworthy'))}",
            soft_wrap=True,
        )
        for note in case.notes:
            console.print(f"  note: {note}", markup=False, soft_wrap=True)


def write_json(report: Any, dest: str) -> None:
    text = json.dumps(report.to_json(), indent=2) + "\n"
    if dest == "-":
        typer.echo(text, nl=False)
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
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
            help="Your own results to compare: a .npz or PATH.h5[:/GROUP] holding any of dU, "
            "dS, dVh, gA (one case only).",
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
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random directions.")] = 0,
    device: c.DeviceOpt = c.Device.cpu,
    convention: c.ConventionOpt = c.Convention.jax,
    eps: c.EpsOpt = 0.0,
    degeneracy_tol: c.DegTolOpt = None,
    rank_tol: c.RankTolOpt = None,
    allow_gauge_dependence: c.AllowGaugeOpt = False,
) -> None:
    """Check the derivatives against finite differences, JAX, identities and your results.

    References: finite differences, jax.jvp/jax.vjp, the adjoint identity, the chain rule and,
    with --against, your own results. With --convention torch, the cotangents and the gA in
    --against are taken in PyTorch's conjugating convention.
    """
    from ..check import ALL_CASES, Case

    if against is not None and all_cases:
        raise c.UsageProblem(
            "--against: compares results of one case, so it cannot be used with --all-cases; "
            "select the case with --full/--thin, --complex and --values-only"
        )
    if values_only and not all_cases and (gu is not None or gvh is not None):
        raise c.UsageProblem(
            "--gU/--gVh: --values-only computes S alone, so only --gS is accepted; "
            "drop --values-only or the U/Vh cotangents"
        )
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
    is_complex = complex_ or np.iscomplexobj(A)
    if all_cases:
        cases = [case for case in ALL_CASES if case.complex or not np.iscomplexobj(A)]
        if len(cases) < len(ALL_CASES):
            c.warn("A is complex: only the four complex cases are checked")
    else:
        cases = [Case(full_matrices=full, complex=is_complex, compute_uv=not values_only)]
    m, n = A.shape[-2:]
    if "--dA" in arrays:
        c.check_trailing_shape(A, arrays["--dA"], "--dA", (m, n), "the tangent")
    if "--gS" in arrays:
        c.check_trailing_shape(A, arrays["--gS"], "--gS", (min(m, n),), "the cotangent of S")
    against_arrays = read_against(against) if against is not None else None
    torch = convention == c.Convention.torch
    cots = {k: arrays.get(f"--{k}") for k in ("gU", "gS", "gVh")}
    if torch:  # torch_vjp(c) = conj(jax_vjp(conj(c)))
        cots = {k: (None if v is None else np.conj(v)) for k, v in cots.items()}
        if against_arrays and "gA" in against_arrays:
            against_arrays["gA"] = np.conj(against_arrays["gA"])
    numerics = c.Numerics(eps, degeneracy_tol, rank_tol)
    dev = c.resolve_device(device)

    from ..check import run_checks

    report = run_checks(
        A,
        cases,
        dA=arrays.get("--dA"),
        **cots,
        against=against_arrays,
        seed=seed,
        device=dev,
        **numerics.kwargs(),
    )
    if json_out == "-":
        write_json(report, "-")
    else:
        render(report)
        if json_out is not None:
            write_json(report, json_out)
    if not report.passed:
        parts = [
            f"{r.case} {r.output} {r.reference} (relative error {r.rel_error:.1e} > "
            f"{r.tolerance:.0e})"
            for r in report.failures()
        ]
        c.err_console.print("check failed: " + "; ".join(parts), markup=False)
        raise typer.Exit(c.EXIT_FAILED)
