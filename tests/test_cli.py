"""The svdgrad command line: commands, sources, destinations, exit statuses."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
from helpers import tol
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
    assert (
        "the cotangents do not determine the gradient: the result depends on the arbitrary "
        "phase of complex singular pairs (relative" in r.stderr
    )
    assert "--allow-gauge-dependence" in r.stderr
    assert not (d / "c.npz").exists()
    r = run(*args, "--allow-gauge-dependence")
    assert r.exit_code == 0
    assert (
        "warning: the cotangents do not determine the gradient: the result depends on the "
        "arbitrary phase" in r.stderr
    )
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


# --------------------------------------------------------------------------- svd


def read_dest(spec, names):
    """The named arrays of a .npz, an .h5[:/group] or (one name) a .npy destination."""
    spec = str(spec)
    if spec.endswith(".npy"):
        return {names[0]: np.load(spec)}
    if ".h5" in spec:
        path, _, group = spec.partition(":")
        with h5py.File(path, "r") as f:
            return {n: f[f"{group or '/'}/{n}"][()] for n in names}
    with np.load(spec) as z:
        assert sorted(z) == sorted(names)
        return {n: z[n] for n in names}


def well_separated(rng, shape, dtype, values=None):
    """Q diag(values) W^H with values 1 .. k + 1 unless given (descending)."""
    m, n = shape[-2:]
    k = min(m, n)
    cplx = np.issubdtype(np.dtype(dtype), np.complexfloating)

    def unitary(size):
        X = rng.standard_normal(shape[:-2] + (size, size))
        if cplx:
            X = X + 1j * rng.standard_normal(shape[:-2] + (size, size))
        return np.linalg.qr(X)[0]

    s = np.linspace(k + 1.0, 1.0, k) if values is None else np.asarray(values, float)
    D = np.zeros(shape[:-2] + (m, n))
    D[..., np.arange(k), np.arange(k)] = s
    return (unitary(m) @ D @ np.conj(np.swapaxes(unitary(n), -1, -2))).astype(dtype)


SVD_ROUND_TRIPS = [
    # (id, destination, flags, names written, full)
    ("npz", "f.npz", [], ["U", "S", "Vh"], False),
    ("h5-group-full", "f.h5:/svd", ["--full"], ["U", "S", "Vh"], True),
    ("only-S-npy", "s.npy", ["--only", "S"], ["S"], False),
    ("values-only", "v.npz", ["--values-only"], ["S"], False),
    ("values-only-h5", "v.h5", ["--values-only"], ["S"], False),
]


@pytest.mark.parametrize("dtype", ["float64", "float32", "complex128", "complex64"])
@pytest.mark.parametrize("shape", [(6, 4), (3, 5)], ids=["tall", "wide"])
@pytest.mark.parametrize(
    "dest, flags, names, full",
    [c[1:] for c in SVD_ROUND_TRIPS],
    ids=[c[0] for c in SVD_ROUND_TRIPS],
)
def test_svd_round_trip(tmp_path, dtype, shape, dest, flags, names, full):
    rng = np.random.default_rng(5)
    A = rng.standard_normal(shape).astype(dtype)
    if np.issubdtype(A.dtype, np.complexfloating):
        A = (A + 1j * rng.standard_normal(shape)).astype(dtype)
    np.save(tmp_path / "A.npy", A)
    r = run("svd", tmp_path / "A.npy", *flags, "-o", tmp_path / dest)
    assert r.exit_code == 0, r.stderr
    got = read_dest(tmp_path / dest, names)
    real = np.finfo(A.dtype).dtype
    t = tol(A.dtype)
    want_s = np.linalg.svd(A.astype(np.complex128 if A.dtype.kind == "c" else np.float64))
    want_s = want_s.S
    assert got["S"].dtype == real
    np.testing.assert_allclose(got["S"], want_s, rtol=t, atol=t * want_s[0])
    if "U" not in names:
        return
    m, n = shape
    k = min(m, n)
    U, S, Vh = got["U"], got["S"], got["Vh"]
    assert U.dtype == A.dtype and Vh.dtype == A.dtype
    assert U.shape == ((m, m) if full else (m, k)) and Vh.shape == ((n, n) if full else (k, n))
    rebuilt = (U[:, :k] * S) @ Vh[:k]
    assert np.linalg.norm(rebuilt - A) <= t * np.linalg.norm(A)
    for Q in (U.conj().T @ U, Vh @ Vh.conj().T):
        np.testing.assert_allclose(Q, np.eye(len(Q)), atol=t)


def test_svd_stdout_stack_stream_and_complex(tmp_path, monkeypatch):
    rng = np.random.default_rng(6)
    A = rng.standard_normal((5, 4, 3))
    np.save(tmp_path / "A.npy", A)
    want = np.linalg.svd(A, compute_uv=False)
    p = sub("svd", "-", "--values-only", input=npy_bytes(A))  # a pipe gets a .npz stream
    assert p.returncode == 0, p.stderr
    with np.load(io.BytesIO(p.stdout)) as z:
        np.testing.assert_allclose(z["S"], want, rtol=tol(A.dtype))
    r = run("svd", tmp_path / "A.npy", "-o", tmp_path / "s.h5:/svd", "--chunk", 2)
    assert r.exit_code == 0, r.stderr
    got = read_dest(f"{tmp_path / 's.h5'}:/svd", ["U", "S", "Vh"])
    np.testing.assert_allclose(got["S"], want, rtol=tol(A.dtype))
    rebuilt = (got["U"] * got["S"][..., None, :]) @ got["Vh"]
    np.testing.assert_allclose(rebuilt, A, atol=tol(A.dtype) * want.max())
    r = run("svd", tmp_path / "A.npy", "--complex", "--only", "U", "-o", tmp_path / "U.npy")
    assert r.exit_code == 0, r.stderr
    assert np.load(tmp_path / "U.npy").dtype == np.complex128
    monkeypatch.setattr(_common, "stdout_is_terminal", lambda: True)
    r = run("svd", tmp_path / "A.npy")
    assert r.exit_code == 0 and "Vh" in r.stdout and "5x4x3" in r.stdout


# --------------------------------------------------------------------------- vjp --factors
#
# A user computes a loss from the factors `svdgrad svd` wrote, takes its cotangents in numpy and
# asks `svdgrad vjp --factors` for the gradient with respect to A. The reference is a central
# finite difference of the same loss as a function of A, through numpy's SVD (float64).


def cubic_loss(U, S, Vh, B):
    """sum((U S^3 Vh) * B) = sum(A A^T A * B): gauge invariant."""
    k = len(S)
    return np.sum(((U[:, :k] * S**3) @ Vh[:k]) * B)


def cubic_cotangents(U, S, Vh, B):
    k = len(S)
    gU = np.zeros(U.shape)
    gU[:, :k] = B @ Vh[:k].T * S**3
    gS = 3 * S**2 * np.einsum("ij,ij->j", U[:, :k], B @ Vh[:k].T)
    gVh = np.zeros(Vh.shape)
    gVh[:k] = (S**3)[:, None] * (U[:, :k].T @ B)
    return gU, gS, gVh


def projector_loss(U, S, Vh, B, r=2):
    """sum(U_r U_r^T * B) for the r leading left singular vectors: gauge invariant."""
    return np.sum((U[:, :r] @ U[:, :r].T) * B)


def projector_cotangents(U, S, Vh, B, r=2):
    gU = np.zeros(U.shape)
    gU[:, :r] = (B + B.T) @ U[:, :r]
    return gU, np.zeros(S.shape), np.zeros(Vh.shape)


LOSSES = [
    # (id, loss, cotangents, shape of B given A's (m, n), full SVD)
    ("cubic-thin", cubic_loss, cubic_cotangents, lambda m, n: (m, n), False),
    ("cubic-full", cubic_loss, cubic_cotangents, lambda m, n: (m, n), True),
    ("projector-thin", projector_loss, projector_cotangents, lambda m, n: (m, m), False),
    ("projector-full", projector_loss, projector_cotangents, lambda m, n: (m, m), True),
]


def fd_gradient(loss, A, B, full, h=1e-6):
    """Central differences of loss(numpy's SVD of A) in every entry of A."""
    G = np.zeros_like(A)
    for idx in np.ndindex(A.shape):
        E = np.zeros_like(A)
        E[idx] = h
        plus = loss(*np.linalg.svd(A + E, full_matrices=full), B)
        minus = loss(*np.linalg.svd(A - E, full_matrices=full), B)
        G[idx] = (plus - minus) / (2 * h)
    return G


def rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def save_cotangents(d, gU, gS, gVh):
    for name, g in (("gU", gU), ("gS", gS), ("gVh", gVh)):
        np.save(d / f"{name}.npy", g)
    return ["--gU", d / "gU.npy", "--gS", d / "gS.npy", "--gVh", d / "gVh.npy"]


@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (5, 5)], ids=["tall", "wide", "square"])
@pytest.mark.parametrize(
    "loss, cotangents, b_shape, full", [c[1:] for c in LOSSES], ids=[c[0] for c in LOSSES]
)
def test_svd_then_user_loss_then_vjp_factors_matches_fd(
    tmp_path, shape, loss, cotangents, b_shape, full
):
    rng = np.random.default_rng(8)
    A = well_separated(rng, shape, np.float64)
    B = rng.standard_normal(b_shape(*shape))
    np.save(tmp_path / "A.npy", A)
    f = tmp_path / "f.npz"
    r = run("svd", tmp_path / "A.npy", *(["--full"] if full else []), "-o", f)
    assert r.exit_code == 0, r.stderr
    with np.load(f) as z:
        U, S, Vh = z["U"], z["S"], z["Vh"]
    cots = save_cotangents(tmp_path, *cotangents(U, S, Vh, B))
    r = run("vjp", tmp_path / "A.npy", "--factors", f, *cots, "-o", tmp_path / "g.npz")
    assert r.exit_code == 0, r.stderr
    assert r.stderr == ""
    gA = np.load(tmp_path / "g.npz")["gA"]
    assert rel(gA, fd_gradient(loss, A, B, full)) < tol(np.float64, "fd")


