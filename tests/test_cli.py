"""The svdgrad command line: commands, sources, destinations, exit statuses."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
from helpers import fd_grad, tol
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


# --------------------------------------------------------------------------- truncated: --rank
#
# References: central finite differences of gauge-invariant functions of A through numpy's full
# SVD (float64 or complex128): the projector U U^H onto the top R left singular vectors, the
# rank-R approximation U S Vh, S and the truncation error err.


def with_values(rng, shape, values, cplx=False):
    """Q diag(values) W^H, Q and W random unitary."""
    return well_separated(rng, shape, np.complex128 if cplx else np.float64, values=values)


def rank_invariants(A, R):
    u, s, vh = np.linalg.svd(A, full_matrices=False)
    U = u[..., :R]
    return {
        "UU": U @ np.conj(np.swapaxes(U, -1, -2)),
        "A_R": (U * s[..., None, :R]) @ vh[..., :R, :],
        "S": s[..., :R],
        "err": np.sqrt(np.sum(s[..., R:] ** 2, axis=-1)),
    }


def rank_fd(A, dA, R, h=1e-6):
    plus, minus = rank_invariants(A + h * dA, R), rank_invariants(A - h * dA, R)
    return {k: (plus[k] - minus[k]) / (2 * h) for k in plus}


def rank_tangents(z):
    """The same invariants' tangents from the outputs of `svdgrad jvp --rank`."""
    U, S, Vh, dU, dS, dVh = (z[k] for k in ("U", "S", "Vh", "dU", "dS", "dVh"))
    H = lambda X: np.conj(np.swapaxes(X, -1, -2))  # noqa: E731
    s = S[..., None, :]
    return {
        "UU": dU @ H(U) + U @ H(dU),
        "A_R": (dU * s) @ Vh + (U * dS[..., None, :]) @ Vh + (U * s) @ dVh,
        "S": dS,
        "err": z["derr"],
    }


def max_rel(x, ref):
    return float(np.max(np.abs(x - ref)) / max(np.max(np.abs(ref)), 1e-12))


@pytest.mark.parametrize("solver", ["dense", "iterative"])
@pytest.mark.parametrize(
    "shape, R, cplx",
    [((9, 6), 3, False), ((5, 8), 2, True)],
    ids=["real-tall", "complex-wide"],
)
def test_jvp_rank_matches_finite_differences(tmp_path, solver, shape, R, cplx):
    rng = np.random.default_rng(21 + R)
    A = rng.standard_normal(shape) + (1j * rng.standard_normal(shape) if cplx else 0)
    dA = rng.standard_normal(shape) + (1j * rng.standard_normal(shape) if cplx else 0)
    np.save(tmp_path / "A.npy", A)
    np.save(tmp_path / "dA.npy", dA)
    out = tmp_path / "j.npz"
    r = run("jvp", tmp_path / "A.npy", tmp_path / "dA.npy", "--rank", R, "--solver", solver,
            "-o", out)  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert r.stderr == ""
    with np.load(out) as z:
        z = dict(z)
    names = ["U", "S", "Vh", "err", "dU", "dS", "dVh", "derr"]
    assert sorted(z) == sorted(names)
    m, n = shape
    assert z["U"].shape == z["dU"].shape == (m, R) and z["Vh"].shape == (R, n)
    assert z["S"].shape == (R,) and z["err"].shape == z["derr"].shape == ()
    assert z["S"].dtype == np.float64 and z["derr"].dtype == np.float64
    want = rank_invariants(A, R)
    assert max_rel(z["err"], want["err"]) < tol(np.float64, "exact") * 10
    assert max_rel((z["U"] * z["S"]) @ z["Vh"], want["A_R"]) < tol(np.float64, "ref")
    ours, ref = rank_tangents(z), rank_fd(A, dA, R)
    for key in ref:
        assert max_rel(ours[key], ref[key]) < tol(np.float64, "fd"), key
    # --values-only: S, err and their tangents, the same numbers
    r = run("jvp", tmp_path / "A.npy", tmp_path / "dA.npy", "--rank", R, "--solver", solver,
            "--values-only", "-o", tmp_path / "v.npz")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    with np.load(tmp_path / "v.npz") as v:
        assert sorted(v) == ["S", "dS", "derr", "err"]
        for key in v:
            np.testing.assert_allclose(v[key], z[key], rtol=tol(np.float64, "ref"), atol=1e-14)


