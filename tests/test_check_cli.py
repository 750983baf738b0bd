"""svdgrad check, the command: exit statuses on hard inputs, 80 columns, the closing line, a
closed pipe, --against (.npy, alignment, the random-direction warning), --rank, --steps and
--plot."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import random_matrix, rotated
from rich.console import Console
from typer.testing import CliRunner

from svdgrad_cli.cli import _common
from svdgrad_cli.cli.app import app
from svdgrad_cli.cli.check import render

runner = CliRunner()


def run(*argv, env=None):
    return runner.invoke(app, [str(a) for a in argv], env=env)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("check")
    rng = np.random.default_rng(0)
    arrays = {
        "eye": np.eye(4),
        "rankdef": rng.standard_normal((6, 2)) @ rng.standard_normal((2, 4)),
        "degenerate": rotated([3.0, 2.0, 2.0, 1.0], 4, 4),
        "A": random_matrix(np.random.default_rng(5), (6, 4), np.float64),
        "dA": np.random.default_rng(6).standard_normal((6, 4)),
    }
    for name, value in arrays.items():
        np.save(d / f"{name}.npy", value)
    return d, arrays


def _last(text):
    return text.strip().splitlines()[-1]


@pytest.mark.parametrize("name", ["eye", "rankdef", "degenerate"])
def test_check_passes_at_equal_and_zero_singular_values(files, name):
    """The issue's cases: np.eye(4), a rank-2 6 x 4 matrix, diag(3, 2, 2, 1) rotated."""
    d, _ = files
    r = run("check", d / f"{name}.npy")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert _last(r.stdout).startswith("check passed: ")
    assert "d(U Vh)" in r.stdout and "FAIL" not in r.stdout
    assert "not differentiable" in r.stdout  # the note says what was compared instead


def test_passing_check_ends_with_one_summary_line(files):
    d, _ = files
    r = run("check", d / "A.npy")
    assert r.exit_code == 0, r.stderr
    last = _last(r.stdout)
    assert last.startswith("check passed: ") and "thin-real-usv" in last
    assert "fd 4" in last and "jax 4" in last and "adjoint 1" in last and "chain rule 1" in last
    assert r.stderr == ""


def _assert_fits(text, width=80):
    for line in text.splitlines():
        assert len(line) <= width, line
    assert "…" not in text


