"""Each reference of `svdgrad check` alone, on an Evaluation (the rules run once): finite
differences (of U, S, V and of gauge-invariant functions), JAX, the adjoint identity, the chain
rule, --against (gauge alignment, --factors), the truncated SVD with its naive thin rule, and the
step sweep. Each passes correct rules and fails a rule made wrong."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from helpers import random_matrix, rotated

from svdgrad_cli.check import Case
from svdgrad_cli.check.adjoint import adjoint_error, check_adjoint
from svdgrad_cli.check.against import check_against
from svdgrad_cli.check.chain import check_chain_rule
from svdgrad_cli.check.evaluate import evaluate
from svdgrad_cli.check.fd import check_fd, quantities, step_errors
from svdgrad_cli.check.invariants import InvariantLoss
from svdgrad_cli.check.jax_ref import check_jax
from svdgrad_cli.check.numerics import batch_groups, group_values
from svdgrad_cli.check.tolerances import NOISE_LIMIT
from svdgrad_cli.check.truncated import TruncatedLoss, check_naive, evaluate_truncated

THIN = Case(False, False, True)
THIN_C = Case(False, True, True)
FULL = Case(True, False, True)


@pytest.fixture(scope="module")
def generic():
    return evaluate(random_matrix(np.random.default_rng(3), (6, 4), np.float64), THIN, seed=1)


@pytest.fixture(scope="module")
def degenerate():
    return evaluate(rotated([3.0, 2.0, 2.0, 1.0], 4, 4), THIN, seed=1)


@pytest.fixture(scope="module")
def rank_deficient():
    return evaluate(rotated([3.0, 1.0, 0.0, 0.0], 6, 4), THIN, seed=1)


def _passed(rows):
    return rows and all(r.passed for r in rows)


def _wrong(ev, **tangents):
    """ev with its tangents (selected and linear) scaled: dU=1.01 multiplies dU."""
    new = {k: v * tangents.get(k, 1.0) for k, v in ev.tangents.items()}
    lin = {k: v * tangents.get(k, 1.0) for k, v in ev.linear_tangents.items()}
    return dataclasses.replace(ev, tangents=new, linear_tangents=lin)


# --------------------------------------------------------------------------- groups


def test_groups_follow_what_finite_differences_resolve():
    g = group_values(np.array([3.0, 2.0 + 1e-14, 2.0, 1.0, 1e-10]), 1e-6, 1e-13, 1e-15)
    assert g.blocks == ((0,), (1, 2), (3,)) and g.null == (4,)
    assert g.rule_cut == (True, True, True) and g.null_cut is False and not g.simple
    g = group_values(np.array([3.0, 2.0 + 1e-9, 2.0]), 1e-6, 1e-13, 1e-15)
    assert g.blocks == ((0,), (1, 2)) and g.rule_cut == (True, False)
    assert group_values(np.array([3.0, 2.0, 1.0]), 1e-6, 1e-13, 1e-15).simple


# --------------------------------------------------------------------------- finite differences


def test_fd_compares_u_and_v_themselves_where_they_are_smooth(generic):
    rows, notes, cond = check_fd(generic)
    assert _passed(rows) and cond["fd_trustworthy"]
    assert [r.output for r in rows] == ["dS", "dU", "dVh", "gA"]
    rows, _, _ = check_fd(_wrong(generic, dVh=1.01))
    assert {r.output for r in rows if not r.passed} == {"dVh"}


@pytest.mark.parametrize("fixture", ["degenerate", "rank_deficient"])
def test_fd_compares_gauge_invariant_functions_elsewhere(fixture, request):
    ev = request.getfixturevalue(fixture)
    qs, _ = quantities(ev)
    names = [q.output for q in qs]
    assert "dU" not in names and "d(U Vh)" in names and "dS" in names and names[-1] == "gA"
    dS = qs[names.index("dS")]
    assert dS.one_sided is not None and dS.one_sided.any()  # equal or zero values: one-sided
    rows, notes, cond = check_fd(ev)
    assert _passed(rows), [(r.output, r.rel_error) for r in rows]
    assert cond["fd_trustworthy"] and any("not differentiable" in n for n in notes)
    for change in ({"dU": 1.01}, {"dVh": 1.01}, {"dS": 1.01}):
        rows, _, _ = check_fd(_wrong(ev, **change))
        assert not all(r.passed for r in rows), change


def test_fd_null_space_projectors(rank_deficient):
    """6 x 4 of rank 2: V's null columns span the right null space (compared through V V^H),
    U's thin null columns only part of the left one (left to the chain rule, with a note)."""
    qs, notes = quantities(rank_deficient)
    names = [q.output for q in qs]
    assert "d(VV^H)" in names and "d(UU^H)" not in names
    assert any("span only part" in n for n in notes)
    full = evaluate(rotated([3.0, 1.0, 0.0, 0.0], 6, 4), FULL, seed=1)
    qs, notes = quantities(full)
    assert {"d(UU^H)", "d(VV^H)"} <= {q.output for q in qs}  # null and extra columns together
    rows, _, _ = check_fd(full)
    assert _passed(rows)