def projector3_loss(U, S, Vh, B, C):
    """The user's loss: sum(B * U U^T) of the top-3 projector, plus sum(C * U S Vh) when C is
    given."""
    loss = np.sum(B * (U @ U.T))
    if C is not None:
        loss += np.sum(C * ((U * S) @ Vh))
    return loss


def projector3_cotangents(U, S, Vh, B, C):
    gU = (B + B.T) @ U
    gS = np.zeros_like(S)
    gVh = np.zeros_like(Vh)
    if C is not None:
        gU += C @ Vh.T * S
        gS += np.einsum("ij,ij->j", U, C @ Vh.T)
        gVh += S[:, None] * (U.T @ C)
    return gU, gS, gVh


@pytest.mark.parametrize("solver", ["dense", "iterative"])
@pytest.mark.parametrize("extra", [False, True], ids=["projector", "projector+approx+err"])
def test_svd_rank_then_user_loss_then_vjp_matches_fd(tmp_path, solver, extra):
    """`svdgrad svd A.npy --rank 3 -o f.npz`, a loss of the top-3 factors in numpy, and
    `svdgrad vjp A.npy --rank 3 --factors f.npz --gU ...` against finite differences."""
    rng = np.random.default_rng(31)
    A = rng.standard_normal((9, 6))
    B = rng.standard_normal((9, 9))
    C = rng.standard_normal((9, 6)) if extra else None
    gerr = 0.7 if extra else None
    np.save(tmp_path / "A.npy", A)
    f = tmp_path / "f.npz"
    r = run("svd", tmp_path / "A.npy", "--rank", 3, "--solver", solver, "-o", f)
    assert r.exit_code == 0, r.stderr
    with np.load(f) as z:
        U, S, Vh, err = z["U"], z["S"], z["Vh"], z["err"]
    assert U.shape == (9, 3) and S.shape == (3,) and Vh.shape == (3, 6) and err.shape == ()
    np.testing.assert_allclose(err, rank_invariants(A, 3)["err"], rtol=1e-12)
    cots = save_cotangents(tmp_path, *projector3_cotangents(U, S, Vh, B, C))
    if not extra:
        cots = cots[:2]  # --gU alone
    else:
        cots += ["--gerr", gerr]
    r = run("vjp", tmp_path / "A.npy", "--rank", 3, "--solver", solver, "--factors", f, *cots,
            "-o", tmp_path / "g.npz")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert r.stderr == ""
    with np.load(tmp_path / "g.npz") as z:
        gA = z["gA"]
        np.testing.assert_allclose(z["S"], S, rtol=1e-14)

    def loss_of_A(X):
        u, s, vh = np.linalg.svd(X, full_matrices=False)
        value = projector3_loss(u[:, :3], s[:3], vh[:3], B, C)
        return value + (gerr * np.sqrt(np.sum(s[3:] ** 2)) if extra else 0.0)

    want = fd_grad(loss_of_A, A)
    assert rel(gA, want) < tol(np.float64, "fd")


@pytest.mark.parametrize("solver", ["dense", "iterative"])
def test_vjp_gerr_is_the_closed_form(tmp_path, solver):
    """gA = (A - U S Vh) / err * gerr: one matrix with a number, a stack with one value per
    matrix, in memory and streamed into an .h5 file chunk by chunk."""
    rng = np.random.default_rng(41)
    A = rng.standard_normal((7, 5))
    np.save(tmp_path / "A.npy", A)
    r = run("vjp", tmp_path / "A.npy", "--rank", 2, "--solver", solver, "--gerr", "-1.5",
            "-o", tmp_path / "g.npz")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    u, s, vh = np.linalg.svd(A, full_matrices=False)
    perp = A - (u[:, :2] * s[:2]) @ vh[:2]
    with np.load(tmp_path / "g.npz") as z:
        np.testing.assert_allclose(z["gA"], perp / np.linalg.norm(perp) * -1.5, atol=1e-12)
        np.testing.assert_allclose(z["S"], s[:2], rtol=1e-12)

    stack = rng.standard_normal((5, 6, 4))
    gerr = rng.standard_normal(5)
    with h5py.File(tmp_path / "data.h5", "w") as h5:
        h5["A"] = stack
    np.save(tmp_path / "gerr.npy", gerr)
    u, s, vh = np.linalg.svd(stack, full_matrices=False)
    perp = stack - (u[..., :2] * s[..., None, :2]) @ vh[..., :2, :]
    norms = np.linalg.norm(perp, axis=(-2, -1))[:, None, None]
    want = perp / norms * gerr[:, None, None]
    src = f"{tmp_path / 'data.h5'}:/A"
    for out, extra in (
        (tmp_path / "s.npz", []),
        (f"{tmp_path / 's.h5'}:/a", ["--chunk", "2"]),
        (f"{tmp_path / 's.h5'}:/b", []),
    ):
        r = run("vjp", src, "--rank", 2, "--solver", solver, "--gerr", tmp_path / "gerr.npy",
                *extra, "-o", out)  # fmt: skip
        assert r.exit_code == 0, (out, r.stderr)
        got = read_dest(out, ["gA", "S"])
        np.testing.assert_allclose(got["gA"], want, atol=1e-12, err_msg=str(out))
    # a number broadcasts over the stack, streamed too
    r = run("vjp", src, "--rank", 2, "--gerr", 2, "--chunk", 3, "-o", f"{tmp_path / 's.h5'}:/c")
    assert r.exit_code == 0, r.stderr
    got = read_dest(f"{tmp_path / 's.h5'}:/c", ["gA", "S"])
    np.testing.assert_allclose(got["gA"], 2 * perp / norms, atol=1e-12)