def test_tables_fit_80_columns_on_a_terminal(files, monkeypatch):
    d, _ = files
    monkeypatch.setattr(_common, "stdout_is_terminal", lambda: True)
    r = run("check", d / "A.npy", "--full", "--complex", "--steps", env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.stderr
    _assert_fits(r.stdout)
    assert "full-complex-usv" in r.stdout
    for header in ("output", "reference", "error", "FD noise", "tolerance", "result"):
        assert header in r.stdout


def test_render_at_80_columns_every_name():
    """Every case name, output and reference, and a failing row, at 80 columns."""
    from svdgrad_cli.check import ALL_CASES, CaseReport, Report, Row

    cases = []
    for case in ALL_CASES:
        name = case.name + (" r=12" if not case.full_matrices else "")
        rows = [
            Row(name, out, ref, 1.23e-11, 1e-10, 4.5e-12, info=ref == "naive rule")
            for out, ref in [
                ("d(U S Vh)", "fd"),
                ("d(UU^H)", "naive rule"),
                ("dA", "chain rule"),
                ("gA", "adjoint"),
                ("derr", "against"),
            ]
        ]
        rows.append(Row(name, "dVh", "jax", 3.0, 1e-10))
        cond = {"min_singular_value": 1e-300, "min_gap": 0.0, "near_degenerate_pairs": 12}
        cases.append(
            CaseReport(name, "complex128", (1000, 20000, 400), rows, cond, ["a note " * 30])
        )
    console = Console(width=80, record=True, force_terminal=False)
    render(Report(cases), console)
    text = console.export_text()
    _assert_fits(text)
    for case in cases:
        assert case.case in text
    assert "FAIL" in text and "info" in text and "chain rule" in text
    assert _last(text).startswith("check failed: 8 of 40 comparisons")  # info rows: not counted


def test_render_at_80_columns_truncated(files):
    from svdgrad_cli.check import Case, run_checks

    _, arrays = files
    report = run_checks(arrays["A"], [Case(False, False, True)], rank=2, steps=True)
    console = Console(width=80, record=True, force_terminal=False)
    render(report, console)
    text = console.export_text()
    _assert_fits(text)
    assert "thin-real-usv r=2" in text and "naive rule" in text and "d(U S Vh)" in text
    assert "<- best" in text


def test_closed_pipe_ends_quietly(files):
    """`svdgrad check A.npy --all-cases | head -1`: the reader goes away; the command ends
    without a message and without the status of a failed check."""
    d, _ = files
    p = subprocess.Popen(
        [sys.executable, "-m", "svdgrad_cli", "check", str(d / "A.npy"), "--values-only"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    p.stdout.close()  # before anything is written: every write meets a closed pipe
    _, err = p.communicate(timeout=300)
    assert p.returncode in (0, 141), (p.returncode, err)
    assert err == b""


def test_against_a_npy_named_like_the_output(files):
    from svdgrad_cli import svd_jvp

    d, arrays = files
    _, (dU, dS, dVh) = svd_jvp(arrays["A"], arrays["dA"])
    np.save(d / "dS.npy", np.asarray(dS))
    r = run("check", d / "A.npy", "--dA", d / "dA.npy", "--against", d / "dS.npy")
    assert r.exit_code == 0, r.stderr
    assert "against" in r.stdout
    np.save(d / "mine.npy", np.asarray(dS))
    r = run("check", d / "A.npy", "--dA", d / "dA.npy", "--against", d / "mine.npy")
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "dS.npy" in r.stderr


def test_against_aligns_a_flipped_sign(files):
    from svdgrad_cli import svd_jvp

    d, arrays = files
    _, (dU, dS, dVh) = svd_jvp(arrays["A"], arrays["dA"])
    dU, dVh = np.array(dU), np.array(dVh)
    dU[:, 1] *= -1
    dVh[1] *= -1
    np.savez(d / "flipped.npz", dU=dU, dVh=dVh, dS=np.asarray(dS))
    r = run("check", d / "A.npy", "--dA", d / "dA.npy", "--against", d / "flipped.npz")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert "sign of 1 singular pair" in r.stdout


def test_against_without_dA_warns_of_the_random_direction(files):
    d, _ = files
    r = run("check", d / "A.npy", "--against", d / "flipped.npz")
    assert r.exit_code == 1
    assert "no --dA was given" in r.stderr and "random direction" in r.stderr
    assert _last(r.stderr).startswith("check failed: thin-real-usv")


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--rank", "0"], "--rank 0"),
        (["--rank", "5"], "min(m, n) = 4"),
        (["--rank", "2", "--full"], "--full"),
        (["--solver", "dense"], "--rank"),
        (["--factors", "f.npz"], "--against"),
        (["--plot", "steps.pdf"], "FILE.png or FILE.svg"),
    ],
)
def test_bad_calls_exit_2_with_one_line(files, argv, words):
    d, _ = files
    r = run("check", d / "A.npy", *argv)
    assert r.exit_code == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], r.stderr


def test_complex_tangent_for_a_real_case_exits_2(files):
    d, arrays = files
    np.save(d / "dAc.npy", arrays["dA"] * (1 + 1j))
    r = run("check", d / "A.npy", "--dA", d / "dAc.npy")
    assert r.exit_code == 2 and "--complex" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_rank_check_shows_the_naive_rule(files):
    d, _ = files
    r = run("check", d / "A.npy", "--rank", "2", "--solver", "dense", "--json", d / "t.json")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert "naive rule" in r.stdout and "naive thin rule" in r.stdout
    rep = json.loads((d / "t.json").read_text())
    rows = rep["cases"][0]["rows"]
    assert {r["verdict"] for r in rows} == {"PASS", "info"}
    assert rep["cases"][0]["case"] == "thin-real-usv r=2"


def test_steps_table_and_json(files):
    d, _ = files
    r = run("check", d / "A.npy", "--steps", "--json", d / "s.json")
    assert r.exit_code == 0, r.stderr
    assert "<- best" in r.stdout
    steps = json.loads((d / "s.json").read_text())["cases"][0]["steps"]
    assert len(steps) == 25 and all(set(s) == {"h", "error", "best"} for s in steps)
    assert sum(s["best"] for s in steps) == 1
    assert steps[0]["h"] == pytest.approx(0.1) and steps[-1]["h"] == pytest.approx(1e-13)


def test_plot_without_matplotlib_names_the_extra(files, monkeypatch):
    d, _ = files
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises
    r = run("check", d / "A.npy", "--plot", d / "steps.png")
    assert r.exit_code == 2
    assert "svdgrad[plot]" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (d / "steps.png").exists()


@pytest.mark.parametrize("ext, magic", [("png", b"\x89PNG"), ("svg", b"<?xml")])
def test_plot_draws_the_steps(files, ext, magic):
    pytest.importorskip("matplotlib")
    d, _ = files
    r = run("check", d / "A.npy", "--plot", d / f"steps.{ext}")
    assert r.exit_code == 0, r.stderr
    assert (d / f"steps.{ext}").read_bytes().startswith(magic)
    assert "<- best" in r.stdout  # --plot implies --steps
