"""Shared pieces of the SVD rules: transposes and the reciprocals of singular-value differences.

Notation (used in every module of this package): A = U diag(s) Vh with k = min(m, n),
V = Vh^H, P = U^H dA V. Townsend's F_ij = 1/(s_j^2 - s_i^2) is never formed from the
squares: it is split into

    Dinv_ij  = 1/(s_j - s_i)   (reciprocal differences; antisymmetric, zero diagonal)
    Sinv2_ij = 1/(s_j + s_i)   (reciprocal sums; symmetric, zero diagonal)

so that F_ij (P_ij s_j + s_i conj(P_ji)) = Dinv_ij Sym(P)_ij + Sinv2_ij Skew(P)_ij, with
Sym(P) = (P + P^H)/2 and Skew(P) = (P - P^H)/2. Splitting keeps full precision for large and
tiny singular values, and lets a degenerate pair drop the 1/(s_j - s_i) term alone while the
1/(s_j + s_i) term, which carries the relative rotation of U and V inside the degenerate block,
stays.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jax import lax

#: Default degeneracy tolerance, in units of machine epsilon times the largest singular value.
DEGENERACY_FACTOR = 64


def _T(x):
    return jnp.swapaxes(x, -1, -2)


def _H(x):
    return jnp.conj(_T(x))


def _Hdot(X, Y):
    """X^H @ Y, a contraction over the leading (row) axis of both.

    XLA's CPU matmul is up to 2.5x slower when the left operand is a folded transpose (1024 x 1024:
    ~70 ms against ~30 ms), so for wide enough X the conjugate transpose is materialised first
    (the barrier stops XLA from folding it back into the product). For tall-and-thin X the
    product is memory-bound and the plain form is as fast.
    """
    XH = _H(X)
    if X.shape[-1] >= 128:
        XH = lax.optimization_barrier(XH)
    return XH @ Y


def lift(x, ndim: int):
    """x with leading singleton axes up to ndim dimensions.

    When a tangent or cotangent carries more batch dimensions than A (many tangents, one SVD),
    the arrays built from the SVD are lifted explicitly before they meet it elementwise: the
    rules rely on no implicit rank promotion (they run under jax_numpy_rank_promotion="raise").
    """
    return x.reshape((1,) * (ndim - x.ndim) + x.shape) if x.ndim < ndim else x


def diag_matrix(d, dtype):
    """The diagonal matrices (..., k, k) of dtype with the entries d (..., k) on the diagonal."""
    k = d.shape[-1]
    eye = jnp.broadcast_to(jnp.eye(k, dtype=dtype), d.shape + (k,))
    return d.astype(dtype)[..., :, None] * eye


def is_complex(x) -> bool:
    return jnp.issubdtype(x.dtype, jnp.complexfloating)


def real_dtype(dtype):
    return jnp.finfo(dtype).dtype


class Reciprocals(NamedTuple):
    """Everything a rule divides by, with tolerances already applied.

    Dinv, Sinv2: (..., k, k) real; s_inv: (..., k) real (zero beyond the numerical rank);
    degenerate: (..., k, k) bool, off-diagonal pairs with |s_i - s_j| <= degeneracy_tol (their
        1/(s_j - s_i) is cut unless eps > 0, where the broadening regularises them instead);
    rank_cut: (..., k) bool, singular values at or below the rank tolerance;
    deg_tol: (...,) the degeneracy tolerance in force (the default resolved).
    """

    Dinv: jnp.ndarray
    Sinv2: jnp.ndarray
    s_inv: jnp.ndarray
    degenerate: jnp.ndarray
    rank_cut: jnp.ndarray
    deg_tol: jnp.ndarray


def default_tolerances(s, m: int, n: int):
    """(degeneracy_tol, rank_tol) defaults for singular values s of shape (..., k).

    rank_tol follows numpy.linalg.matrix_rank: s_max * max(m, n) * eps.
    degeneracy_tol is DEGENERACY_FACTOR * eps * s_max.
    """
    eps = jnp.finfo(s.dtype).eps
    s_max = jnp.max(s, axis=-1, initial=0.0) if s.shape[-1] else jnp.zeros(s.shape[:-1], s.dtype)
    return DEGENERACY_FACTOR * eps * s_max, max(m, n) * eps * s_max


def reciprocals(s, m: int, n: int, eps, degeneracy_tol, rank_tol) -> Reciprocals:
    """The reciprocals of differences and sums of singular values, with tolerances.

    eps > 0: Lorentzian broadening, each 1/x with x = s_j^2 - s_i^2 becomes x / (x^2 + eps)
    (no degeneracy cut then: the broadening is the regularisation).
    degeneracy_tol, rank_tol: negative means "use the default" (see default_tolerances).
    """
    dtype = s.dtype
    eps = jnp.asarray(eps).astype(dtype)
    deg_default, rank_default = default_tolerances(s, m, n)
    degeneracy_tol = jnp.asarray(degeneracy_tol).astype(dtype)
    rank_tol = jnp.asarray(rank_tol).astype(dtype)
    deg_tol = jnp.where(degeneracy_tol < 0, deg_default, degeneracy_tol)
    rank_tol = jnp.where(rank_tol < 0, rank_default, rank_tol)
    deg_tol_b = deg_tol[..., None, None]

    keep = s > rank_tol[..., None]  # inside the numerical rank
    s_safe = jnp.where(keep, s, 1)
    s_inv = jnp.where(keep, 1 / s_safe, 0)

    si = s[..., :, None]
    sj = s[..., None, :]
    diff = sj - si  # s_j - s_i
    summ = sj + si  # s_j + s_i
    k = s.shape[-1]
    # explicit batch dimensions: no implicit rank promotion (jax_numpy_rank_promotion="raise")
    offdiag = jnp.broadcast_to(~jnp.eye(k, dtype=bool), diff.shape)
    # a pair lies in the numerical null space when neither value is inside the rank
    pair_kept = keep[..., :, None] | keep[..., None, :]

    degenerate = offdiag & (jnp.abs(diff) <= deg_tol_b)
    use_diff = offdiag & pair_kept & ~degenerate
    use_sum = offdiag & pair_kept & (summ > 0)
    exact_Dinv = jnp.where(use_diff, 1 / jnp.where(use_diff, diff, 1), 0)
    exact_Sinv2 = jnp.where(use_sum, 1 / jnp.where(use_sum, summ, 1), 0)

    # Lorentzian broadening: F = x / (x^2 + eps) written as 1/(x + eps/x) where |x| is large, so
    # that x^2 neither overflows nor underflows; x = 0 gives F = 0. Every branch divides by a
    # guarded input (xs, never 0; big and small split before dividing), so that the branches
    # jnp.where discards stay finite and no NaN comes back in reverse mode (double-where).
    x = diff * summ
    zero = x == 0
    big = jnp.abs(x) > 1
    xs = jnp.where(zero, 1, x)
    x_big = jnp.where(big, xs, 1)
    x_small = jnp.where(big, 0, x)
    denom_small = x_small * x_small + eps
    denom_small = jnp.where(denom_small == 0, 1, denom_small)
    F = jnp.where(zero, 0, jnp.where(big, 1 / (x_big + eps / x_big), x_small / denom_small))
    F = jnp.where(offdiag, F, 0)
    broad_Dinv = F * summ
    broad_Sinv2 = jnp.where(pair_kept, F * diff, 0)

    broadened = eps > 0
    Dinv = jnp.where(broadened, broad_Dinv, exact_Dinv)
    Sinv2 = jnp.where(broadened, broad_Sinv2, exact_Sinv2)
    return Reciprocals(Dinv, Sinv2, s_inv, degenerate, ~keep, deg_tol)
