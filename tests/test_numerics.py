"""Equal, zero, huge and tiny singular values; Lorentzian broadening; gauge dependence."""

from __future__ import annotations

from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import GAUGE_DETECTED, randn, tol

from svdgrad_cli import svd_jvp, svd_vjp
from svdgrad_cli.check import rel_error


def _H(x):
    return np.conj(np.swapaxes(x, -1, -2))


def _orthogonal(rng, n, cplx=False):
    X = rng.standard_normal((n, n)) + (1j * rng.standard_normal((n, n)) if cplx else 0)
    return np.linalg.qr(X)[0]


def _with_values(rng, s, m, n, cplx=False):
    S = np.zeros((m, n))
    S[np.arange(len(s)), np.arange(len(s))] = s
    return _orthogonal(rng, m, cplx) @ S @ _H(_orthogonal(rng, n, cplx))


def _fd_grad(loss, A, h=1e-6):
    """Full finite-difference gradient of a real loss of a real matrix (small A only)."""
    G = np.zeros_like(A)
    for idx in np.ndindex(A.shape):
        E = np.zeros_like(A)
        E[idx] = h
        G[idx] = (loss(A + E) - loss(A - E)) / (2 * h)
    return G


def _polar_loss(W):
    def loss(A):
        U, _, Vh = np.linalg.svd(A, full_matrices=False)
        return np.sum(W * (U @ Vh))

    return loss


# --- equal singular values -------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(4, 4), (6, 4), (4, 6)])
def test_repeated_values_give_finite_exact_gradient_for_polar_factor(rng, shape):
    """diag(3, 2, 1, 1) rotated: the polar factor U Vh is smooth and basis-independent, and its
    gradient needs the 1/(s_j + s_i) term inside the degenerate block."""
    A = _with_values(rng, [3.0, 2.0, 1.0, 1.0], *shape)
    W = rng.standard_normal(shape)
    U, S, Vh = np.linalg.svd(A, full_matrices=False)
    gA, info = svd_vjp(A, gU=W @ _H(Vh), gVh=_H(U) @ W, return_info=True)
    gA = np.asarray(gA)
    assert np.all(np.isfinite(gA))
    assert int(info.degenerate_pairs) == 1
    assert float(info.gauge_relative) < tol(np.float64)
    assert rel_error(gA, _fd_grad(_polar_loss(W), A)) < tol(np.float64, "fd")
    # cutting the whole 1/(s_j^2 - s_i^2) (both factors) would miss the rotation term: show that
    # the block's 1/(s_j + s_i) term is what makes the answer right
    wrong = np.asarray(svd_vjp(A, gU=W @ _H(Vh), gVh=_H(U) @ W, degeneracy_tol=0.0, eps=1e-300))
    assert rel_error(wrong, gA) > GAUGE_DETECTED


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
@pytest.mark.parametrize("full", [False, True])
def test_exactly_equal_values_never_give_inf_or_nan(rng, dtype, full):
    cplx = np.issubdtype(dtype, np.complexfloating)
    A = _with_values(rng, [2.0, 1.0, 1.0, 1.0], 6, 4, cplx).astype(dtype)
    A[:] = A  # exact repeats up to rounding of the rotation
    D = np.diag([2.0, 1.0, 1.0, 1.0]).astype(dtype)  # exactly equal, no rounding at all
    for M in (A, D):
        (U, S, Vh), tangents = svd_jvp(M, randn(rng, M.shape, dtype), full_matrices=full)
        assert all(np.all(np.isfinite(np.asarray(t))) for t in tangents)
        gA = svd_vjp(
            M,
            gU=randn(rng, U.shape, dtype),
            gS=np.ones(4),
            gVh=randn(rng, Vh.shape, dtype),
            full_matrices=full,
        )
        assert np.all(np.isfinite(np.asarray(gA)))


def test_degenerate_basis_dependence_is_detected(rng):
    A = _with_values(rng, [3.0, 2.0, 1.0, 1.0], 5, 4)
    U, S, Vh = np.linalg.svd(A, full_matrices=False)
    gU = np.zeros_like(U)
    gU[:, 2] = rng.standard_normal(5)  # a loss of the third column alone: basis-dependent
    _, info = svd_vjp(A, gU=gU, return_info=True)
    assert float(info.gauge_relative) > GAUGE_DETECTED


# --- zero and tiny singular values -----------------------------------------------------------


