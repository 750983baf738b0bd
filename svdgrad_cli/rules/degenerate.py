"""Degenerate and rank-deficient spectra: what the tangent selects, what a cotangent cannot say.

Clusters. Singular values are sorted, so the degenerate blocks are runs of consecutive values
whose gaps are within the degeneracy tolerance; values inside the numerical rank only (a value
at or below the rank tolerance belongs to the null space, treated on its own below).

Forward mode (degenerate perturbation theory). Inside a block s_i = s_j = s the singular vectors
are any orthonormal basis of the block's subspace, rotated together (U_b W, V_b W). Along a
tangent dA the values split as s + t lambda, lambda the eigenvalues of the Hermitian part of the
block of P = U^H dA V, and the perturbed SVD converges, as t -> 0, to the basis of that block's
eigenvectors W. In that basis the Hermitian part of the block is diagonal, the 1/(s_j - s_i)
term that the degeneracy cut drops multiplies zero, and the first-order rule is exact: dS is
lambda (descending), and the chain rule dA = dU S Vh + U dS Vh + U S dVh holds. The selection
is not linear in dA, so it is done in svd_jvp only, never inside a custom_jvp rule.

Reverse mode. At an exactly degenerate point a smooth loss has a gradient tr(G H) in terms of
the block's Hermitian perturbation H, and the cotangents of (U, S, Vh) give the diagonal of G
alone (gS on the block). When gS is not constant on a block (the loss distinguishes the values
of a degenerate block, e.g. the largest of two equal values, or U f(S) Vh with f' != 0 seen
along a generic direction), the gradient is not determined by the cotangents, and its size is
reported. A rotation of the block's basis changes nothing only if the skew-Hermitian part of
U_b^H gU_b + V_b^H gV_b vanishes (the gauge residual). For singular values in the null space
U_z and V_z rotate independently, inside the whole orthogonal complement of the kept vectors:
U_z^H gU_z and V_z^H gV_z must each be Hermitian, and the part of gU_z (gV_z) outside the
returned columns must vanish.
"""

from __future__ import annotations

import jax.numpy as jnp

from ._common import _H, Reciprocals


def _eye(like, dtype):
    """The identity broadcast to the shape of the (..., k, k) array like (no rank promotion)."""
    return jnp.broadcast_to(jnp.eye(like.shape[-1], dtype=dtype), like.shape)


def clusters(s, rec: Reciprocals):
    """(same, split_possible): same[..., i, j] when i and j are in one degenerate block.

    same is True on the diagonal; rank-cut values are singletons.
    """
    k = s.shape[-1]
    keep = ~rec.rank_cut
    if k == 0:
        e = jnp.zeros(s.shape[:-1] + (0, 0), bool)
        return e, jnp.zeros(s.shape[:-1], bool)
    gaps = s[..., :-1] - s[..., 1:]
    joined = (gaps <= rec.deg_tol[..., None]) & keep[..., :-1] & keep[..., 1:]
    start = jnp.concatenate([jnp.ones(s.shape[:-1] + (1,), bool), ~joined], axis=-1)
    cid = jnp.cumsum(start.astype(jnp.int32), axis=-1)
    same = cid[..., :, None] == cid[..., None, :]
    return same, jnp.any(joined, axis=-1)


def block_hermitian(P, same):
    """The Hermitian part of P restricted to the degenerate blocks (zero elsewhere)."""
    H = (P + _H(P)) / 2
    return jnp.where(same, H, 0)


def split_size(P, same):
    """max |off-diagonal Hermitian part of P inside a block|: how much the tangent splits."""
    off = same & ~_eye(same, bool)
    H = jnp.abs(block_hermitian(P, off))
    return jnp.max(H, axis=(-2, -1), initial=0.0)


def selected_basis(P, same):
    """W (..., k, k), block-diagonal and unitary: the basis the tangent selects in each block.

    W^H Herm(P) W is diagonal on every block with the eigenvalues descending, and W is the
    identity on the singletons. The blocks are diagonalised in one Hermitian eigensolve of
    -Herm_blocks(P) + diag(c_i * 3 r), c_i the block index and r a Gershgorin bound on the
    blocks' eigenvalues: the shift keeps each block's eigenvalues in an interval of its own, in
    block order, so the eigenvectors come out block by block (a mask removes rounding-level
    mixing) and, within a block, in descending order of the Hermitian part's eigenvalues.
    """
    H = block_hermitian(P, same)
    r = jnp.max(jnp.sum(jnp.abs(H), axis=-1), axis=-1)
    r = jnp.where(r > 0, r, 1)
    # block index of each column: the number of block starts up to it
    first = jnp.concatenate(
        [jnp.ones(same.shape[:-2] + (1,), bool), ~jnp.diagonal(same, 1, -2, -1)], axis=-1
    )
    cid = jnp.cumsum(first.astype(r.dtype), axis=-1) - 1
    shift = (3 * r)[..., None] * cid
    M = -H + shift[..., :, None].astype(H.dtype) * _eye(H, H.dtype)
    _, W = jnp.linalg.eigh(M)
    W = jnp.where(same, W, 0)
    d = jnp.diagonal(W, axis1=-2, axis2=-1)
    ad = jnp.abs(d)
    phase = jnp.where(ad > 0, jnp.conj(d) / jnp.where(ad > 0, ad, 1).astype(d.dtype), 1)
    return W * phase[..., None, :]


# --------------------------------------------------------------------------- reverse mode


