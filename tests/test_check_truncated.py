"""`svdgrad check --rank R`: passes where the top R triplets are differentiable (a random real
or complex matrix, equal discarded values), and fails, with one line naming the gap, where the
cut lies inside a degenerate pair (no derivative exists there), with both solvers."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import rotated
from typer.testing import CliRunner

from svdgrad_cli.check import Case, run_checks
from svdgrad_cli.cli.app import app

THIN_REAL = Case(False, False, True)
THIN_COMPLEX = Case(False, True, True)
SOLVERS = ["dense", "iterative"]

runner = CliRunner()


def run(*argv):
    return runner.invoke(app, [str(a) for a in argv])


def _matrices():
    rng = np.random.default_rng(7)
    return {
        "random": (rng.standard_normal((30, 20)), 3, THIN_REAL),
        "complex": (
            rng.standard_normal((30, 20)) + 1j * rng.standard_normal((30, 20)),
            3,
            THIN_COMPLEX,
        ),
        "equal discarded": (rotated([3.0, 2.0, 1.0, 1.0], 6, 4), 2, THIN_REAL),
    }


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("name", ["random", "complex", "equal discarded"])
def test_a_proper_cut_passes(name, solver):
    A, R, case = _matrices()[name]
    report = run_checks(A, [case], rank=R, solver=solver)
    assert report.passed, [(r.output, r.reference, r.rel_error) for r in report.failures()]
    refs = {r.reference for c in report.cases for r in c.counted()}
    assert {"fd", "adjoint"} <= refs and "cut" not in refs


@pytest.mark.parametrize("solver", SOLVERS)
def test_a_cut_inside_a_degenerate_pair_fails_naming_the_gap(solver):
    """diag(3, 2, 2, 1) rotated, R = 2: it used to print "check passed" with the dense solver
    (finite differences skipped, the adjoint identity of two finite results holding)."""
    A = rotated([3.0, 2.0, 2.0, 1.0], 6, 4)
    report = run_checks(A, [THIN_REAL], rank=2, solver=solver)
    assert not report.passed
    cut = [r for r in report.failures() if r.reference == "cut"]
    assert len(cut) == 1 and cut[0].output == "s_2 = s_3" and "gap" in cut[0].detail
    assert report.to_json()["passed"] is False


@pytest.mark.parametrize("solver", SOLVERS)
def test_check_command_exits_1_at_a_degenerate_cut(tmp_path, solver):
    np.save(tmp_path / "A.npy", rotated([3.0, 2.0, 2.0, 1.0], 6, 4))
    r = run("check", tmp_path / "A.npy", "--rank", 2, "--solver", solver)
    assert r.exit_code == 1, r.output
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("check failed:"), r.stderr
    assert "s_2 = s_3" in lines[0] and "gap" in lines[0]
    np.save(tmp_path / "B.npy", rotated([3.0, 2.0, 1.0, 1.0], 6, 4))
    r = run("check", tmp_path / "B.npy", "--rank", 2, "--solver", solver)
    assert r.exit_code == 0, r.stderr