def test_noisy_differences_are_left_out_not_passed(generic):
    """A step far too large: the two step sizes disagree, so the rows are not counted (the old
    check raised the tolerance to 10x the noise and passed at 100% error)."""
    big = dataclasses.replace(generic, h=generic.h * 3e4)
    rows, notes, cond = check_fd(big)
    assert cond["fd_trustworthy"] is False
    assert any("too noisy" in n for n in notes)
    for r in rows:
        assert r.fd_noise <= NOISE_LIMIT and r.tolerance <= 10 * NOISE_LIMIT


def test_invariant_loss_cotangents_are_its_derivative(rng):
    """The hand-written cotangents of InvariantLoss against finite differences of its value, for
    any (U, S, Vh), complex and full with null and extra columns."""
    case = Case(True, True, True)
    m, n = 5, 3
    groups = batch_groups(np.array([2.0, 2.0, 0.0]), np.ones((m, n)), 1e-6, m, n, np.float64)
    loss = InvariantLoss(groups, m, n, case, rng)
    U = rng.standard_normal((m, m)) + 1j * rng.standard_normal((m, m))
    Vh = rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n))
    s = rng.standard_normal(n)
    dU = rng.standard_normal((m, m)) + 1j * rng.standard_normal((m, m))
    dVh = rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n))
    ds = rng.standard_normal(n)
    g = loss.cotangents(U, s, Vh)
    t = 1e-6
    fd = (
        loss.value(U + t * dU, s + t * ds, Vh + t * dVh)
        - loss.value(U - t * dU, s - t * ds, Vh - t * dVh)
    ) / (2 * t)
    lin = np.real(np.sum(g["gU"] * dU) + np.sum(g["gS"] * ds) + np.sum(g["gVh"] * dVh))
    assert abs(fd - lin) <= 1e-7 * (1 + abs(lin))


def test_truncated_loss_cotangents_are_its_derivative(rng):
    m, n, R = 6, 4, 2
    groups = batch_groups(np.array([3.0, 2.0]), np.ones((m, n)), 1e-6, m, n, np.float64)
    loss = TruncatedLoss(groups, m, n, R, THIN_C, rng)
    U = rng.standard_normal((m, R)) + 1j * rng.standard_normal((m, R))
    Vh = rng.standard_normal((R, n)) + 1j * rng.standard_normal((R, n))
    s, err = rng.standard_normal(R), np.array(0.7)
    dU = rng.standard_normal((m, R)) + 1j * rng.standard_normal((m, R))
    dVh = rng.standard_normal((R, n)) + 1j * rng.standard_normal((R, n))
    ds, derr = rng.standard_normal(R), 0.3
    g = loss.cotangents(U, s, Vh, err)
    t = 1e-6
    plus = loss.value(U + t * dU, s + t * ds, Vh + t * dVh, err + t * derr)
    minus = loss.value(U - t * dU, s - t * ds, Vh - t * dVh, err - t * derr)
    lin = np.real(np.sum(g["gU"] * dU) + np.sum(g["gS"] * ds) + np.sum(g["gVh"] * dVh))
    lin += float(g["gerr"]) * derr
    assert abs((plus - minus) / (2 * t) - lin) <= 1e-7 * (1 + abs(lin))


# --------------------------------------------------------------------------- JAX


def test_jax_reference(generic, degenerate):
    rows, notes = check_jax(generic)
    assert _passed(rows) and {r.output for r in rows} == {"dU", "dS", "dVh", "gA"}
    rows, _ = check_jax(_wrong(generic, dS=1.01))
    assert {r.output for r in rows if not r.passed} == {"dS"}
    rows, notes = check_jax(degenerate)
    assert rows == [] and "no reference at equal or zero" in notes[0]
    A = random_matrix(np.random.default_rng(3), (6, 4), np.float64)
    rows, notes = check_jax(evaluate(A, FULL))
    assert rows == [] and "m != n" in notes[0]