def _amax(x):
    return jnp.max(jnp.abs(x), initial=0.0) if x.size else jnp.zeros((), jnp.abs(x).dtype)


def null_frame_dependence(Z, null):
    """max |skew-Hermitian part of Z| among null columns: Z = U^H GU over the returned columns
    (the extra columns of a full SVD count as null), null (..., p) bool."""
    pair = null[..., :, None] & null[..., None, :]
    return _amax(jnp.where(pair, Z - _H(Z), 0))


def reverse_ambiguity(s, rec: Reciprocals, M_U, M_V, gS):
    """Absolute sizes of what the cotangents leave undetermined inside the numerical rank.

    M_U = U^H GU, M_V = Vh GVh^H over the k thin columns (None when the cotangent is absent),
    gS the cotangent of S (None when absent). Returns (rotation, spectrum, null_values, scale):
    rotation, the skew part of M_U + M_V on the diagonal and on degenerate blocks (phase of
    complex pairs, rotations inside a block); spectrum, the spread of gS on a degenerate block;
    null_values, gS on singular values in the null space (sigma(t) ~ |t| there: no derivative);
    scale, the largest of |M_U|, |M_V| and |gS|.
    """
    k = s.shape[-1]
    same, _ = clusters(s, rec)
    null = rec.rank_cut
    kept_pair = ~null[..., :, None] & ~null[..., None, :]
    zero = jnp.zeros((), jnp.finfo(s.dtype).dtype)
    rotation = spectrum = null_values = scale = zero

    parts = [M for M in (M_U, M_V) if M is not None]
    if parts:
        N = parts[0] if len(parts) == 1 else parts[0] + parts[1]
        rotation = _amax(jnp.where(same & kept_pair, N - _H(N), 0))
        for M in parts:
            scale = jnp.maximum(scale, _amax(M))
    if gS is not None and k:
        off = same & kept_pair & ~_eye(same, bool)
        spread = jnp.abs(gS[..., :, None] - gS[..., None, :])
        spectrum = _amax(jnp.where(off, spread, 0))
        null_values = _amax(jnp.where(null, gS, 0))
        scale = jnp.maximum(scale, _amax(gS))
    return rotation, spectrum, null_values, scale


# --------------------------------------------------------------------------- the null space


def null_basis(U, Vh, dA, null, thin_svd=None):
    """U, Vh with their null columns (s = 0 within rank_tol) in the basis dA selects, and ok.

    Zero singular values split as t sigma_j(Y), Y the block of dA between the left and right
    null spaces: for m >= n, Y = (I - U_r U_r^H) dA V_z (the left null space is wider than the
    returned columns), for m < n, Y = U_z^H dA (I - V_r V_r^H). With Y = L Sigma R^H, the
    perturbed SVD converges to u_z = L, v_z = V_z R (or the mirror), and dS there is Sigma >= 0;
    the null columns sit at the end, so the j-th null column takes the j-th singular triplet
    of Y. ok is False (and nothing changes) where a null value does not split, i.e. Y has fewer
    than the number of null values nonzero singular values: the vectors are not selected then.
    thin_svd(Y) -> (L, sigma, Rh): pass one whose derivative is finite at repeated and zero
    values (svdgrad's own), so that differentiating through an unselected branch gives no NaN.
    """
    if thin_svd is None:

        def thin_svd(Y):
            return jnp.linalg.svd(Y, full_matrices=False)

    m, k = U.shape[-2:]
    n = Vh.shape[-1]
    keep = ~null
    r = jnp.sum(keep, axis=-1)
    kf = keep.astype(U.dtype)
    nf = null.astype(U.dtype)
    idx = jnp.clip(jnp.broadcast_to(jnp.arange(k), null.shape) - r[..., None], 0, k - 1)
    if m >= n:
        X = dA @ _H(Vh)  # (m, k)
        Uk = U * kf[..., None, :]
        Y = (X - Uk @ (_H(Uk) @ X)) * nf[..., None, :]
        L, sig, Rh = thin_svd(Y)
        Lg = jnp.take_along_axis(L, idx[..., None, :], axis=-1)
        Rg = jnp.take_along_axis(_H(Rh), idx[..., None, :], axis=-1)  # (k, k) columns
        U_new = jnp.where(null[..., None, :], Lg, U)
        Vh_new = jnp.where(null[..., :, None], _H(Rg) @ Vh, Vh)
    else:
        Z = U.conj().swapaxes(-1, -2) @ dA  # (k, n)
        Vk = Vh * kf[..., :, None]
        Y = (Z - (Z @ _H(Vk)) @ Vk) * nf[..., :, None]
        L, sig, Rh = thin_svd(Y)
        Lg = jnp.take_along_axis(L, idx[..., None, :], axis=-1)
        Rhg = jnp.take_along_axis(Rh, idx[..., :, None], axis=-2)
        U_new = jnp.where(null[..., None, :], U @ Lg, U)
        Vh_new = jnp.where(null[..., :, None], Rhg, Vh)
    sig_g = jnp.take_along_axis(sig, idx, axis=-1)
    top = jnp.max(sig, axis=-1, initial=0.0)
    tiny = 16 * jnp.finfo(sig.dtype).eps * jnp.maximum(top, jnp.finfo(sig.dtype).tiny)
    ok = jnp.all(jnp.where(null, sig_g > tiny[..., None], True), axis=-1) & jnp.any(null, -1)
    U_new = jnp.where(ok[..., None, None], U_new, U)
    Vh_new = jnp.where(ok[..., None, None], Vh_new, Vh)
    return U_new, Vh_new, ok