def test_rank_stacks_stream_like_they_compute_in_memory(tmp_path):
    """svd --rank and jvp --rank on a stack: .npz in memory and .h5 streamed agree; the
    factors of a streamed svd --rank feed vjp --rank --factors."""
    rng = np.random.default_rng(51)
    A = well_separated(rng, (5, 6, 4), np.float64)
    dA = rng.standard_normal((5, 6, 4))
    with h5py.File(tmp_path / "data.h5", "w") as h5:
        h5["A"], h5["dA"] = A, dA
    src, dsrc = f"{tmp_path / 'data.h5'}:/A", f"{tmp_path / 'data.h5'}:/dA"
    r = run("svd", src, "--rank", 2, "-o", tmp_path / "f.npz")
    assert r.exit_code == 0, r.stderr
    r = run("svd", src, "--rank", 2, "--chunk", 2, "-o", f"{tmp_path / 'f.h5'}:/svd")
    assert r.exit_code == 0, r.stderr
    names = ["U", "S", "Vh", "err"]
    mem, factors = (
        read_dest(tmp_path / "f.npz", names),
        read_dest(f"{tmp_path / 'f.h5'}:/svd", names),
    )
    for name in names:
        np.testing.assert_allclose(factors[name], mem[name], atol=1e-14)
    assert mem["U"].shape == (5, 6, 2) and mem["err"].shape == (5,)
    want = rank_invariants(A, 2)
    np.testing.assert_allclose(mem["err"], want["err"], rtol=1e-12)
    np.testing.assert_allclose(mem["S"], want["S"], rtol=1e-12)
    r = run("jvp", src, dsrc, "--rank", 2, "--solver", "iterative", "-o", tmp_path / "j.npz")
    assert r.exit_code == 0, r.stderr
    r = run("jvp", src, dsrc, "--rank", 2, "--solver", "iterative", "--chunk", 2,
            "-o", f"{tmp_path / 'j.h5'}:/jvp")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    names = ["U", "S", "Vh", "err", "dU", "dS", "dVh", "derr"]
    mem, streamed = (
        read_dest(tmp_path / "j.npz", names),
        read_dest(f"{tmp_path / 'j.h5'}:/jvp", names),
    )
    ref = rank_fd(A, dA, 2)
    for z in (mem, streamed):
        ours = rank_tangents(z)
        for key in ref:
            assert max_rel(ours[key], ref[key]) < tol(np.float64, "fd"), key
    # the projector loss of each matrix through the streamed factors
    B = rng.standard_normal((5, 6, 6))
    U = factors["U"]
    np.save(tmp_path / "gU.npy", (B + np.swapaxes(B, -1, -2)) @ U)
    r = run("vjp", src, "--rank", 2, "--factors", f"{tmp_path / 'f.h5'}:/svd", "--gU",
            tmp_path / "gU.npy", "--chunk", 2, "-o", f"{tmp_path / 'g.h5'}:/g")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    gA = read_dest(f"{tmp_path / 'g.h5'}:/g", ["gA", "S"])["gA"]
    for b in range(5):

        def loss(X, b=b):
            u = np.linalg.svd(X, full_matrices=False)[0][:, :2]
            return np.sum(B[b] * (u @ u.T))

        assert rel(gA[b], fd_grad(loss, A[b])) < tol(np.float64, "fd"), b