def test_jax_reference_aligns_signs(generic):
    """JAX's 64-bit SVD may pick other signs than the rules' factors: its tangents are
    brought into the rules' gauge."""
    P = dict(generic.primals)
    flip = np.array([1.0, -1.0, 1.0, -1.0])
    P["U"], P["Vh"] = P["U"] * flip, generic.primals["Vh"] * flip[:, None]
    T = dict(generic.tangents)
    T["dU"], T["dVh"] = T["dU"] * flip, T["dVh"] * flip[:, None]
    C = dict(generic.cots)
    C["gU"], C["gVh"] = C["gU"] * flip, C["gVh"] * flip[:, None]
    flipped = dataclasses.replace(
        generic, primals=P, tangents=T, linear_primals=P, linear_tangents=T, cots=C
    )
    rows, _ = check_jax(flipped)
    assert _passed(rows)


# --------------------------------------------------------------------------- adjoint, chain rule


@pytest.mark.parametrize("fixture", ["generic", "degenerate", "rank_deficient"])
def test_adjoint_identity(fixture, request):
    ev = request.getfixturevalue(fixture)
    assert _passed(check_adjoint(ev)[0])
    assert adjoint_error(dataclasses.replace(ev, gA=ev.gA * 1.001)) > 1e-6
    assert not _passed(check_adjoint(_wrong(ev, dU=1.01))[0])


@pytest.mark.parametrize("fixture", ["generic", "degenerate", "rank_deficient"])
def test_chain_rule(fixture, request):
    ev = request.getfixturevalue(fixture)
    assert _passed(check_chain_rule(ev)[0])
    assert not _passed(check_chain_rule(_wrong(ev, dVh=1.01))[0])


def test_chain_rule_skipped_where_no_null_basis_is_selected():
    ev = evaluate(rotated([3.0, 1.0, 0.0, 0.0], 6, 4), FULL)
    rows, notes = check_chain_rule(ev)
    assert rows == [] and "full SVD with m != n" in notes[0]


# --------------------------------------------------------------------------- against


def test_against_aligns_signs_from_the_results(generic):
    """Another SVD with one pair's sign flipped gives dU and dVh with that pair flipped: a
    correct result, which passes after alignment (the old check failed it at 23%)."""
    mine = {k: np.array(v) for k, v in generic.tangents.items()}
    mine["dU"][:, 1] *= -1
    mine["dVh"][1] *= -1
    rows, notes = check_against(generic, mine)
    assert _passed(rows) and any("sign of 1 singular pair" in n for n in notes)
    mine["dU"][:, 2] *= 1.01
    rows, _ = check_against(generic, mine)
    assert {r.output for r in rows if not r.passed} == {"dU"}


def test_against_aligns_phases_from_factors():
    A = random_matrix(np.random.default_rng(8), (6, 4), np.complex128)
    ev = evaluate(A, THIN_C, seed=2)
    ph = np.exp(1j * np.array([0.3, -1.2, 2.0, -0.4]))
    U, S, Vh = ev.primals["U"] * ph, ev.primals["S"], np.conj(ph)[:, None] * ev.primals["Vh"]
    mine = {"dU": ev.tangents["dU"] * ph, "dVh": np.conj(ph)[:, None] * ev.tangents["dVh"]}
    mine["dS"] = ev.tangents["dS"]
    rows, notes = check_against(ev, mine, factors=(U, S, Vh))
    assert _passed(rows) and any("from your factors" in n for n in notes)


def test_against_torch_at_its_own_factors():
    """dU, dVh from torch's forward-mode SVD (its own signs) and gA from its autograd, with
    torch's factors: all agree after alignment."""
    torch = pytest.importorskip("torch")
    A = random_matrix(np.random.default_rng(9), (6, 4), np.float64)
    dA = np.random.default_rng(10).standard_normal((6, 4))
    gS = np.random.default_rng(11).standard_normal(4)
    ev = evaluate(A, THIN, dA=dA, gS=gS)
    At, dAt = torch.tensor(A), torch.tensor(dA)
    (U, S, Vh), (dU, dS, dVh) = torch.func.jvp(
        lambda a: torch.linalg.svd(a, full_matrices=False), (At,), (dAt,)
    )
    Ag = At.clone().requires_grad_(True)
    torch.sum(torch.linalg.svdvals(Ag) * torch.tensor(gS)).backward()
    mine = {"dU": dU.numpy(), "dS": dS.numpy(), "dVh": dVh.numpy(), "gA": Ag.grad.numpy()}
    rows, _ = check_against(ev, mine, factors=(U.numpy(), S.numpy(), Vh.numpy()))
    assert _passed(rows) and len(rows) == 4


