"""Verification of the SVD rules against independent references, as report objects.

One module per reference, each a function of an Evaluation (the rules run once for a case,
evaluate.py) returning rows and notes:

- fd.check_fd: finite differences of numpy's SVD in 64-bit: of U, S and V where they are
  smooth, and of gauge-invariant functions (S by groups, U_b Vh_b, null-space projectors;
  invariants.py) where they are not, so that equal and zero singular values are checked too;
  gA through the loss its cotangents come from. fd.step_errors: the error against the step.
- jax_ref.check_jax: jax.jvp / jax.vjp of jnp.linalg.svd, where JAX has an exact rule.
- adjoint.check_adjoint: Re sum(gA * dA) = Re sum(gU * dU) + sum(gS * dS) + Re sum(gVh * dVh).
- chain.check_chain_rule: dA = dU S Vh + U dS Vh + U S dVh.
- against.check_against: results the user computed, gauge-aligned.
- truncated: the truncated SVD (rank=): its evaluation, quantities and the naive thin rule.

Tolerances: tolerances.TOL, the one table shared with the test suite. Nothing here prints;
svdgrad_cli.cli renders the reports.
"""

from __future__ import annotations

from .numerics import (
    aligned_svd,
    conditioning,
    fd_jvp,
    fd_step,
    random_directions,
    rel_error,
)
from .report import ALL_CASES, Case, CaseReport, Report, Row
from .tolerances import TOL, tolerance


def check_case(
    A,
    case: Case,
    *,
    dA=None,
    gU=None,
    gS=None,
    gVh=None,
    against: dict | None = None,
    factors=None,
    seed: int = 0,
    eps: float = 0.0,
    degeneracy_tol: float | None = None,
    rank_tol: float | None = None,
    device=None,
    rank: int | None = None,
    solver: str = "auto",
    steps: bool = False,
) -> CaseReport:
    """Run the rules for one case and compare them with every applicable reference."""
    from .adjoint import check_adjoint
    from .against import check_against
    from .chain import check_chain_rule
    from .evaluate import evaluate
    from .fd import check_fd, step_errors
    from .jax_ref import check_jax

    numerics = dict(eps=eps, degeneracy_tol=degeneracy_tol, rank_tol=rank_tol, device=device)
    if rank is None:
        ev = evaluate(A, case, dA=dA, gU=gU, gS=gS, gVh=gVh, seed=seed, **numerics)
    else:
        from .truncated import evaluate_truncated

        ev = evaluate_truncated(
            A, case, rank, solver=solver, dA=dA, gU=gU, gS=gS, gVh=gVh, seed=seed, **numerics
        )
    report = CaseReport(case=ev.name, dtype=ev.dtype.name, shape=tuple(ev.A.shape))
    cond = conditioning(ev.primals["S"])
    cond["degenerate_pairs_cut"] = int(ev.info["degenerate_pairs"]) if eps == 0 else 0
    cond["rank_cut"] = int(ev.info["rank_cut"])
    cond["broadened"] = bool(ev.info["broadened"])
    cond["gauge_relative"] = float(ev.vinfo.get("gauge_relative", 0.0))
    cond["basis_selected"] = bool(ev.info["basis_selected"])
    if rank is not None:
        cond["cut_gap"] = ev.cut["gap"]
        cond["cut_degenerate"] = ev.cut["degenerate"]
    report.notes.extend(ev.approximate)
    if ev.tolerance("jax") > tolerance(ev.dtype, "jax"):
        cond["kappa"] = ev.kappa
        report.notes.append(
            f"ill-conditioned: s_max / (smallest gap or value) = {ev.kappa:.1e}, so the "
            "tolerances of the exact references are raised to 100 eps times that"
        )

    rows, notes, fd_cond = check_fd(ev)
    cond.update(fd_cond)
    report.rows.extend(rows)
    report.notes.extend(notes)
    for reference in (check_adjoint, check_chain_rule, check_jax):
        rows, notes = reference(ev)
        report.rows.extend(rows)
        report.notes.extend(notes)
    if rank is not None:
        from .truncated import check_naive

        rows, notes = check_naive(ev)
        report.rows.extend(rows)
        report.notes.extend(notes)
    if against:
        rows, notes = check_against(ev, against, factors)
        report.rows.extend(rows)
        report.notes.extend(notes)
    if steps and not ev.approximate and (rank is None or ev.cut["resolved"]):
        report.steps = step_errors(ev)
    report.conditioning = cond
    return report


def run_checks(A, cases, **kwargs) -> Report:
    return Report([check_case(A, case, **kwargs) for case in cases])


__all__ = [
    "ALL_CASES",
    "Case",
    "CaseReport",
    "Report",
    "Row",
    "TOL",
    "aligned_svd",
    "check_case",
    "conditioning",
    "fd_jvp",
    "fd_step",
    "random_directions",
    "rel_error",
    "run_checks",
    "tolerance",
]
