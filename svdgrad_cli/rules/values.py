"""Singular values only (compute_uv=False): dS = Re diag(U^H dA V), GA = U diag(gS) V^H.

Only the diagonal of U^H dA V is needed, so it is formed as a column-wise inner product of U
with dA V (or of U^H dA with V), never as the k x k matrix.
"""

from __future__ import annotations

import jax.numpy as jnp

from ._common import _H, _Hdot, lift


def values_jvp(U, Vh, dA):
    m, n = U.shape[-2], Vh.shape[-1]
    if m >= n:
        dAV = dA @ _H(Vh)  # (m, k)
        return jnp.real(jnp.sum(lift(jnp.conj(U), dAV.ndim) * dAV, axis=-2))
    UhdA = _Hdot(U, dA)  # (k, n)
    return jnp.real(jnp.sum(UhdA * lift(jnp.conj(Vh), UhdA.ndim), axis=-1))


def values_vjp(U, Vh, gS, dtype):
    """Hermitian-pairing cotangent of A: U diag(gS) Vh (gS may carry more batch dimensions)."""
    nd = max(U.ndim, gS.ndim + 1)
    return (lift(U, nd) * lift(gS.astype(dtype)[..., None, :], nd)) @ Vh
