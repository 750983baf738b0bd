"""Equal and zero singular values: what svd_jvp selects and what svd_vjp reports.

References are independent of the rules: central finite differences of gauge-invariant
functions of A (A A^T A, the polar factor, projectors), one-sided Richardson differences of the
sorted singular values, and the chain rule dA = dU S Vh + U dS Vh + U S dVh.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svdgrad_cli import svd_jvp, svd_vjp

RTOL_EXACT = 1e-12  # float64, rounding level of 4 x 4 to 6 x 4 products
RTOL_FD = 1e-7  # central differences with h = 1e-5: truncation ~h^2 times third derivatives
DETECTED = 1e-3  # a dependence this large (relative) must be reported
CLEAN = 1e-10  # a gauge-invariant loss reports rounding level only


def _orth(rng, n, cplx=False):
    X = rng.standard_normal((n, n))
    if cplx:
        X = X + 1j * rng.standard_normal((n, n))
    return np.linalg.qr(X)[0]


def _with_values(rng, values, m, n, cplx=False):
    S = np.zeros((m, n))
    S[np.arange(len(values)), np.arange(len(values))] = values
    return _orth(rng, m, cplx) @ S @ _orth(rng, n, cplx).conj().T


def _randn(rng, shape, cplx=False):
    x = rng.standard_normal(shape)
    return x + 1j * rng.standard_normal(shape) if cplx else x


def _rel(x, ref):
    x, ref = np.asarray(x), np.asarray(ref)
    return float(np.max(np.abs(x - ref)) / max(np.max(np.abs(ref)), 1e-300))


def _central(f, A, dA, h=1e-5):
    return (f(A + h * dA) - f(A - h * dA)) / (2 * h)


def _one_sided(f, A, dA, h=1e-5):
    """Richardson extrapolation of forward differences: O(h^2) for a one-sided derivative."""
    f0 = f(A)
    d1 = (f(A + h * dA) - f0) / h
    d2 = (f(A + h / 2 * dA) - f0) / (h / 2)
    return 2 * d2 - d1


def _H(x):
    return np.conj(np.swapaxes(x, -1, -2))


# --------------------------------------------------------------------------- forward mode

REPRODUCER = pytest.param(
    np.diag([3.0, 2.0, 2.0, 1.0]), (np.arange(16).reshape(4, 4) % 5 - 2).astype(float), id="diag"
)


def _cases():
    rng = np.random.default_rng(11)
    yield REPRODUCER
    for m, n in ((4, 4), (6, 4), (4, 6)):
        for cplx in (False, True):
            A = _with_values(rng, [3.0, 2.0, 2.0, 1.0], m, n, cplx)
            yield pytest.param(A, _randn(rng, (m, n), cplx), id=f"{m}x{n}-{'c' if cplx else 'r'}")
    A = _with_values(rng, [2.0, 2.0, 2.0, 0.5], 5, 4)
    yield pytest.param(A, _randn(rng, (5, 4)), id="triple")


@pytest.mark.parametrize("A, dA", list(_cases()))
def test_jvp_selects_the_basis_of_the_tangent(A, dA):
    (U, S, Vh), (dU, dS, dVh), info = svd_jvp(A, dA, return_info=True)
    U, S, Vh, dU, dS, dVh = map(np.asarray, (U, S, Vh, dU, dS, dVh))
    assert bool(info.basis_selected) and float(info.degenerate_split) > DETECTED
    # still an SVD of A
    assert _rel((U * S) @ Vh, A) < RTOL_EXACT
    assert _rel(_H(U) @ U, np.eye(U.shape[1])) < RTOL_EXACT
    # the chain rule, exactly
    chain = (dU * S) @ Vh + (U * dS) @ Vh + (U * S) @ dVh
    assert _rel(chain, dA) < RTOL_EXACT
    # U f(S) Vh with f' != 0: A A^H A = U S^3 Vh
    ours = (dU * S**3) @ Vh + (U * (3 * S**2 * dS)) @ Vh + (U * S**3) @ dVh
    ref = _central(lambda X: X @ _H(X) @ X, A, dA)
    assert _rel(ours, ref) < RTOL_FD
    # S: the one-sided derivative of the sorted singular values (the values split)
    ref_S = _one_sided(lambda X: np.linalg.svd(X, compute_uv=False), A, dA)
    assert _rel(dS, ref_S) < 1e-6

    # the polar factor U Vh
    def polar(X):
        u, _, vh = np.linalg.svd(X, full_matrices=False)
        return u @ vh

    assert _rel(dU @ Vh + U @ dVh, _central(polar, A, dA)) < RTOL_FD


def test_jvp_without_degeneracy_keeps_the_factors_of_svd():
    rng = np.random.default_rng(3)
    A = _with_values(rng, [4.0, 3.0, 2.0, 1.0], 6, 4)
    dA = _randn(rng, (6, 4))
    (U, S, Vh), _, info = svd_jvp(A, dA, return_info=True)
    u, s, vh = np.linalg.svd(A, full_matrices=False)
    assert not bool(info.basis_selected)
    assert _rel(np.abs(np.sum(np.asarray(U) * u, axis=0)), np.ones(4)) < RTOL_EXACT


def test_jvp_selection_in_a_batch_under_jit_and_vmap():
    rng = np.random.default_rng(5)
    A = np.stack([_with_values(rng, [3.0, 2.0, 2.0, 1.0], 5, 4), _randn(rng, (5, 4))])
    dA = _randn(rng, (2, 5, 4))
    direct = svd_jvp(A, dA)
    jitted = jax.jit(lambda a, d: svd_jvp(a, d))(A, dA)
    mapped = jax.vmap(lambda a, d: svd_jvp(a, d))(A, dA)
    for other in (jitted, mapped):
        for x, y in zip(jax.tree.leaves(direct), jax.tree.leaves(other), strict=True):
            assert _rel(x, y) < RTOL_EXACT
    (U, S, Vh), (dU, dS, dVh) = direct
    chain = jnp.einsum("bij,bj,bjk->bik", dU, S, Vh) + jnp.einsum("bij,bj,bjk->bik", U, dS, Vh)
    chain = chain + jnp.einsum("bij,bj,bjk->bik", U, S, dVh)
    assert _rel(chain, dA) < RTOL_EXACT


def test_shared_svd_does_not_select_and_says_how_much_it_matters():
    """Several tangents on one SVD: the basis cannot follow each tangent."""
    rng = np.random.default_rng(6)
    A = _with_values(rng, [3.0, 2.0, 2.0, 1.0], 4, 4)
    dA = _randn(rng, (3, 4, 4))
    (U, S, Vh), _, info = svd_jvp(A, dA, return_info=True)
    assert U.shape == (4, 4)
    assert not bool(info.basis_selected)
    assert float(info.degenerate_split) > DETECTED


@pytest.mark.parametrize("m, n", [(6, 4), (4, 6), (4, 4)], ids=["tall", "wide", "square"])
@pytest.mark.parametrize("cplx", [False, True], ids=["real", "complex"])
def test_jvp_selects_null_vectors_and_zero_values_split_nonnegatively(m, n, cplx):
    """Rank 2: the zero singular values move as t sigma(Y), Y the block of dA between the null
    spaces; svd_jvp returns the null vectors that dA selects, dS >= 0 there, and the chain rule
    holds exactly (the part of dA outside both thin frames included)."""
    rng = np.random.default_rng(m * 10 + n + cplx)
    A = _randn(rng, (m, 2), cplx) @ _randn(rng, (2, n), cplx)
    dA = _randn(rng, (m, n), cplx)
    (U, S, Vh), (dU, dS, dVh), info = svd_jvp(A, dA, return_info=True)
    U, S, Vh, dU, dS, dVh = map(np.asarray, (U, S, Vh, dU, dS, dVh))
    assert bool(info.basis_selected) and int(info.rank_cut) == min(m, n) - 2
    assert _rel((U * S) @ Vh, A) < RTOL_EXACT
    assert _rel(_H(U) @ U, np.eye(U.shape[1])) < RTOL_EXACT
    assert _rel((dU * S) @ Vh + (U * dS) @ Vh + (U * S) @ dVh, dA) < RTOL_EXACT
    ref_S = _one_sided(lambda X: np.linalg.svd(X, compute_uv=False), A, dA)
    assert np.all(dS[2:] >= 0)
    assert _rel(dS, ref_S) < 1e-6


# --------------------------------------------------------------------------- reverse mode


def _svd_np(A, full=False):
    return np.linalg.svd(A, full_matrices=full)


def _loss_cases():
    """(name, A, loss of A (gauge invariant or not), cotangents from numpy's factors, flagged)."""
    rng = np.random.default_rng(21)
    A = _with_values(rng, [3.0, 2.0, 2.0, 1.0], 6, 4)
    B = _randn(rng, (6, 4))
    U, S, Vh = _svd_np(A)

    def cube(X):
        return np.sum(B * (X @ X.T @ X))

    cots = dict(gU=B @ (Vh.T * S**3), gS=3 * S**2 * np.sum(U * (B @ Vh.T), 0), gVh=(U * S**3).T @ B)
    yield pytest.param(A, cube, (U, S, Vh), cots, "spectrum", id="U S^3 Vh, degenerate")

    def polar(X):
        u, _, vh = _svd_np(X)
        return np.sum(B * (u @ vh))

    cots = dict(gU=B @ Vh.T, gVh=U.T @ B)
    yield pytest.param(A, polar, (U, S, Vh), cots, None, id="polar, degenerate")

    def sumsq(X):
        return np.sum(np.linalg.svd(X, compute_uv=False) ** 2)

    yield pytest.param(A, sumsq, (U, S, Vh), dict(gS=2 * S), None, id="sum S^2, degenerate")

    def block_projector(X):
        u = _svd_np(X)[0][:, 1:3]
        return np.sum(B[:, :1].T @ (u @ u.T) @ B[:, :1])

    P = U[:, 1:3] @ U[:, 1:3].T
    gU = np.zeros_like(U)
    gU[:, 1:3] = 2 * (B[:, :1] @ B[:, :1].T) @ U[:, 1:3]
    del P
    yield pytest.param(A, block_projector, (U, S, Vh), dict(gU=gU), None, id="block projector")

    # rank 3 of a 6 x 4: u_3 is any unit vector of a 3-dimensional space
    X = _randn(rng, (6, 3)) @ _randn(rng, (3, 4))
    U, S, Vh = _svd_np(X)
    gU = np.zeros((6, 4))
    gU[:, 3] = rng.standard_normal(6)
    yield pytest.param(X, None, (U, S, Vh), dict(gU=gU), "null", id="null-space u_3")
    C = _randn(rng, (6, 4))
    gU = np.zeros((6, 4))
    gU[:, 3] = C @ Vh[3]
    gVh = np.zeros((4, 4))
    gVh[3] = U[:, 3] @ C
    yield pytest.param(X, None, (U, S, Vh), dict(gU=gU, gVh=gVh), "null", id="<C, u_4 v_4^T>")
    yield pytest.param(
        X, None, (U, S, Vh), dict(gS=np.ones(4)), "null", id="nuclear norm, rank-deficient"
    )

    def range_projector(Y):
        u = _svd_np(Y)[0][:, :3]
        return np.sum(C[:, :1].T @ (u @ u.T) @ C[:, :1])

    gU = np.zeros((6, 4))
    gU[:, :3] = 2 * (C[:, :1] @ C[:, :1].T) @ U[:, :3]
    yield pytest.param(X, range_projector, (U, S, Vh), dict(gU=gU), None, id="range projector")

    # full SVD: a loss of the extra columns alone, U2 U2^T (gauge invariant)
    Y = _randn(rng, (6, 4))
    U, S, Vh = _svd_np(Y, full=True)
    D = _randn(rng, (6, 6))
    D = D + D.T

    def extra(Z):
        u2 = _svd_np(Z, full=True)[0][:, 4:]
        return np.sum(D * (u2 @ u2.T))

    gU = np.zeros((6, 6))
    gU[:, 4:] = 2 * D @ U[:, 4:]
    yield pytest.param(Y, extra, (U, S, Vh), dict(gU=gU), None, id="extra columns U2 U2^T")
    gU = np.zeros((6, 6))
    gU[:, 4] = D[:, 0]
    yield pytest.param(Y, None, (U, S, Vh), dict(gU=gU), "null", id="one extra column")


@pytest.mark.parametrize("A, loss, factors, cots, flagged", list(_loss_cases()))
def test_vjp_reports_what_cotangents_cannot_determine(A, loss, factors, cots, flagged):
    gA, info = svd_vjp(A, **cots, factors=factors, return_info=True)
    fields = {
        "spectrum": info.spectrum_relative,
        "null": info.null_space_relative,
        "rotation": info.rotation_relative,
    }
    if flagged is None:
        assert float(info.gauge_relative) < CLEAN
        dA = np.random.default_rng(0).standard_normal(A.shape)
        assert abs(float(np.sum(np.asarray(gA) * dA)) - _central(loss, A, dA)) < RTOL_FD * max(
            1.0, float(np.sum(np.abs(np.asarray(gA) * dA)))
        )
    else:
        assert float(fields[flagged]) > DETECTED
        assert float(info.gauge_relative) >= float(fields[flagged])


@pytest.mark.parametrize("cplx", [False, True], ids=["real", "complex"])
def test_factors_with_other_signs_or_phases_give_the_right_gradient(cplx):
    """Cotangents taken at an equally valid SVD (another sign or phase per pair): with the
    factors the gradient is right; without them svd_vjp pairs with its own factors."""
    rng = np.random.default_rng(8)
    A = _randn(rng, (6, 4), cplx)
    B = _randn(rng, (6, 4), cplx)
    U, S, Vh = _svd_np(A)
    phase = np.exp(1j * rng.uniform(0, 2 * np.pi, 4)) if cplx else np.array([1, -1, -1, 1.0])
    U, Vh = U * phase, np.conj(phase)[:, None] * Vh

    def loss(X):  # Re <B, U S^3 Vh> = Re <B, X X^H X>: a function of A alone
        return np.real(np.sum(np.conj(B) * (X @ _H(X) @ X)))

    # Hermitian-pairing cotangents of Re sum(conj(B) * U S^3 Vh) at these factors
    gU = B @ (_H(Vh) * S**3)
    gS = 3 * S**2 * np.real(np.sum(np.conj(U) * (B @ _H(Vh)), 0))
    gVh = _H(U * S**3) @ B
    kw = dict(convention="torch")
    gA = np.asarray(svd_vjp(A, gU, gS, gVh, factors=(U, S, Vh), **kw))
    dA = _randn(rng, A.shape, cplx)
    ref = _central(loss, A, dA)
    assert abs(np.real(np.sum(np.conj(gA) * dA)) - ref) < RTOL_FD * abs(ref) + 1e-9
    wrong = np.asarray(svd_vjp(A, gU, gS, gVh, **kw))
    assert abs(np.real(np.sum(np.conj(wrong) * dA)) - ref) > 1e-3 * abs(ref)


def test_factors_that_do_not_factor_a_are_refused():
    rng = np.random.default_rng(9)
    A = rng.standard_normal((5, 3))
    U, S, Vh = _svd_np(A)
    with pytest.raises(ValueError, match="factors do not factor A"):
        svd_vjp(A, gS=np.ones(3), factors=(U, S * 1.01, Vh))
    with pytest.raises(ValueError, match="factors do not factor A"):
        svd_vjp(A + 1e-3, gS=np.ones(3), factors=(U, S, Vh))
    with pytest.raises(ValueError, match="Vh must have shape"):
        svd_vjp(A, gS=np.ones(3), factors=(U, S, Vh[:2]))
    # under jit the check cannot raise: the residual is in the diagnostics
    res = jax.jit(lambda a: svd_vjp(a, gS=jnp.ones(3), factors=(U, S * 1.01, Vh), return_info=True))
    assert float(res(A)[1].factor_residual) > 1e-3
