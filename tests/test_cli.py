"""The svdgrad command line: commands, sources, destinations, exit statuses."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from svdgrad_cli.cli import _common
from svdgrad_cli.cli.app import app

runner = CliRunner()


def run(*argv, input=None):
    return runner.invoke(app, [str(a) for a in argv], input=input)


def sub(*argv, input=None):
    return subprocess.run(
        [sys.executable, "-m", "svdgrad_cli", *map(str, argv)],
        input=input,
        capture_output=True,
        timeout=120,
    )


def npy_bytes(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(7)
    A = rng.standard_normal((4, 3))
    dA = rng.standard_normal((4, 3))
    gS = rng.standard_normal(3)
    gU = rng.standard_normal((4, 3))
    np.save(tmp_path / "A.npy", A)
    np.save(tmp_path / "dA.npy", dA)
    np.save(tmp_path / "gS.npy", gS)
    np.save(tmp_path / "gU.npy", gU)
    np.savez(tmp_path / "in.npz", A=A, dA=dA)
    with h5py.File(tmp_path / "in.h5", "w") as f:
        f["/g/A"] = A
        f["/g/dA"] = dA
    return {"A": A, "dA": dA, "gS": gS, "gU": gU, "dir": tmp_path}


def expected_jvp(A, dA, **kw):
    from svdgrad_cli.api import svd_jvp

    (U, S, Vh), (dU, dS, dVh) = svd_jvp(A, dA, **kw)
    return dict(U=U, S=S, Vh=Vh, dU=dU, dS=dS, dVh=dVh)


def assert_close(got, want):
    for name, value in want.items():
        np.testing.assert_allclose(got[name], np.asarray(value), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- sources


@pytest.mark.parametrize(
    "a_spec, da_spec",
    [
        ("A.npy", "dA.npy"),
        ("in.npz:A", "in.npz:dA"),
        ("in.h5:/g/A", "in.h5:/g/dA"),
        ("A.npy", "-"),
    ],
    ids=["npy", "npz", "h5", "stdin"],
)
def test_jvp_every_source_kind_matches_library(data, a_spec, da_spec):
    d = data["dir"]
    stdin = npy_bytes(data["dA"]) if da_spec == "-" else None
    out = d / "out.npz"
    da_arg = da_spec if da_spec == "-" else d / da_spec
    r = run("jvp", d / a_spec, da_arg, "-o", out, input=stdin)
    assert r.exit_code == 0, r.stderr
    with np.load(out) as z:
        got = dict(z)
    assert sorted(got) == sorted(["U", "S", "Vh", "dU", "dS", "dVh"])
    assert_close(got, expected_jvp(data["A"], data["dA"]))


def test_jvp_full_values_only_and_complex(data):
    d = data["dir"]
    r = run("jvp", d / "A.npy", d / "dA.npy", "--full", "--complex", "-o", d / "f.npz")
    assert r.exit_code == 0, r.stderr
    with np.load(d / "f.npz") as z:
        assert z["U"].shape == (4, 4) and z["dU"].dtype == np.complex128
        want = expected_jvp(data["A"] + 0j, data["dA"] + 0j, full_matrices=True)
        assert_close(dict(z), want)
    r = run("jvp", d / "A.npy", d / "dA.npy", "--values-only", "-o", d / "s.npz")
    assert r.exit_code == 0, r.stderr
    with np.load(d / "s.npz") as z:
        assert sorted(z) == ["S", "dS"]


def test_batch_broadcasts(data):
    d = data["dir"]
    np.save(d / "dA3.npy", np.stack([data["dA"]] * 3))
    r = run("jvp", d / "A.npy", d / "dA3.npy", "-o", d / "b.npz")
    assert r.exit_code == 0, r.stderr
    with np.load(d / "b.npz") as z:
        assert z["dU"].shape == (3, 4, 3) and z["U"].shape == (4, 3)


# --------------------------------------------------------------------------- destinations


def test_destinations(data):
    d = data["dir"]
    a, da = d / "A.npy", d / "dA.npy"
    want = expected_jvp(data["A"], data["dA"])
    assert run("jvp", a, da, "-o", d / "o.h5").exit_code == 0
    assert run("jvp", a, da, "-o", f"{d / 'o.h5'}:/grp/sub").exit_code == 0
    with h5py.File(d / "o.h5", "r") as f:
        np.testing.assert_allclose(f["dU"][()], want["dU"], atol=1e-12)
        np.testing.assert_allclose(f["/grp/sub/dS"][()], want["dS"], atol=1e-12)
    r = run("jvp", a, da, "--only", "dS", "-o", d / "dS.npy")
    assert r.exit_code == 0, r.stderr
    np.testing.assert_allclose(np.load(d / "dS.npy"), want["dS"], atol=1e-12)


def test_stdout_is_npz_or_npy_and_terminal_gets_summary(data, monkeypatch):
    d = data["dir"]
    r = run("jvp", d / "A.npy", d / "dA.npy")  # stdout not a terminal: .npz stream
    assert r.exit_code == 0
    with np.load(io.BytesIO(r.stdout_bytes)) as z:
        assert "dVh" in z
    r = run("jvp", d / "A.npy", d / "dA.npy", "-o", "-", "--only", "dU")
    assert r.exit_code == 0
    np.testing.assert_allclose(
        np.load(io.BytesIO(r.stdout_bytes)), expected_jvp(data["A"], data["dA"])["dU"], atol=1e-12
    )
    monkeypatch.setattr(_common, "stdout_is_terminal", lambda: True)
    r = run("jvp", d / "A.npy", d / "dA.npy")
    assert r.exit_code == 0
    assert "dVh" in r.stdout and "float64" in r.stdout
    assert not r.stdout_bytes.startswith(b"PK")


def test_subprocess_binary_stdin_and_stdout(data):
    d = data["dir"]
    p = sub("jvp", "-", d / "dA.npy", input=npy_bytes(data["A"]))
    assert p.returncode == 0, p.stderr
    with np.load(io.BytesIO(p.stdout)) as z:
        assert_close(dict(z), expected_jvp(data["A"], data["dA"]))
    p = sub("vjp", d / "A.npy", "--gS", "-", "--only", "gA", "-o", "-", input=npy_bytes(data["gS"]))
    assert p.returncode == 0, p.stderr
    from svdgrad_cli.api import svd_vjp

    want = svd_vjp(data["A"], gS=data["gS"])
    np.testing.assert_allclose(np.load(io.BytesIO(p.stdout)), want, atol=1e-12)


# --------------------------------------------------------------------------- vjp


def test_vjp_matches_library_and_gauge_handling(data):
    from svdgrad_cli.api import svd_vjp

    d = data["dir"]
    r = run("vjp", d / "A.npy", "--gS", d / "gS.npy", "--gU", d / "gU.npy", "-o", d / "g.npz")
    assert r.exit_code == 0, r.stderr
    with np.load(d / "g.npz") as z:
        np.testing.assert_allclose(
            z["gA"], svd_vjp(data["A"], gU=data["gU"], gS=data["gS"]), atol=1e-12
        )
        assert z["S"].shape == (3,)
    # a random complex gU depends on the phase of the singular vectors
    np.save(d / "gUc.npy", data["gU"] + 1j * data["gU"][::-1])
    args = ("vjp", d / "A.npy", "--gU", d / "gUc.npy", "--complex", "-o", d / "c.npz")
    r = run(*args)
    assert r.exit_code == 1
    assert "arbitrary gauge" in r.stderr and "--allow-gauge-dependence" in r.stderr
    assert not (d / "c.npz").exists()
    r = run(*args, "--allow-gauge-dependence")
    assert r.exit_code == 0 and "warning" in r.stderr
    assert (d / "c.npz").exists()


def test_tolerance_warnings(data):
    d = data["dir"]
    np.save(d / "I.npy", np.eye(3))
    r = run("jvp", d / "I.npy", d / "I.npy", "-o", d / "w.npz")
    assert r.exit_code == 0
    assert "near-degenerate" in r.stderr and "--degeneracy-tol" in r.stderr
    r = run("jvp", d / "A.npy", d / "dA.npy", "--eps", "1e-3", "-o", d / "w.npz")
    assert "Lorentzian broadening --eps 0.001" in r.stderr
    np.save(d / "R.npy", np.outer([1.0, 2, 3, 4], [1.0, 1, 2]))
    r = run("jvp", d / "R.npy", d / "dA.npy", "-o", d / "w.npz")
    assert "rank tolerance" in r.stderr


# --------------------------------------------------------------------------- check


def test_check_passes_and_writes_json(data):
    d = data["dir"]
    r = run("check", d / "A.npy", "--json", d / "rep.json")
    assert r.exit_code == 0, r.stderr
    assert "thin-real-usv" in r.stdout and "PASS" in r.stdout and "FD trustworthy" in r.stdout
    rep = json.loads((d / "rep.json").read_text())
    assert rep["passed"] is True
    r = run("check", d / "A.npy", "--values-only", "--complex", "--json", "-")
    assert r.exit_code == 0
    assert json.loads(r.stdout)["cases"][0]["case"] == "thin-complex-s"


def test_check_all_cases_selects_eight(data, monkeypatch):
    import svdgrad_cli.check as chk

    seen = []

    def fake(A, cases, **kw):
        seen.extend(c.name for c in cases)
        return chk.Report([chk.CaseReport(c.name, "float64", A.shape) for c in cases])

    monkeypatch.setattr(chk, "run_checks", fake)
    r = run("check", data["dir"] / "A.npy", "--all-cases")
    assert r.exit_code == 0, r.stderr
    assert sorted(seen) == sorted(c.name for c in chk.ALL_CASES)
    for name in seen:
        assert name in r.stdout


def test_check_against_wrong_result_fails_naming_output(data):
    d = data["dir"]
    want = expected_jvp(data["A"], data["dA"])
    np.savez(d / "good.npz", dS=np.asarray(want["dS"]), dU=np.asarray(want["dU"]))
    r = run("check", d / "A.npy", "--dA", d / "dA.npy", "--against", d / "good.npz")
    assert r.exit_code == 0, r.stderr
    with h5py.File(d / "bad.h5", "w") as f:
        f["/mine/dU"] = np.asarray(want["dU"]) + 0.1
        f["/mine/dS"] = np.asarray(want["dS"])
    r = run("check", d / "A.npy", "--dA", d / "dA.npy", "--against", f"{d / 'bad.h5'}:/mine")
    assert r.exit_code == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("check failed: thin-real-usv dU against")
    assert "dS" not in last


# --------------------------------------------------------------------------- exit statuses


def test_exit_130_on_interrupt_leaves_no_file(data, monkeypatch):
    import svdgrad_cli.api as api

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "svd_jvp", boom)
    d = data["dir"]
    r = run("jvp", d / "A.npy", d / "dA.npy", "-o", d / "x.npz")
    assert r.exit_code == 130 and "interrupted" in r.stderr
    assert not (d / "x.npz").exists()


def test_exit_1_on_computation_failure(data, monkeypatch):
    import svdgrad_cli.api as api

    def boom(*a, **k):
        raise FloatingPointError("the solver diverged")

    monkeypatch.setattr(api, "svd_vjp", boom)
    d = data["dir"]
    r = run("vjp", d / "A.npy", "--gS", d / "gS.npy", "-o", d / "x.npz")
    assert r.exit_code == 1
    assert (
        r.stderr.strip()
        == "error: the computation failed (FloatingPointError: the solver diverged)"
    )


def test_usage_error_is_one_line_in_main(data):
    p = sub("jvp", data["dir"] / "A.npy", data["dir"] / "dA.npy", "--bogus")
    assert p.returncode == 2
    assert p.stderr.decode().strip().startswith("error: No such option: --bogus")
    assert b"Traceback" not in p.stderr


def test_gpu_when_none_exits_2(data):
    import jax

    try:
        has_gpu = bool(jax.devices("gpu"))
    except RuntimeError:
        has_gpu = False
    if has_gpu:
        pytest.skip("a GPU is present")
    r = run("jvp", data["dir"] / "A.npy", data["dir"] / "dA.npy", "--device", "gpu")
    assert r.exit_code == 2 and "--device gpu" in r.stderr


# --------------------------------------------------------------------------- help, version


@pytest.mark.parametrize("command", ["jvp", "vjp", "check"])
def test_help_has_example(command):
    r = run(command, "--help")
    assert r.exit_code == 0
    assert "Example" in r.stdout and f"$ svdgrad {command}" in r.stdout


def test_version():
    r = run("--version")
    assert r.exit_code == 0 and r.stdout.startswith("svdgrad ")


def test_help_does_not_import_jax():
    code = (
        "import sys; from typer.testing import CliRunner; from svdgrad_cli.cli.app import app; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0; "
        "r = CliRunner().invoke(app, ['--version']); assert r.exit_code == 0; "
        "assert 'jax' not in sys.modules, 'jax imported'"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr.decode()
