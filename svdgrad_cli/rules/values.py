"""Singular values only (compute_uv=False): dS = Re diag(U^H dA V), GA = U diag(gS) V^H.

Only the diagonal of U^H dA V is needed, so it is formed as a column-wise inner product of U
with dA V (or of U^H dA with V), never as the k x k matrix.
"""

from __future__ import annotations

import jax.numpy as jnp

from ._common import _H, _Hdot


def values_jvp(U, Vh, dA):
    m, n = U.shape[-2], Vh.shape[-1]
    if m >= n:
        dAV = dA @ _H(Vh)  # (m, k)
        return jnp.real(jnp.sum(jnp.conj(U) * dAV, axis=-2))
    UhdA = _Hdot(U, dA)  # (k, n)
    return jnp.real(jnp.sum(UhdA * jnp.conj(Vh), axis=-1))


def values_vjp(U, Vh, gS, dtype):
    """Hermitian-pairing cotangent of A: U diag(gS) Vh."""
    return (U * gS.astype(dtype)[..., None, :]) @ Vh