@pytest.mark.parametrize("flip", [[0], [1, 3], [0, 1, 2, 3]], ids=["one", "two", "all"])
def test_sign_flipped_factors_give_the_same_gradient(tmp_path, flip):
    """Factors with other signs (as numpy or torch may return them), cotangents taken there."""
    rng = np.random.default_rng(9)
    A = well_separated(rng, (6, 4), np.float64)
    B = rng.standard_normal((6, 4))
    np.save(tmp_path / "A.npy", A)
    r = run("svd", tmp_path / "A.npy", "-o", tmp_path / "f.npz")
    assert r.exit_code == 0, r.stderr
    with np.load(tmp_path / "f.npz") as z:
        U, S, Vh = z["U"].copy(), z["S"], z["Vh"].copy()
    U[:, flip] *= -1
    Vh[flip] *= -1
    np.savez(tmp_path / "flipped.npz", U=U, S=S, Vh=Vh)
    cots = save_cotangents(tmp_path, *cubic_cotangents(U, S, Vh, B))
    fd = fd_gradient(cubic_loss, A, B, False)
    r = run("vjp", tmp_path / "A.npy", "--factors", tmp_path / "flipped.npz", *cots, "-o", "-")
    assert r.exit_code == 0, r.stderr
    with np.load(io.BytesIO(r.stdout_bytes)) as z:
        assert rel(z["gA"], fd) < tol(np.float64, "fd")
    # without --factors the same cotangents pair with svdgrad's own signs: a wrong gradient
    r = run("vjp", tmp_path / "A.npy", *cots, "-o", "-")
    assert r.exit_code == 0, r.stderr
    with np.load(io.BytesIO(r.stdout_bytes)) as z:
        assert rel(z["gA"], fd) > 1e-2