@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (5, 5)])
def test_rank_deficient_projector_gradient(rng, shape):
    """rank 2: the projector onto the top-2 left singular subspace is smooth; its gradient is
    finite and agrees with finite differences (the null-space terms are cut as in a
    pseudo-inverse)."""
    m, n = shape
    A = _with_values(rng, [3.0, 1.5, 0.0, 0.0, 0.0][: min(m, n)], m, n)
    W = rng.standard_normal((m, m))
    W = W + W.T

    def loss(X):
        U = np.linalg.svd(X, full_matrices=False)[0][:, :2]
        return np.sum(W * (U @ U.T))

    U = np.linalg.svd(A, full_matrices=False)[0]
    gU = np.zeros_like(U)
    gU[:, :2] = 2 * W @ U[:, :2]
    gA, info = svd_vjp(A, gU=gU, return_info=True)
    assert int(info.rank_cut) == min(m, n) - 2
    assert np.all(np.isfinite(np.asarray(gA)))
    assert rel_error(gA, _fd_grad(loss, A)) < tol(np.float64, "fd")


@pytest.mark.parametrize("full", [False, True])
def test_zero_singular_values_give_finite_results(rng, full):
    A = np.zeros((5, 3))
    A[0, 0] = 1.0
    (U, S, Vh), tangents, info = svd_jvp(
        A, rng.standard_normal((5, 3)), full_matrices=full, return_info=True
    )
    assert int(info.rank_cut) == 2
    assert all(np.all(np.isfinite(np.asarray(t))) for t in tangents)
    gA = svd_vjp(A, gU=np.ones(U.shape), gS=np.ones(3), gVh=np.ones(Vh.shape), full_matrices=full)
    assert np.all(np.isfinite(np.asarray(gA)))
    zero = svd_jvp(np.zeros((3, 3)), np.ones((3, 3)))[1]
    assert all(np.all(np.isfinite(np.asarray(t))) for t in zero)


# --- huge and tiny singular values -----------------------------------------------------------


def _exact_diag_jvp(s, dA):
    """dS, dU, dV for A = diag(s) (square) in exact rational arithmetic."""
    k = len(s)
    fs = [Fraction(float(x)) for x in s]
    fd = [[Fraction(float(dA[i, j])) for j in range(k)] for i in range(k)]
    dU = np.zeros((k, k))
    dV = np.zeros((k, k))
    for i in range(k):
        for j in range(k):
            if i == j:
                continue
            den = fs[j] ** 2 - fs[i] ** 2
            dU[i, j] = float((fd[i][j] * fs[j] + fs[i] * fd[j][i]) / den)
            dV[i, j] = float((fs[i] * fd[i][j] + fd[j][i] * fs[j]) / den)
    return np.diag(dA).copy(), dU, dV


def test_values_from_1e_minus_150_to_1e150_are_exact_to_rounding(rng):
    s = np.array([1e150, 1e150 * (1 - 1e-9), 1e50, 1.0, 1.0 - 1e-8, 1e-50, 1e-150])
    A = np.diag(s)
    dA = rng.standard_normal(A.shape)
    # the defaults treat values below max(S) * 7 * eps as numerically zero and values closer than
    # 64 * eps * max(S) as degenerate; this test asks for the exact rule instead
    exact = dict(rank_tol=0.0, degeneracy_tol=0.0)
    (U, S, Vh), (dU, dS, dVh) = (tuple(map(np.asarray, t)) for t in svd_jvp(A, dA, **exact))
    # the SVD of a diagonal matrix is exact up to rounding (another LAPACK may differ by an ulp)
    np.testing.assert_allclose(np.abs(U), np.eye(7), rtol=0, atol=4 * np.finfo(float).eps)
    np.testing.assert_allclose(S, s, rtol=4 * np.finfo(float).eps, atol=0)
    # LAPACK may return -1 entries on the diagonal; express everything in the U = V = I gauge
    sign_u, sign_v = np.diag(U), np.diag(Vh)
    dA_rot = sign_u[:, None] * dA * sign_v[None, :]
    ref_dS, ref_dU, ref_dV = _exact_diag_jvp(s, dA_rot)
    got_dU = sign_u[:, None] * dU * sign_u[None, :]
    got_dV = (sign_v[:, None] * dVh * sign_v[None, :]).T
    assert np.allclose(dS, ref_dS, rtol=tol(np.float64, "exact"), atol=0)
    mask = ref_dU != 0
    assert np.max(np.abs(got_dU[mask] / ref_dU[mask] - 1)) < tol(np.float64, "exact")
    assert np.max(np.abs(got_dV[mask] / ref_dV[mask] - 1)) < tol(np.float64, "exact")
    # the VJP in the same regime: adjoint identity entry by entry of the cotangent
    gU = rng.standard_normal((7, 7))
    gA = np.asarray(svd_vjp(A, gU=gU, **exact))
    lhs, rhs = np.sum(gA * dA), np.sum(gU * dU)
    assert np.isfinite(lhs) and abs(lhs - rhs) <= tol(np.float64, "exact") * np.sum(np.abs(gU * dU))


