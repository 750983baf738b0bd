"""The verification engine behind `svdgrad check`: it passes correct rules, at equal and zero
singular values too, and catches wrong ones. Each reference alone: tests/test_check_references.py;
the command: tests/test_check_cli.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import TOL, random_matrix, rotated

from svdgrad_cli import api, check
from svdgrad_cli.check import ALL_CASES, Case, run_checks
from svdgrad_cli.check.tolerances import tolerance

THIN = Case(False, False, True)
FULL_COMPLEX = Case(True, True, True)


# shapes are shared between tests: each new (shape, case) compiles the rules once
@pytest.fixture(scope="module")
def A():
    return random_matrix(np.random.default_rng(5), (6, 4), np.float64)


HARD = {
    "identity": np.eye(4),
    "rank-2 6x4": np.random.default_rng(0).standard_normal((6, 2))
    @ np.random.default_rng(1).standard_normal((2, 4)),
    "diag(3,2,2,1) rotated": rotated([3.0, 2.0, 2.0, 1.0], 4, 4),
    "rank-1 3x5 with equal values": rotated([2.0, 0.0, 0.0], 3, 5),
}
#: the cases each hard matrix is checked in (all eight where the shape is shared anyway)
HARD_CASES = {
    "identity": ALL_CASES,
    "rank-2 6x4": ALL_CASES,
    "diag(3,2,2,1) rotated": ALL_CASES,
    "rank-1 3x5 with equal values": [THIN, FULL_COMPLEX],
}


def _failures(report):
    return [(r.case, r.output, r.reference, r.rel_error, r.tolerance) for r in report.failures()]


def test_all_cases_pass_and_report_is_json(A):
    report = run_checks(A, ALL_CASES)
    assert report.passed, _failures(report)
    assert [c.case for c in report.cases] == [c.name for c in ALL_CASES]
    refs = {r.reference for c in report.cases for r in c.rows}
    assert refs == {"fd", "jax", "adjoint", "chain rule"}
    for c in report.cases:
        assert c.conditioning["fd_trustworthy"] is True
        assert c.conditioning["min_singular_value"] > 0
        # U and V are smooth here: compared themselves, gauge-aligned
        if c.case.endswith("usv"):
            assert {"dU", "dVh"} <= {r.output for r in c.rows if r.reference == "fd"}
    text = json.dumps(report.to_json())
    data = json.loads(text)
    assert data["passed"] is True and data["summary"].startswith("check passed: ")
    assert all(r["verdict"] == "PASS" for c in data["cases"] for r in c["rows"])


@pytest.mark.parametrize("name", list(HARD))
def test_equal_and_zero_singular_values_pass(name):
    """Where U and V are not differentiable, every row that is shown means something: the
    finite differences compare gauge-invariant functions, and no row passes at a large error."""
    report = run_checks(HARD[name], HARD_CASES[name])
    assert report.passed, _failures(report)
    for c in report.cases:
        assert c.rows, c.case
        outputs = {r.output for r in c.rows if r.reference == "fd"}
        assert "dS" in outputs and "gA" in outputs, (c.case, outputs)
        if c.case.endswith("usv"):
            assert "d(U Vh)" in outputs and not {"dU", "dVh"} & outputs, (c.case, outputs)
        for r in c.rows:
            assert r.tolerance <= 1e-3, (c.case, r.output, r.reference, r.tolerance)
        assert not any(r.reference == "jax" for r in c.rows)  # JAX divides by zero here


def _wrong_jvp(which, factor):
    real = api.svd_jvp

    def wrong(*args, **kwargs):
        out = real(*args, **kwargs)
        tangents = list(out[1])
        tangents[which] = tangents[which] * factor
        return (out[0], tuple(tangents)) + tuple(out[2:])

    return wrong


def test_a_wrong_rule_is_caught(A, monkeypatch):
    monkeypatch.setattr(api, "svd_jvp", _wrong_jvp(0, 1.01))
    report = run_checks(A, [THIN])
    failed = {(r.output, r.reference) for r in report.failures()}
    assert ("dU", "fd") in failed and ("dU", "jax") in failed and ("gA", "adjoint") in failed
    assert ("dA", "chain rule") in failed
    assert ("dS", "fd") not in failed


@pytest.mark.parametrize("name", ["identity", "rank-2 6x4", "diag(3,2,2,1) rotated"])
@pytest.mark.parametrize("which", [0, 1, 2])
def test_a_wrong_jvp_is_caught_at_equal_and_zero_values(name, which, monkeypatch):
    monkeypatch.setattr(api, "svd_jvp", _wrong_jvp(which, 1.01))
    report = run_checks(HARD[name], [THIN])
    failed = {(r.output, r.reference) for r in report.failures()}
    fd = {"dU": "d(U Vh)", "dS": "dS", "dVh": "d(U Vh)"}[("dU", "dS", "dVh")[which]]
    assert {(fd, "fd"), ("dA", "chain rule"), ("gA", "adjoint")} <= failed, failed


@pytest.mark.parametrize("name", ["identity", "rank-2 6x4", "diag(3,2,2,1) rotated"])
def test_a_wrong_vjp_is_caught_at_equal_and_zero_values(name, monkeypatch):
    real = api.svd_vjp

    def wrong(*args, **kwargs):
        gA, info = real(*args, **kwargs)
        return gA * 1.001, info

    monkeypatch.setattr(api, "svd_vjp", wrong)
    report = run_checks(HARD[name], [FULL_COMPLEX])
    failed = {(r.output, r.reference) for r in report.failures()}
    assert {("gA", "fd"), ("gA", "adjoint")} <= failed, failed


def test_against_names_the_output_that_disagrees(A):
    case = THIN
    good = run_checks(A, [case], seed=3)
    assert good.passed
    from svdgrad_cli import svd_jvp

    dA = check.random_directions(A.shape, case, seed=3)["dA"]
    _, (dU, dS, dVh) = svd_jvp(A, dA)
    mine = {"dU": np.asarray(dU), "dS": np.asarray(dS) + 1e-3}
    report = run_checks(A, [case], seed=3, against=mine)
    failed = [(r.output, r.reference) for r in report.failures()]
    assert failed == [("dS", "against")]


def test_tangent_parallel_to_A_is_not_a_false_failure(A):
    """dA = A gives dU = dVh = 0: the errors are measured against the scale of the problem."""
    report = run_checks(A, [THIN, FULL_COMPLEX], dA=A)
    assert report.passed, _failures(report)
    report = run_checks(HARD["identity"], [THIN], dA=HARD["identity"])
    assert report.passed, _failures(report)


def test_batches_with_different_spectra_per_matrix():
    """Each matrix of a stack gets its own groups of singular values."""
    stack = np.stack(
        [
            HARD["diag(3,2,2,1) rotated"],
            np.eye(4),
            random_matrix(np.random.default_rng(2), (4, 4), np.float64),
        ]
    )
    report = run_checks(stack, [Case(False, True, False)])
    assert report.passed, _failures(report)


def test_single_precision_against_64_bit_references():
    A32 = random_matrix(np.random.default_rng(4), (6, 4), np.float32)
    report = run_checks(A32, [Case(False, True, True)])
    assert report.passed, _failures(report)
    for c in report.cases:
        assert c.dtype in ("float32", "complex64")
        for r in c.rows:
            assert r.tolerance >= tolerance(c.dtype, r.reference)


def test_ill_conditioned_input_raises_exact_tolerances_with_a_note():
    """Distinct values 1e-9 apart: the rules divide by the gap, so rounding is amplified by
    s_max / gap; the exact references allow 100 eps times that, and a note says so."""
    report = run_checks(np.diag([3.0, 2.0 + 1e-9, 2.0, 1.0]), [THIN])
    assert report.passed, _failures(report)
    case = report.cases[0]
    assert case.conditioning["kappa"] > 1e9
    assert any("ill-conditioned" in note for note in case.notes)
    chain = [r for r in case.rows if r.reference == "chain rule"][0]
    assert chain.tolerance > TOL[np.dtype("float64")]["ref"]


def test_approximate_rules_are_checked_by_the_adjoint_identity_only(A):
    report = run_checks(A, [THIN], eps=1e-3)
    assert report.passed, _failures(report)
    assert {r.reference for r in report.cases[0].rows} == {"adjoint"}
    assert any("broadening" in note for note in report.cases[0].notes)


def test_one_tolerance_table():
    """helpers.TOL (the tests') is the library's table, and check uses it."""
    from svdgrad_cli.check import tolerances

    assert TOL is tolerances.TOL
    for dtype in TOL:
        assert tolerance(dtype, "jax") == TOL[dtype]["ref"]
        assert tolerance(dtype, "fd") == TOL[dtype]["fd"]