def test_vjp_factors_batch_h5_stream_and_values_only(tmp_path):
    """Stacks: .npz factors in memory, .h5 factors from `svdgrad svd` and `svdgrad jvp`, streamed."""
    rng = np.random.default_rng(10)
    A = well_separated(rng, (5, 6, 4), np.float64)
    B = rng.standard_normal((5, 6, 4))
    # the closed form of the cubic loss's gradient: B A^T A + A B^T A + A A^T B
    At = np.swapaxes(A, -1, -2)
    want = B @ At @ A + A @ np.swapaxes(B, -1, -2) @ A + A @ At @ B
    with h5py.File(tmp_path / "data.h5", "w") as h5:
        h5["A"] = A
        h5["dA"] = rng.standard_normal(A.shape)
    src = f"{tmp_path / 'data.h5'}:/A"
    assert run("svd", src, "-o", tmp_path / "f.npz").exit_code == 0
    assert run("svd", src, "-o", f"{tmp_path / 'f.h5'}:/svd", "--chunk", 2).exit_code == 0
    r = run("jvp", src, f"{tmp_path / 'data.h5'}:/dA", "-o", f"{tmp_path / 'f.h5'}:/jvp")
    assert r.exit_code == 0, r.stderr
    for factors, extra in (
        (tmp_path / "f.npz", []),
        (f"{tmp_path / 'f.h5'}:/svd", []),
        (f"{tmp_path / 'f.h5'}:/svd", ["--chunk", "2"]),
        (f"{tmp_path / 'f.h5'}:/jvp", ["--chunk", "3"]),
    ):
        got = read_dest(factors, ["U", "S", "Vh"])
        U, S, Vh = got["U"], got["S"], got["Vh"]
        gU = B @ np.swapaxes(Vh, -1, -2) * S[..., None, :] ** 3
        gS = 3 * S**2 * np.einsum("bij,bij->bj", U, B @ np.swapaxes(Vh, -1, -2))
        gVh = S[..., :, None] ** 3 * (np.swapaxes(U, -1, -2) @ B)
        cots = save_cotangents(tmp_path, gU, gS, gVh)
        out = tmp_path / ("g.h5" if extra else "g.npz")
        r = run("vjp", src, "--factors", factors, *cots, *extra, "-o", out)
        assert r.exit_code == 0, (factors, r.stderr)
        gA = read_dest(out, ["gA", "S"])["gA"]
        assert rel(gA, want) < tol(np.float64, "ref"), factors
        out.unlink()
    # --values-only with factors: gA = U diag(gS) Vh, whatever the factors' signs
    with np.load(tmp_path / "f.npz") as z:
        U, Vh = -z["U"], -z["Vh"]
        np.savez(tmp_path / "neg.npz", U=U, S=z["S"], Vh=Vh)
    gS = rng.standard_normal((5, 4))
    np.save(tmp_path / "gS.npy", gS)
    r = run("vjp", src, "--factors", tmp_path / "neg.npz", "--gS", tmp_path / "gS.npy",
            "--values-only", "--only", "gA", "-o", tmp_path / "gA.npy")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    np.testing.assert_allclose(
        np.load(tmp_path / "gA.npy"), (U * gS[..., None, :]) @ Vh, atol=tol(np.float64, "ref")
    )


