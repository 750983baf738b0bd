"""The whole SVD rule for every case: thin, full (m != n) and values only, both modes.

Each function takes the factors the tangent or cotangent belongs to, U (..., m, k or m),
s (..., k), Vh (..., k or n, n), and the reciprocals (see _common) built from s.
"""

from __future__ import annotations

import jax.numpy as jnp

from . import full, thin, values
from ._common import Reciprocals, _Hdot


def tangents(U, s, Vh, dA, rec: Reciprocals, full_matrices: bool):
    """(dU, dS, dVh) of A = U diag(s) Vh along dA, full or thin as U and Vh are."""
    k = s.shape[-1]
    U1, Vh1 = U[..., :, :k], Vh[..., :k, :]
    P, X = thin.project(U1, Vh1, dA)
    return tangents_projected(U, s, Vh, P, X, rec, full_matrices)


def tangents_projected(U, s, Vh, P, X, rec: Reciprocals, full_matrices: bool):
    """tangents() from P = U1^H dA V1 and X (dA V1 if m > k, else U1^H dA; see thin.project)."""
    m, n = U.shape[-2], Vh.shape[-1]
    k = s.shape[-1]
    U1, Vh1 = U[..., :, :k], Vh[..., :k, :]
    dU, dS, dVh = thin.thin_jvp_projected(U1, s, Vh1, P, X, rec)
    if full_matrices and m > n:
        # dU2 = -U1 S^-1 (dA V)^H U2 (horizontal gauge; see full.py), X = dA V here
        s_inv = rec.s_inv.astype(P.dtype)
        dU2 = -(U1 * s_inv[..., None, :]) @ _Hdot(X, U[..., :, k:])
        dU = jnp.concatenate([dU, jnp.broadcast_to(dU2, dU.shape[:-1] + dU2.shape[-1:])], -1)
    elif full_matrices and n > m:
        dVh2 = full.full_jvp_extra_Vh_projected(rec.s_inv.astype(P.dtype), Vh1, X, Vh[..., k:, :])
        dVh = jnp.concatenate([dVh, jnp.broadcast_to(dVh2, dVh.shape[:-2] + dVh2.shape[-2:])], -2)
    return dU, dS, dVh


def cotangent(U, s, Vh, GU, gS, GVh, rec: Reciprocals, dtype, full_matrices: bool):
    """Hermitian-pairing cotangent GA of A from (GU, gS, GVh), any of them None (zero).

    Returns (GA, M_U, M_V) with the thin projections M_U = U1^H GU1, M_V = Vh1 GVh1^H (or None).
    """
    m, n = U.shape[-2], Vh.shape[-1]
    k = s.shape[-1]
    U1, Vh1 = U[..., :, :k], Vh[..., :k, :]
    GU1 = None if GU is None else GU[..., :, :k]
    GVh1 = None if GVh is None else GVh[..., :k, :]
    if GU1 is None and GVh1 is None:
        GA = values.values_vjp(U1, Vh1, gS, dtype)
        return GA, None, None
    GA, M_U, M_V = thin.thin_vjp(U1, s, Vh1, GU1, gS, GVh1, rec, dtype)
    s_inv = rec.s_inv.astype(dtype)
    if full_matrices and m > n and GU is not None:
        GA = GA + full.full_vjp_extra_U(U1, s_inv, Vh1, GU[..., :, k:], U[..., :, k:])
    elif full_matrices and n > m and GVh is not None:
        GA = GA + full.full_vjp_extra_Vh(U1, s_inv, Vh1, GVh[..., k:, :], Vh[..., k:, :])
    return GA, M_U, M_V


__all__ = ["tangents", "tangents_projected", "cotangent"]
