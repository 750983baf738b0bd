"""Gauge-invariant functions of an SVD: what finite differences can check where U and V
themselves are not differentiable (equal singular values, null spaces, extra columns).

For each matrix and its Groups:

- S through its groups: each resolved value; inside a block of values the rules found equal,
  each value one-sided (the sorted values split along dA as the eigenvalues of the block of
  U^H dA V, which svd_jvp returns); a block of close but distinct values through its sum; zero
  values one-sided (they split as the singular values of the null block of dA), or through the
  sum of their squares when some are tiny but not zero for the rules;
- U_b Vh_b for each block b of nonzero values (the same for every basis of the block);
- U_N U_N^H and V_N V_N^H, the projectors onto the null columns together with the extra
  columns of a full SVD, where those columns span the whole null space on that side (not for
  U of a thin SVD with m > n, whose null columns are n - r of the m - r directions of the left
  null space: which ones depends on dA at second order).

InvariantLoss is a random linear combination of these, whose cotangents (computed here by hand
in JAX's pairing) determine the gradient at any such point.
"""

from __future__ import annotations

import numpy as np

from .numerics import _H, Groups


def left_null(groups: Groups, m: int, n: int, full: bool) -> tuple[int, ...] | None:
    """Columns of U spanning the whole left null space (with the extra ones of a full SVD), or
    None where the null columns of a thin SVD are only part of it."""
    k = min(m, n)
    if not (full or m <= n):
        return None if groups.null else ()
    return groups.null + (tuple(range(k, m)) if full else ())


def right_null(groups: Groups, m: int, n: int, full: bool) -> tuple[int, ...] | None:
    """Rows of Vh spanning the whole right null space (see left_null)."""
    k = min(m, n)
    if not (full or n <= m):
        return None if groups.null else ()
    return groups.null + (tuple(range(k, n)) if full else ())


def spectral_parts(groups: Groups, selected: bool = True, null_selected: bool = True):
    """[(kind, indices)] describing how S is compared: kind "value" (central), "one-sided",
    "sum" (central, of the values) or "squares" (central, of their squares). selected: the
    rules return the splitting of equal values (svd_jvp); null_selected: also of zero values.
    Zero values with no selected splitting are left out (kind "none")."""
    parts = []
    for block, cut in zip(groups.blocks, groups.rule_cut, strict=True):
        if len(block) == 1:
            parts.append(("value", block))
        elif cut and selected:
            parts.extend(("one-sided", (i,)) for i in block)
        else:
            parts.append(("sum", block))
    if groups.null:
        if not groups.null_cut:
            parts.append(("squares", groups.null))
        elif selected and null_selected:
            parts.extend(("one-sided", (i,)) for i in groups.null)
        else:
            parts.append(("none", groups.null))
    return parts


def spectral_vector(s, parts) -> np.ndarray:
    """The values of the parts for singular values s of one matrix (kind "none" left out)."""
    out = []
    for kind, idx in parts:
        if kind in ("value", "one-sided"):
            out.append(s[idx[0]])
        elif kind == "sum":
            out.append(np.sum(s[list(idx)]))
        elif kind == "squares":
            out.append(np.sum(s[list(idx)] ** 2))
    return np.asarray(out, dtype=np.float64)


def spectral_tangent(s, ds, parts) -> np.ndarray:
    """The derivative of spectral_vector given the tangent ds of s."""
    out = []
    for kind, idx in parts:
        if kind in ("value", "one-sided"):
            out.append(ds[idx[0]])
        elif kind == "sum":
            out.append(np.sum(ds[list(idx)]))
        elif kind == "squares":
            out.append(np.sum(2 * s[list(idx)] * ds[list(idx)]))
    return np.asarray(out, dtype=np.float64)


def spectral_one_sided(parts) -> np.ndarray:
    return np.asarray([kind == "one-sided" for kind, _ in parts if kind != "none"], dtype=bool)


def pair_products(U, Vh, blocks) -> np.ndarray:
    """U_b Vh_b for each block, stacked (nblocks, m, n)."""
    m, n = U.shape[-2], Vh.shape[-1]
    if not blocks:
        return np.zeros((0, m, n), dtype=np.result_type(U, Vh))
    return np.stack([U[:, list(b)] @ Vh[list(b), :] for b in blocks])


def pair_products_tangent(U, Vh, dU, dVh, blocks) -> np.ndarray:
    m, n = U.shape[-2], Vh.shape[-1]
    if not blocks:
        return np.zeros((0, m, n), dtype=np.result_type(U, Vh, dU, dVh))
    return np.stack(
        [dU[:, list(b)] @ Vh[list(b), :] + U[:, list(b)] @ dVh[list(b), :] for b in blocks]
    )


def left_projector(U, cols) -> np.ndarray:
    Uc = U[:, list(cols)]
    return Uc @ _H(Uc)


def left_projector_tangent(U, dU, cols) -> np.ndarray:
    Uc, dUc = U[:, list(cols)], dU[:, list(cols)]
    return dUc @ _H(Uc) + Uc @ _H(dUc)


def right_projector(Vh, rows) -> np.ndarray:
    Vr = Vh[list(rows), :]
    return _H(Vr) @ Vr