def test_vjp_complex_factors_of_a_real_matrix(tmp_path):
    """Complex factors (other phases) of a real A: the work is done in complex arithmetic."""
    rng = np.random.default_rng(12)
    A = well_separated(rng, (5, 3), np.float64)
    np.save(tmp_path / "A.npy", A)
    U, S, Vh = np.linalg.svd(A.astype(complex), full_matrices=False)
    phase = np.exp(1j * rng.uniform(0, 2 * np.pi, 3))
    np.savez(tmp_path / "f.npz", U=U * phase, S=S, Vh=Vh * phase.conj()[:, None])
    np.save(tmp_path / "gS.npy", np.ones(3))
    r = run("vjp", tmp_path / "A.npy", "--factors", tmp_path / "f.npz", "--gS",
            tmp_path / "gS.npy", "--only", "gA", "-o", tmp_path / "gA.npy")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    np.testing.assert_allclose(np.load(tmp_path / "gA.npy"), U @ Vh, atol=tol(np.float64, "ref"))


# --------------------------------------------------------------------------- degenerate spectra


@pytest.fixture
def degenerate(tmp_path):
    """A = Q diag(3, 2, 2, 1) W^T, a random gS, a random tangent."""
    rng = np.random.default_rng(13)
    A = well_separated(rng, (4, 4), np.float64, values=[3.0, 2.0, 2.0, 1.0])
    np.save(tmp_path / "A.npy", A)
    np.save(tmp_path / "gS.npy", rng.standard_normal(4))
    np.save(tmp_path / "gS_even.npy", np.array([0.5, -1.0, -1.0, 2.0]))
    np.save(tmp_path / "dA.npy", rng.standard_normal((4, 4)))
    np.save(tmp_path / "dA3.npy", rng.standard_normal((3, 4, 4)))
    return tmp_path