# --- Lorentzian broadening -------------------------------------------------------------------


def _seed_svd_back(U, S, V, dU, dS, dV, eps=1e-12):
    """The stabilised back-propagation of the seed document (real, thin), in numpy."""
    S2 = S**2
    F = S2[None, :] - S2[:, None]
    F = F / (F**2 + eps)
    UdU = U.T @ dU
    VdV = V.T @ dV
    Su = (F * (UdU - UdU.T)) * S[None, :]
    Sv = S[:, None] * (F * (VdV - VdV.T))
    m, n = U.shape[0], V.shape[0]
    return (
        U @ (Su + Sv + np.diag(dS)) @ V.T
        + (np.eye(m) - U @ U.T) @ dU @ np.diag(1 / S) @ V.T
        + U @ np.diag(1 / S) @ dV.T @ (np.eye(n) - V @ V.T)
    )


@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (5, 5)])
def test_broadening_matches_the_seed_formula(rng, shape):
    # well separated values: the seed computes s_j^2 - s_i^2 from the squares, which is itself
    # inaccurate for close pairs
    A = _with_values(rng, [2.0, 1.0, 0.5, 0.25, 0.125][: min(shape)], *shape)
    # the SVD routine svdgrad calls (JAX's), so that both see the same singular vectors
    U, S, Vh = (np.asarray(x) for x in jnp.linalg.svd(A, full_matrices=False))
    gU, gS, gVh = (rng.standard_normal(x.shape) for x in (U, S, Vh))
    ours = np.asarray(svd_vjp(A, gU=gU, gS=gS, gVh=gVh, eps=1e-12))
    ref = _seed_svd_back(U, S, Vh.T, gU, gS, gVh.T)
    assert rel_error(ours, ref) < tol(np.float64, "exact")


def test_broadening_regularises_exact_degeneracy(rng):
    A = _with_values(rng, [2.0, 1.0, 1.0], 4, 3)
    gA, info = svd_vjp(A, gU=rng.standard_normal((4, 3)), eps=1e-12, return_info=True)
    assert bool(info.broadened) and np.all(np.isfinite(np.asarray(gA)))


# --- complex phase gauge ---------------------------------------------------------------------


def test_phase_invariant_loss_matches_jax_and_is_not_flagged(rng):
    A = randn(rng, (5, 3), np.complex128)
    U, S, Vh = np.linalg.svd(A, full_matrices=False)
    # L = sum |U|^2 weighted: invariant under u_i -> u_i e^{i phi}
    W = rng.standard_normal(U.shape)
    gU = 2 * W * np.conj(U)  # jax convention: dL = Re sum(gU * dU)
    gA, info = svd_vjp(A, gU=gU, return_info=True)
    assert float(info.gauge_relative) < tol(np.complex128, "exact")
    ref = jax.grad(lambda a: jnp.sum(W * jnp.abs(jnp.linalg.svd(a, full_matrices=False)[0]) ** 2))(
        jnp.asarray(A)
    )
    # jax.grad is jax.vjp with cotangent 1: the same (unconjugated) convention as ours
    assert rel_error(gA, ref) < tol(np.complex128)


def test_phase_dependent_loss_is_detected(rng):
    A = randn(rng, (5, 3), np.complex128)
    gU = np.zeros((5, 3), complex)
    gU[0, 0] = 1.0  # L = Re U[0, 0]: depends on the arbitrary phase of u_0
    _, info = svd_vjp(A, gU=gU, return_info=True)
    assert float(info.gauge_relative) > GAUGE_DETECTED


def test_full_extra_columns_dependence_is_detected(rng):
    A = rng.standard_normal((5, 3))
    U = np.linalg.svd(A)[0]
    gU = np.zeros((5, 5))
    gU[:, 4] = rng.standard_normal(5)  # a loss of one arbitrary extra column
    _, info = svd_vjp(A, gU=gU, full_matrices=True, return_info=True)
    assert float(info.gauge_relative) > GAUGE_DETECTED
    # the projector U2 U2^T onto the null space of A^T is well defined: not flagged
    W = rng.standard_normal((5, 5))
    W = W + W.T
    gU = np.zeros((5, 5))
    gU[:, 3:] = 2 * W @ U[:, 3:]
    _, info = svd_vjp(A, gU=gU, full_matrices=True, return_info=True)
    assert float(info.gauge_relative) < tol(np.float64)