def right_projector_tangent(Vh, dVh, rows) -> np.ndarray:
    Vr, dVr = Vh[list(rows), :], dVh[list(rows), :]
    return _H(dVr) @ Vr + _H(Vr) @ dVr


def hermitian(rng, size, cplx):
    """A random Hermitian (symmetric for real) matrix."""
    X = rng.standard_normal((size, size))
    if cplx:
        X = X + 1j * rng.standard_normal((size, size))
    return (X + _H(X)) / 2


class InvariantLoss:
    """L(A) = sum over the matrices of a batch of

        sum_b Re<B_b, U_b Vh_b> + Re<C, U_N U_N^H> + Re<D, V_N V_N^H>
        + sum_b w_b sum_{i in b} s_i + w_0 sum_{i null} s_i^2

    (Re<X, Y> = Re sum(conj(X) * Y); C, D Hermitian; the U_N and V_N terms only where the
    null columns span the whole null space on that side). It is a smooth function of A at equal
    and zero singular values, and its cotangents determine the gradient there exactly.
    """

    def __init__(self, groups, m: int, n: int, case, rng):
        self.groups = list(groups)
        self.m, self.n = m, n
        self.full = case.full_matrices and case.compute_uv
        self.uv = case.compute_uv
        cplx = case.complex
        self.terms = []
        for g in self.groups:
            B = rng.standard_normal((len(g.blocks), m, n))
            if cplx:
                B = B + 1j * rng.standard_normal((len(g.blocks), m, n))
            lnull = left_null(g, m, n, self.full)
            rnull = right_null(g, m, n, self.full)
            self.terms.append(
                {
                    "B": B,
                    "w": rng.standard_normal(len(g.blocks)),
                    "w0": float(rng.standard_normal()),
                    "left": lnull or (),
                    "right": rnull or (),
                    "C": hermitian(rng, m, cplx),
                    "D": hermitian(rng, n, cplx),
                }
            )

    def _split(self, U, s, Vh):
        k = s.shape[-1]
        s2 = np.asarray(s).reshape(-1, k)
        if not self.uv:
            return [(None, x, None) for x in s2]
        U2 = np.asarray(U).reshape((-1,) + U.shape[-2:])
        V2 = np.asarray(Vh).reshape((-1,) + Vh.shape[-2:])
        return list(zip(U2, s2, V2, strict=True))

    def value(self, U, s, Vh) -> float:
        total = 0.0
        for g, t, (u, x, vh) in zip(self.groups, self.terms, self._split(U, s, Vh), strict=True):
            for w, b in zip(t["w"], g.blocks, strict=True):
                total += w * float(np.sum(x[list(b)]))
            if g.null:
                total += t["w0"] * float(np.sum(x[list(g.null)] ** 2))
            if not self.uv:
                continue
            W = pair_products(u, vh, g.blocks)
            total += float(np.real(np.sum(np.conj(t["B"]) * W)))
            if t["left"]:
                total += float(np.real(np.sum(np.conj(t["C"]) * left_projector(u, t["left"]))))
            if t["right"]:
                total += float(np.real(np.sum(np.conj(t["D"]) * right_projector(vh, t["right"]))))
        return total

    def cotangents(self, U, s, Vh) -> dict:
        """gU, gS, gVh in JAX's pairing (dL = Re sum(gU dU) + sum(gS dS) + Re sum(gVh dVh)),
        at the factors (U, s, Vh), shaped like them."""
        k = s.shape[-1]
        gS = np.zeros(np.shape(s), dtype=np.float64).reshape(-1, k)
        parts = self._split(U, s, Vh)
        if self.uv:
            dt = np.result_type(U, Vh, np.float64)
            gU = np.zeros((len(parts),) + U.shape[-2:], dtype=dt)
            gVh = np.zeros((len(parts),) + Vh.shape[-2:], dtype=dt)
        for e, (g, t, (u, x, vh)) in enumerate(zip(self.groups, self.terms, parts, strict=True)):
            for w, b in zip(t["w"], g.blocks, strict=True):
                gS[e, list(b)] = w
            if g.null:
                gS[e, list(g.null)] = 2 * t["w0"] * x[list(g.null)]
            if not self.uv:
                continue
            for B, b in zip(t["B"], g.blocks, strict=True):
                cols = list(b)
                # Re sum(conj(B) * (dU_b Vh_b + U_b dVh_b))
                gU[e][:, cols] += np.conj(B) @ vh[cols, :].T
                gVh[e][cols, :] += u[:, cols].T @ np.conj(B)
            if t["left"]:
                cols = list(t["left"])
                # Re sum(conj(C) * (dU U^H + U dU^H)) with C Hermitian
                gU[e][:, cols] += 2 * t["C"].T @ np.conj(u[:, cols])
            if t["right"]:
                rows = list(t["right"])
                # Re sum(conj(D) * (dVh^H Vh + Vh^H dVh)) with D Hermitian
                gVh[e][rows, :] += 2 * np.conj(vh[rows, :]) @ t["D"].T
        out = {"gS": gS.reshape(np.shape(s))}
        if self.uv:
            out["gU"] = gU.reshape(U.shape)
            out["gVh"] = gVh.reshape(Vh.shape)
        return out
