"""Thin SVD rules (full_matrices=False), real and complex, forward and reverse.

Derivation (Townsend 2016 for the real case, Wan and Zhang 2019 for the complex phase term).
Differentiating A = U S V^H with U^H U = I, V^H V = I and P = U^H dA V gives

    dS = Re diag(P)
    dU = U Omega_U + (I - U U^H) dA V S^-1
    dV = V Omega_V + (I - V V^H) dA^H U S^-1
    Omega_U = Dinv o Sym(P) + Sinv2 o Skew(P) + i diag(Im P_ii / s_i)
    Omega_V = Dinv o Sym(P) - Sinv2 o Skew(P)

(Dinv, Sinv2 as in _common). The phase of each complex singular pair (u_i, v_i) is arbitrary;
the gauge fixed here is JAX's: Im diag(V^H dV) = 0, so the whole phase term i Im P_ii / s_i
lands in dU. Projector terms are computed as X - U (U^H X), never with an m x m or n x n matrix.

The reverse rule is the exact transpose of the forward rule above (gauge included) under the
Hermitian pairing <X, Y> = Re sum(conj(X) * Y). With M_U = U^H GU, M_V = V^H GV (GV = GVh^H),
N = M_U + M_V, K_U = M_U - M_U^H, K_V = M_V - M_V^H:

    G_P = 1/2 Dinv o (N - N^H) + 1/2 Sinv2 o (K_U - K_V) + diag(gS) + i diag(Im (M_U)_ii / s_i)
    GA  = U G_P V^H + (I - U U^H) GU S^-1 V^H + U S^-1 GVh (I - V V^H)

The conversion to and from JAX's unconjugated cotangents happens in svdgrad_cli.api.
"""

from __future__ import annotations

import jax.numpy as jnp

from ._common import _H, Reciprocals, _Hdot, diag_matrix, is_complex, lift


def _sym_skew(P):
    PH = _H(P)
    return (P + PH) / 2, (P - PH) / 2


def _phase_diag(X, s_inv):
    """i Im(diag X) / s as a diagonal matrix (zero beyond the numerical rank)."""
    d = jnp.imag(jnp.diagonal(X, axis1=-2, axis2=-1)) * lift(s_inv, X.ndim - 1)
    return diag_matrix(1j * d.astype(X.dtype), X.dtype)


def project(U, Vh, dA):
    """P = U^H dA V and the tall or wide intermediate a projector term needs.

    Returns (P, X) with X = dA V (m, k) when m > k, else X = U^H dA (k, n).
    """
    m, k = U.shape[-2:]
    if m > k:
        X = dA @ _H(Vh)  # (m, k)
        return _Hdot(U, X), X
    X = _Hdot(U, dA)  # (k, n)
    return X @ _H(Vh), X


def thin_jvp(U, s, Vh, dA, rec: Reciprocals):
    """Tangents (dU, dS, dVh) of the thin SVD. Shapes: U (..., m, k), s (..., k), Vh (..., k, n)."""
    P, X = project(U, Vh, dA)
    return thin_jvp_projected(U, s, Vh, P, X, rec)


def thin_jvp_projected(U, s, Vh, P, X, rec: Reciprocals):
    """thin_jvp from P = U^H dA V and X (dA V if m > k, else U^H dA), as :func:`project` gives."""
    m, n = U.shape[-2], Vh.shape[-1]
    k = s.shape[-1]
    cplx = is_complex(P)
    nd = P.ndim  # P may carry more batch dimensions than the SVD (many tangents, one SVD)
    s_inv = lift(rec.s_inv.astype(P.dtype), nd - 1)
    dS = jnp.real(jnp.diagonal(P, axis1=-2, axis2=-1))

    Sym, Skew = _sym_skew(P)
    Dinv = lift(rec.Dinv.astype(P.dtype), nd)
    Sinv2 = lift(rec.Sinv2.astype(P.dtype), nd)
    Omega_U = Dinv * Sym + Sinv2 * Skew
    Omega_V = Dinv * Sym - Sinv2 * Skew
    if cplx:
        Omega_U = Omega_U + _phase_diag(P, rec.s_inv)

    # dU = U Omega_U + (dA V - U P) S^-1 = U (Omega_U - P S^-1) + dA V S^-1 when m > k.
    if m > k:
        dU = U @ (Omega_U - P * s_inv[..., None, :]) + X * s_inv[..., None, :]
    else:
        dU = U @ Omega_U
    # dVh = dV^H = -Omega_V Vh + S^-1 (U^H dA - P Vh)  (Omega_V is skew-Hermitian).
    if n > k:
        dVh = (-Omega_V - s_inv[..., :, None] * P) @ Vh + s_inv[..., :, None] * X
    else:
        dVh = -Omega_V @ Vh
    return dU, dS, dVh


def thin_vjp(U, s, Vh, GU, gS, GVh, rec: Reciprocals, dtype):
    """Hermitian-pairing cotangent of A from (GU, gS, GVh); any of them may be None (zero).

    Returns (GA, M_U, M_V): the two k x k projections are returned for the gauge diagnostics.
    """
    m, n = U.shape[-2], Vh.shape[-1]
    k = s.shape[-1]
    V = _H(Vh)
    # the cotangents may carry more batch dimensions than the SVD: everything is lifted to the
    # batch they broadcast to, explicitly
    present = [(g, core) for g, core in ((GU, 2), (gS, 1), (GVh, 2)) if g is not None]
    batch = jnp.broadcast_shapes(s.shape[:-1], *[g.shape[: g.ndim - core] for g, core in present])
    nd = len(batch) + 2
    GU = None if GU is None else lift(GU, nd)
    GVh = None if GVh is None else lift(GVh, nd)
    s_inv = lift(rec.s_inv.astype(dtype), nd - 1)
    Dinv = lift(rec.Dinv.astype(dtype), nd)
    Sinv2 = lift(rec.Sinv2.astype(dtype), nd)

    # a missing cotangent is zero: its terms are left out, not computed with zeros
    M_U = _Hdot(U, GU) if GU is not None else None
    W = GVh @ V if GVh is not None else None  # M_V = W^H
    M_V = _H(W) if W is not None else None

    G_P = jnp.zeros(batch + (k, k), dtype)
    if M_U is not None:
        K_U = M_U - _H(M_U)
        G_P = G_P + 0.5 * (Dinv + Sinv2) * K_U
        if jnp.issubdtype(dtype, jnp.complexfloating):
            G_P = G_P + _phase_diag(M_U, rec.s_inv)
    if M_V is not None:
        K_V = M_V - _H(M_V)
        G_P = G_P + 0.5 * (Dinv - Sinv2) * K_V
    if gS is not None:
        G_P = G_P + lift(diag_matrix(gS, dtype), nd)

    # GA = U G_P V^H + (GU - U M_U) S^-1 V^H + U S^-1 (GVh - W V^H), grouped so that each tall
    # or wide product happens once.
    inner = G_P
    if GU is not None and m > k:
        inner = inner - M_U * s_inv[..., None, :]
    if GVh is not None and n > k:
        inner = inner - s_inv[..., :, None] * W
    if m > k:
        left = U @ inner
        if GU is not None:
            left = left + GU * s_inv[..., None, :]
        GA = left @ Vh
    else:
        right = inner @ Vh
        if GVh is not None and n > k:
            right = right + s_inv[..., :, None] * GVh
        GA = U @ right
    return GA, M_U, M_V
