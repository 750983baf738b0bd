"""The verification engine behind `svdgrad check`: it passes correct rules and catches wrong ones."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import random_matrix

from svdgrad_cli import api, check
from svdgrad_cli.check import ALL_CASES, Case, run_checks


@pytest.fixture(scope="module")
def A():
    return random_matrix(np.random.default_rng(5), (5, 3), np.float64)


def test_all_cases_pass_and_report_is_json(A):
    report = run_checks(A, ALL_CASES)
    assert report.passed, [(r.case, r.output, r.reference, r.rel_error) for r in report.failures()]
    assert [c.case for c in report.cases] == [c.name for c in ALL_CASES]
    refs = {r.reference for c in report.cases for r in c.rows}
    assert refs == {"fd", "jax", "adjoint", "chain rule"}
    for c in report.cases:
        assert c.conditioning["fd_trustworthy"] is True
        assert c.conditioning["min_singular_value"] > 0
    text = json.dumps(report.to_json())
    assert json.loads(text)["passed"] is True


def test_a_wrong_rule_is_caught(A, monkeypatch):
    real = api.svd_jvp

    def wrong(*args, **kwargs):
        primals, (dU, dS, dVh), info = real(*args, **kwargs)
        return primals, (dU * 1.01, dS, dVh), info

    monkeypatch.setattr(api, "svd_jvp", wrong)
    report = run_checks(A, [Case(False, False, True)])
    failed = {(r.output, r.reference) for r in report.failures()}
    assert ("dU", "fd") in failed and ("dU", "jax") in failed and ("gA", "adjoint") in failed
    assert ("dS", "fd") not in failed


def test_against_names_the_output_that_disagrees(A):
    case = Case(False, False, True)
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
    report = run_checks(A, [Case(False, False, True), Case(True, True, True)], dA=A)
    assert report.passed, [(r.case, r.output, r.reference, r.rel_error) for r in report.failures()]


def test_degenerate_input_says_fd_is_not_trustworthy():
    Q = np.linalg.qr(np.random.default_rng(1).standard_normal((4, 4)))[0]
    A = Q @ np.diag([2.0, 1.0, 1.0, 0.5])
    report = run_checks(A, [Case(False, False, True)])
    cond = report.cases[0].conditioning
    assert cond["near_degenerate_pairs"] == 1 and cond["fd_trustworthy"] is False
    assert any("degeneracy tolerance" in note for note in report.cases[0].notes)
