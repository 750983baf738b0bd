"""The sixteen rules against finite differences, JAX's autodiff, the adjoint identity and the
chain rule, on tall, wide, square and batched shapes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import randn, random_matrix, tol

from svdgrad_cli import svd, svd_jvp, svd_vjp
from svdgrad_cli.check import Case, fd_jvp, rel_error

SHAPES = [(6, 4), (4, 6), (5, 5), (2, 3, 4, 6)]
DTYPES = [np.float64, np.complex128]
FLAGS = [(full, uv) for full in (False, True) for uv in (True, False)]


def _H(x):
    return np.conj(np.swapaxes(x, -1, -2))


def _cotangents(rng, A, full, uv, dtype):
    m, n = A.shape[-2:]
    k = min(m, n)
    b = A.shape[:-2]
    gS = rng.standard_normal(b + (k,))
    if not uv:
        return {"gS": gS}
    ku, kv = (m, n) if full else (k, k)
    return {"gU": randn(rng, b + (m, ku), dtype), "gS": gS, "gVh": randn(rng, b + (kv, n), dtype)}


def _jvp_dict(out, uv):
    names = ("dU", "dS", "dVh") if uv else ("dS",)
    return {k: np.asarray(v) for k, v in zip(names, out[1], strict=True)}


def _jax_supports(shape, full, uv):
    m, n = shape[-2:]
    return not (full and uv and m != n)


def _svd_fn(full, uv):
    def f(a):
        out = jnp.linalg.svd(a, full_matrices=full, compute_uv=uv)
        return tuple(out) if uv else (out,)

    return f


PAIRS = {"gU": "dU", "gS": "dS", "gVh": "dVh"}


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("full,uv", FLAGS, ids=lambda f: str(f))
def test_rule(rng, shape, dtype, full, uv):
    """One of the sixteen rules, checked three ways (plus JAX where it has the case)."""
    A = random_matrix(rng, shape, dtype)
    dA = randn(rng, shape, dtype)
    ours = _jvp_dict(svd_jvp(A, dA, full_matrices=full, compute_uv=uv), uv)
    cots = _cotangents(rng, A, full, uv, dtype)
    gA = np.asarray(svd_vjp(A, **cots, full_matrices=full, compute_uv=uv))

    # (1) central finite differences of the gauge-aligned numpy SVD, two step sizes
    case = Case(full, np.iscomplexobj(A), uv)
    h = 1e-5
    fd1 = fd_jvp(A, dA, case, h)
    fd2 = fd_jvp(A, dA, case, h / 2)
    for name, value in ours.items():
        noise = rel_error(fd1[name], fd2[name])
        assert noise < 1e-7, f"{name}: finite differences themselves are noisy ({noise:.1e})"
        assert rel_error(value, fd2[name]) < tol(dtype, "fd"), name
    # the VJP: <gA, dA> is the FD derivative of the aligned loss Re sum(g * f(A)) along dA
    lhs = np.real(np.sum(gA * dA))
    rhs_fd = sum(np.real(np.sum(g * fd2[PAIRS[name]])) for name, g in cots.items())
    assert abs(lhs - rhs_fd) <= tol(dtype, "fd") * (abs(lhs) + 1)

    # (2) the adjoint identity, in both conventions
    for convention in ("jax", "torch"):
        g = (
            gA
            if convention == "jax"
            else np.asarray(
                svd_vjp(A, **cots, full_matrices=full, compute_uv=uv, convention="torch")
            )
        )
        conj = np.conj if convention == "torch" else (lambda x: x)
        lhs = np.real(np.sum(conj(g) * dA))
        rhs = sum(np.real(np.sum(conj(c) * ours[PAIRS[name]])) for name, c in cots.items())
        scale = sum(np.sum(np.abs(c) * np.abs(ours[PAIRS[name]])) for name, c in cots.items())
        assert abs(lhs - rhs) <= tol(dtype) * scale, convention

    # (3) JAX's own autodiff, where it supports the case
    if _jax_supports(shape, full, uv):
        f = _svd_fn(full, uv)
        _, ref = jax.jvp(f, (jnp.asarray(A),), (jnp.asarray(dA),))
        for name, b in zip(ours, ref, strict=True):
            assert rel_error(ours[name], b) < tol(dtype), name
        _, pullback = jax.vjp(f, jnp.asarray(A))
        names = ("gU", "gS", "gVh") if uv else ("gS",)
        (ref_gA,) = pullback(tuple(jnp.asarray(cots[k]) for k in names))
        assert rel_error(gA, ref_gA) < tol(dtype)


def test_jax_lacks_full_rectangular_rule():
    """Why the full m != n rules are checked by finite differences only."""
    with pytest.raises(NotImplementedError):
        jax.jvp(_svd_fn(True, True), (jnp.ones((4, 3)),), (jnp.ones((4, 3)),))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_torch_convention_is_conjugated_jax(rng, dtype):
    A = random_matrix(rng, (5, 3), dtype)
    cots = _cotangents(rng, A, False, True, dtype)
    conj = {k: np.conj(v) for k, v in cots.items()}
    torch_gA = svd_vjp(A, **cots, convention="torch")
    jax_gA = svd_vjp(A, **conj, convention="jax")
    assert rel_error(torch_gA, np.conj(jax_gA)) < tol(dtype)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("full", [False, True])
def test_chain_rule_and_gauge(rng, shape, dtype, full):
    """dA = dU S Vh + U dS Vh + U S dVh; U^H dU and V^H dV skew-Hermitian; the gauges hold."""
    A = random_matrix(rng, shape, dtype)
    dA = randn(rng, shape, dtype)
    (U, S, Vh), (dU, dS, dVh) = (
        tuple(map(np.asarray, t)) for t in svd_jvp(A, dA, full_matrices=full)
    )
    m, n = shape[-2:]
    k = min(m, n)
    Sm = np.zeros(S.shape[:-1] + (U.shape[-1], Vh.shape[-2]))
    Sm[..., np.arange(k), np.arange(k)] = S
    dSm = np.zeros_like(Sm)
    dSm[..., np.arange(k), np.arange(k)] = dS
    rebuilt = dU @ Sm @ Vh + U @ dSm @ Vh + U @ Sm @ dVh
    assert rel_error(rebuilt, dA) < tol(dtype)
    X = _H(U) @ dU
    assert np.max(np.abs(X + _H(X))) < tol(dtype) * np.max(np.abs(X))
    Y = Vh @ _H(dVh)  # = V^H dV
    assert np.max(np.abs(Y + _H(Y))) < tol(dtype) * np.max(np.abs(Y))
    # JAX's phase gauge: Im diag(V^H dV) = 0
    assert np.max(np.abs(np.imag(np.diagonal(Y, axis1=-2, axis2=-1)))) < tol(dtype)
    if full and m > n:  # horizontal gauge U2^H dU2 = 0
        assert np.max(np.abs(_H(U[..., :, k:]) @ dU[..., :, k:])) < tol(dtype)
    if full and n > m:
        assert np.max(np.abs(Vh[..., k:, :] @ _H(dVh[..., k:, :]))) < tol(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_square_full_equals_thin(rng, dtype):
    A = random_matrix(rng, (4, 4), dtype)
    dA = randn(rng, (4, 4), dtype)
    thin = svd_jvp(A, dA)[1]
    full = svd_jvp(A, dA, full_matrices=True)[1]
    for a, b in zip(thin, full, strict=True):
        assert rel_error(a, b) < tol(dtype)


@pytest.mark.parametrize(
    "dtype", [np.float32, np.float64, np.complex64, np.complex128], ids=lambda d: np.dtype(d).name
)
@pytest.mark.parametrize("full,uv", FLAGS, ids=lambda f: str(f))
def test_dtype_preserved(rng, dtype, full, uv):
    A = random_matrix(rng, (5, 3), dtype)
    dA = randn(rng, (5, 3), dtype)
    real = np.finfo(dtype).dtype
    primals, tangents = svd_jvp(A, dA, full_matrices=full, compute_uv=uv)
    if uv:
        U, S, Vh = primals
        dU, dS, dVh = tangents
        assert U.dtype == dtype and Vh.dtype == dtype and dU.dtype == dtype and dVh.dtype == dtype
    else:
        (S,), (dS,) = primals, tangents
    assert S.dtype == real and dS.dtype == real
    cots = _cotangents(rng, A, full, uv, dtype)
    cots["gS"] = cots["gS"].astype(real)
    assert svd_vjp(A, **cots, full_matrices=full, compute_uv=uv).dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("full", [False, True])
def test_many_tangents_one_svd_broadcast(rng, dtype, full):
    """A (m, n) with dA (T, m, n) equals T separate calls; cotangents broadcast the same way."""
    A = random_matrix(rng, (5, 3), dtype)
    dA = randn(rng, (4, 5, 3), dtype)
    (U, S, Vh), tangents = svd_jvp(A, dA, full_matrices=full)
    assert U.shape[:-2] == () and tangents[0].shape[0] == 4
    for t in range(4):
        single = svd_jvp(A, dA[t], full_matrices=full)[1]
        for a, b in zip(tangents, single, strict=True):
            assert rel_error(a[t], b) < tol(dtype)
    gU = randn(rng, (4,) + U.shape, dtype)
    gA = svd_vjp(A, gU=gU, full_matrices=full)
    assert gA.shape == (4, 5, 3)
    for t in range(4):
        assert rel_error(gA[t], svd_vjp(A, gU=gU[t], full_matrices=full)) < tol(dtype)


def test_missing_cotangents_are_zero(rng):
    A = random_matrix(rng, (5, 3), np.float64)
    gS = rng.standard_normal(3)
    zeros = {"gU": np.zeros((5, 3)), "gVh": np.zeros((3, 3))}
    assert rel_error(svd_vjp(A, gS=gS), svd_vjp(A, gS=gS, **zeros)) < tol(np.float64, "exact")
    # values only: gA = U diag(gS) Vh
    U, S, Vh = np.linalg.svd(A, full_matrices=False)
    assert rel_error(svd_vjp(A, gS=gS, compute_uv=False), (U * gS) @ Vh) < tol(np.float64, "exact")


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda A: svd_vjp(A), "at least one"),
        (lambda A: svd_vjp(A, gU=np.ones((5, 3)), compute_uv=False), "only gS"),
        (lambda A: svd_jvp(A, np.ones((3, 5))), "dA must end in shape"),
        (lambda A: svd_jvp(A, np.ones((2, 5, 4))), "dA must end in shape"),
        (lambda A: svd_vjp(A, gS=np.ones(3), convention="numpy"), "convention"),
        (lambda A: svd_jvp(np.ones(3), np.ones(3)), "shape (..., m, n)"),
        (lambda A: svd_jvp(A, A, eps=-1.0), "eps must be"),
    ],
)
def test_argument_errors(rng, call, message):
    A = random_matrix(rng, (5, 3), np.float64)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(A)


def test_batch_dimensions_must_broadcast(rng):
    A = random_matrix(rng, (2, 5, 3), np.float64)
    with pytest.raises(ValueError, match="do not broadcast"):
        svd_jvp(A, np.ones((3, 5, 3)))


@pytest.mark.parametrize("uv", [True, False])
def test_thin_tall_memory_stays_small(uv):
    """A thin 200000 x 32 JVP and VJP never form an m x m matrix: XLA's own accounting of the
    compiled programs stays well under 1 GB (A itself is 51 MB)."""
    A = jax.ShapeDtypeStruct((200000, 32), jnp.float64)
    gS = jax.ShapeDtypeStruct((32,), jnp.float64)
    limit = 1 << 30

    def lowered(f, *args):
        return jax.jit(f).lower(*args).compile().memory_analysis()

    jvp = lowered(lambda A: svd_jvp(A, A, compute_uv=uv), A)
    if uv:
        vjp = lowered(lambda A, gS: svd_vjp(A, gU=A, gS=gS), A, gS)
        grad = lowered(jax.grad(lambda A: jnp.sum(svd(A, full_matrices=False).U ** 2)), A)
    else:
        vjp = lowered(lambda A, gS: svd_vjp(A, gS=gS, compute_uv=False), A, gS)
        grad = lowered(jax.grad(lambda A: jnp.sum(svd(A, compute_uv=False))), A)
    for mem in (jvp, vjp, grad):
        total = mem.temp_size_in_bytes + mem.output_size_in_bytes + mem.argument_size_in_bytes
        assert total < limit / 2, total