def test_vjp_gS_split_inside_a_degenerate_block_is_refused(degenerate):
    d = degenerate
    args = ("vjp", d / "A.npy", "--gS", d / "gS.npy", "-o", d / "g.npz")
    r = run(*args)
    assert r.exit_code == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "error: the cotangents do not determine the gradient: gS differs inside a block of equal "
        "singular values (relative "
    )
    assert "how the equal values split" in last and "--allow-gauge-dependence" in last
    assert not (d / "g.npz").exists()
    r = run(*args, "--allow-gauge-dependence")
    assert r.exit_code == 0, r.stderr
    assert "warning: the cotangents do not determine the gradient: gS differs inside" in r.stderr
    assert (d / "g.npz").exists()
    # gS equal on the block: a smooth function of A, accepted without a gauge warning
    r = run("vjp", d / "A.npy", "--gS", d / "gS_even.npy", "-o", d / "e.npz")
    assert r.exit_code == 0, r.stderr
    assert "do not determine" not in r.stderr


def test_vjp_null_space_and_extra_columns_are_named(tmp_path):
    rng = np.random.default_rng(14)
    np.save(tmp_path / "R.npy", rng.standard_normal((5, 2)) @ rng.standard_normal((2, 3)))
    np.save(tmp_path / "gU.npy", rng.standard_normal((5, 3)))
    r = run("vjp", tmp_path / "R.npy", "--gU", tmp_path / "gU.npy", "-o", tmp_path / "g.npz")
    assert r.exit_code == 1
    assert "depends on singular vectors of the null space" in r.stderr
    np.save(tmp_path / "A.npy", well_separated(rng, (5, 3), np.float64))
    np.save(tmp_path / "gUf.npy", rng.standard_normal((5, 5)))
    r = run("vjp", tmp_path / "A.npy", "--gU", tmp_path / "gUf.npy", "--full")
    assert r.exit_code == 1
    assert "depends on the extra columns of a full SVD (relative" in r.stderr
    assert "null space" not in r.stderr
    r = run("vjp", tmp_path / "A.npy", "--gU", tmp_path / "gUf.npy", "--full",
            "--allow-gauge-dependence", "-o", tmp_path / "g.npz")  # fmt: skip
    assert r.exit_code == 0 and "warning: the cotangents do not determine" in r.stderr


def test_jvp_selects_the_basis_a_tangent_picks_and_says_so(degenerate):
    d = degenerate
    r = run("jvp", d / "A.npy", d / "dA.npy", "-o", d / "j.npz")
    assert r.exit_code == 0, r.stderr
    assert "U and Vh are returned in the basis the tangent selects" in r.stderr
    assert "dS there holds the eigenvalues" in r.stderr
    A, dA = np.load(d / "A.npy"), np.load(d / "dA.npy")
    t = tol(np.float64, "ref")
    with np.load(d / "j.npz") as z:
        U, S, Vh, dS = z["U"], z["S"], z["Vh"], z["dS"]
    np.testing.assert_allclose((U * S) @ Vh, A, atol=t)
    P = U.T @ dA @ Vh.T
    H = (P + P.T)[1:3, 1:3] / 2  # the block of the equal values 2, 2
    np.testing.assert_allclose(H, np.diag(np.diag(H)), atol=t)
    np.testing.assert_allclose(dS[1:3], np.linalg.eigvalsh(H)[::-1], atol=t)
    # several tangents share one SVD: no basis can follow each of them
    r = run("jvp", d / "A.npy", d / "dA3.npy", "-o", d / "j3.npz")
    assert r.exit_code == 0, r.stderr
    assert "share one SVD of A" in r.stderr
    # a tangent that does not split the block (dA = A): no such warning
    r = run("jvp", d / "A.npy", d / "A.npy", "-o", d / "jA.npz")
    assert r.exit_code == 0, r.stderr
    assert "splits a block" not in r.stderr


def test_jvp_has_no_cotangent_options(data):
    for option in ("--convention", "--allow-gauge-dependence"):
        r = run("jvp", data["dir"] / "A.npy", data["dir"] / "dA.npy", option)
        assert r.exit_code == 2
        assert "No such option" in r.stderr


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


@pytest.mark.parametrize("command", ["svd", "jvp", "vjp", "check"])
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