def test_against_at_equal_values_needs_factors(degenerate):
    mine = {k: np.array(v) for k, v in degenerate.tangents.items()}
    rows, notes = check_against(degenerate, {"dU": mine["dU"], "dVh": mine["dVh"]})
    assert rows == [] and any("pass --factors" in n for n in notes)
    P = degenerate.primals
    rows, _ = check_against(degenerate, mine, factors=(P["U"], P["S"], P["Vh"]))
    assert _passed(rows) and {r.output for r in rows} == {"dS", "d(U Vh)"}


# --------------------------------------------------------------------------- truncated


@pytest.mark.parametrize("solver", ["dense", "iterative"])
def test_truncated_against_fd_jax_and_the_adjoint(solver):
    A = random_matrix(np.random.default_rng(4), (9, 6), np.float64)
    ev = evaluate_truncated(A, THIN, 3, solver=solver, seed=1)
    rows, notes, _ = check_fd(ev)
    assert _passed(rows)
    assert [r.output for r in rows] == ["dS", "d(UU^H)", "d(VV^H)", "d(U S Vh)", "derr", "gA"]
    assert _passed(check_adjoint(ev)[0])
    rows, _ = check_jax(ev)
    assert _passed(rows) and {r.output for r in rows} == {"dU", "dS", "dVh", "derr", "gA"}
    rows, _, _ = check_fd(_wrong(ev, derr=1.01))
    assert {r.output for r in rows if not r.passed} == {"derr"}


def test_truncated_shows_the_naive_rule_without_failing():
    A = random_matrix(np.random.default_rng(4), (9, 6), np.float64, spread=False)
    ev = evaluate_truncated(A, THIN, 3, seed=1)
    rows, notes = check_naive(ev)
    assert [r.output for r in rows] == ["d(UU^H)", "d(VV^H)", "d(U S Vh)"]
    assert all(r.info and r.passed and r.verdict == "info" for r in rows)
    assert max(r.rel_error for r in rows) > 0.05  # the coupling matters on this input
    assert "naive thin rule" in notes[0]


def test_truncated_cut_inside_a_degenerate_pair_has_no_derivative():
    ev = evaluate_truncated(rotated([3.0, 2.0, 2.0, 1.0], 5, 4), THIN, 2)
    rows, notes, cond = check_fd(ev)
    assert rows == [] and "degenerate pair" in notes[0] and not cond["fd_trustworthy"]
    assert _passed(check_adjoint(ev)[0])
    assert check_jax(ev)[0] == []


def test_truncated_degenerate_kept_values_compare_the_block_sum():
    """Equal kept values: S through the block's sum, and a loss without U S Vh (whose
    cotangents cannot determine the gradient there)."""
    ev = evaluate_truncated(rotated([3.0, 3.0, 1.0, 0.5], 6, 4), THIN, 2, seed=1)
    rows = {r.output: r for r in check_fd(ev)[0]}
    for name in ("dS", "d(UU^H)", "d(VV^H)", "derr", "gA"):
        assert rows[name].passed, (name, rows[name].rel_error)


# --------------------------------------------------------------------------- steps


def test_step_errors_fall_as_h_squared_and_rise_as_eps_over_h(generic):
    steps = step_errors(generic)
    h = [r["h"] for r in steps]
    assert h[0] == pytest.approx(1e-1) and h[-1] == pytest.approx(1e-13)
    best = [r for r in steps if r["best"]]
    assert len(best) == 1
    b = best[0]
    assert 1e-8 <= b["h"] <= 1e-3 and b["error"] < 1e-7
    assert steps[0]["error"] > 1e3 * b["error"] and steps[-1]["error"] > 1e3 * b["error"]
    # truncation: a decade of h is two decades of error on the large-step side
    i = h.index(pytest.approx(1e-2))
    j = h.index(pytest.approx(1e-3))
    assert 30 < steps[i]["error"] / steps[j]["error"] < 300