@pytest.mark.parametrize("solver", ["dense", "iterative"])
def test_a_cut_inside_a_degenerate_pair_is_refused(tmp_path, solver):
    """A = Q diag(5, 4, 3, 3, 1) W^T with R = 3: jvp and vjp exit 1 naming the gap and what
    to do, and write nothing; svd writes the triplets with a warning."""
    rng = np.random.default_rng(61)
    A = with_values(rng, (7, 5), [5.0, 4.0, 3.0, 3.0, 1.0])
    np.save(tmp_path / "A.npy", A)
    np.save(tmp_path / "dA.npy", rng.standard_normal((7, 5)))
    np.save(tmp_path / "gS.npy", np.ones(3))
    d = tmp_path
    common = ("--rank", 3, "--solver", solver)
    for argv in (
        ("jvp", d / "A.npy", d / "dA.npy", *common, "-o", d / "out.npz"),
        ("vjp", d / "A.npy", "--gS", d / "gS.npy", *common, "-o", d / "out.npz"),
    ):
        r = run(*argv)
        assert r.exit_code == 1, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, r.stderr
        line = lines[0]
        assert line.startswith(
            "error: --rank 3: the cut lies inside a degenerate pair, s_3 = s_4 (gap "
            "(s_R - s_{R+1}) / s_R = "
        ), line
        gap = float(line.split("/ s_R = ")[1].split(")")[0])
        assert abs(gap) < 1e-6
        assert "choose another --rank" in line
        assert not (d / "out.npz").exists()
    r = run("svd", d / "A.npy", *common, "-o", d / "f.npz")
    assert r.exit_code == 0, r.stderr
    assert r.stderr.startswith("warning: --rank 3: the cut lies inside a degenerate pair")
    assert "choose another for derivatives" in r.stderr
    with np.load(d / "f.npz") as z:
        np.testing.assert_allclose(z["S"], [5.0, 4.0, 3.0], rtol=1e-12)
        np.testing.assert_allclose(z["err"], np.sqrt(10.0), rtol=1e-12)
    # the factors of that cut are refused too
    r = run("vjp", d / "A.npy", "--gS", d / "gS.npy", *common, "--factors", d / "f.npz")
    assert r.exit_code == 1 and "inside a degenerate pair" in r.stderr
    # R = 2 or R = 4 keeps or drops the whole pair: fine
    for R in (2, 4):
        r = run("jvp", d / "A.npy", d / "dA.npy", "--rank", R, "--solver", solver,
                "-o", d / f"ok{R}.npz")  # fmt: skip
        assert r.exit_code == 0, r.stderr
    # a degenerate matrix inside a streamed stack: exit 1, no output file
    stack = np.stack([with_values(rng, (7, 5), [5.0, 4.0, 3.0, 2.0, 1.0]), A])
    with h5py.File(d / "stack.h5", "w") as h5:
        h5["A"], h5["dA"] = stack, rng.standard_normal((2, 7, 5))
    r = run("jvp", f"{d / 'stack.h5'}:/A", f"{d / 'stack.h5'}:/dA", *common, "--chunk", 1,
            "-o", d / "out.h5")  # fmt: skip
    assert r.exit_code == 1 and "inside a degenerate pair" in r.stderr
    assert not (d / "out.h5").exists()


def test_iterative_solver_short_of_precision_warns(capsys):
    info = {"range_residual": 1e-13, "solver_residual": 5e-4, "cut_gap": 2.6e-3}
    _common.solver_warnings(info, np.float64)
    err = capsys.readouterr().err
    assert "the iterative solver stopped short of full precision" in err
    assert "conjugate-gradient residual 5.0e-04" in err and "top-triplet" not in err
    assert "gap at the cut 2.6e-03" in err and "--solver dense" in err
    _common.solver_warnings({"range_residual": 1e-15, "solver_residual": 0.0}, np.float64)
    assert capsys.readouterr().err == ""


def test_rank_help_and_options():
    for command in ("svd", "jvp", "vjp"):
        r = run(command, "--help")
        assert r.exit_code == 0 and "--rank" in r.stdout and "--solver" in r.stdout
    assert "--gerr" in run("vjp", "--help").stdout
