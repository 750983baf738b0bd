"""Small numerics shared by the references: errors, gauge alignment, finite-difference steps,
random directions, and the groups of singular values finite differences can tell apart."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .report import Case

#: finite differences resolve two singular values (or a value and zero) when their gap is at
#: least this many times the size of the perturbation h ||dA||_2; closer ones form one group
RESOLUTION = 1e3

#: the rules' default degeneracy tolerance, in machine eps times max(S) (rules/_common.py)
DEGENERACY_FACTOR = 64


def rel_error(x, ref, floor: float = 0.0) -> float:
    """||x - ref|| / max(||ref||, floor) in the Frobenius norm.

    floor is the natural size of the quantity (e.g. ||dA|| / ||A|| for dU): a reference that is
    zero or nearly so (dA parallel to A gives dU = 0) is then measured against the scale of the
    problem instead of against its own rounding noise.
    """
    x = np.asarray(x)
    ref = np.asarray(ref)
    num = np.linalg.norm((x - ref).ravel())
    den = max(float(np.linalg.norm(ref.ravel())), floor)
    if den == 0:
        return float(num)
    return float(num / den)


def _H(x):
    return np.conj(np.swapaxes(x, -1, -2))


def elements(x, core: int):
    """x (..., *core dims) as a stack (-1, *core dims): one entry per matrix of a batch."""
    x = np.asarray(x)
    return x.reshape((-1,) + x.shape[x.ndim - core :])


def polar(M):
    """Unitary factor of M (batched)."""
    W, _, Zh = np.linalg.svd(M)
    return W @ Zh


def pair_phases(c):
    """Unit phases (signs for real c) of the overlaps c; 1 where c is zero."""
    c = np.asarray(c)
    if np.iscomplexobj(c):
        a = np.abs(c)
        return np.where(a > 0, c / np.where(a > 0, a, 1), 1)
    return np.where(c < 0, -1.0, 1.0)


def align_factors(U, s, Vh, U0, Vh0, full_matrices: bool):
    """(U, s, Vh) with the gauge aligned to the reference factors (U0, Vh0).

    The phase (sign) of each singular pair is taken from V, as the rules' gauge has
    Im diag(V^H dV) = 0; the extra columns of a full SVD are rotated onto the reference's by an
    orthogonal/unitary Procrustes rotation, which realises the horizontal gauge.
    """
    m, n = U.shape[-2], Vh.shape[-1]
    k = min(U.shape[-1], Vh.shape[-2], m, n)
    # Vh = conj(d) Vh0 per row gives c = d |c|; the pair is multiplied back by d
    ph = np.conj(pair_phases(np.sum(Vh0[..., :k, :] * np.conj(Vh[..., :k, :]), axis=-1)))
    U = U.copy()
    Vh = Vh.copy()
    U[..., :, :k] = U[..., :, :k] * ph[..., None, :]
    Vh[..., :k, :] = Vh[..., :k, :] * np.conj(ph)[..., :, None]
    if full_matrices and m > n:
        U2 = U[..., :, k:]
        U[..., :, k:] = U2 @ polar(_H(U2) @ U0[..., :, k:])
    if full_matrices and n > m:
        Vh2 = Vh[..., k:, :]
        Vh[..., k:, :] = _H(polar(Vh2 @ _H(Vh0[..., k:, :]))) @ Vh2
    return U, s, Vh


def aligned_svd(A, full_matrices: bool, U0, Vh0):
    """numpy SVD of A with the gauge aligned to the reference factors (U0, Vh0)."""
    U, s, Vh = np.linalg.svd(A, full_matrices=full_matrices)
    return align_factors(U, s, Vh, U0, Vh0, full_matrices)


def fd_jvp(A, dA, case: Case, h: float):
    """Central differences of the gauge-aligned numpy SVD (64-bit), where U and V are smooth."""
    U0, s0, Vh0 = np.linalg.svd(A, full_matrices=case.full_matrices)
    Ap, Am = A + h * dA, A - h * dA
    Up, sp, Vhp = aligned_svd(Ap, case.full_matrices, U0, Vh0)
    Um, sm, Vhm = aligned_svd(Am, case.full_matrices, U0, Vh0)
    dS = (sp - sm) / (2 * h)
    if not case.compute_uv:
        return {"dS": dS}
    return {"dU": (Up - Um) / (2 * h), "dS": dS, "dVh": (Vhp - Vhm) / (2 * h)}


def fd_step(A, dA, relative: float | None = None) -> float:
    """The absolute step t of A + t dA for a relative step (default cbrt(eps), about 6e-6):
    t = relative ||A|| / ||dA||."""
    if relative is None:
        relative = float(np.cbrt(np.finfo(np.float64).eps))
    na = float(np.linalg.norm(np.ravel(A)))
    nd = float(np.linalg.norm(np.ravel(dA)))
    return float(relative * max(na, 1e-300) / nd) if nd else 1.0


def conditioning(s, rel_tol=1e-8) -> dict:
    s = np.asarray(s)
    s_max = float(np.max(s)) if s.size else 0.0
    s_min = float(np.min(s)) if s.size else 0.0
    if s.shape[-1] > 1:
        gaps = np.abs(s[..., :-1] - s[..., 1:])
        min_gap = float(np.min(gaps))
        near = int(np.sum(gaps <= rel_tol * max(s_max, np.finfo(float).tiny)))
    else:
        min_gap, near = float("inf"), 0
    return {
        "min_singular_value": s_min,
        "max_singular_value": s_max,
        "min_gap": min_gap,
        "near_degenerate_pairs": near,
    }


def random_directions(shape, case: Case, seed: int = 0, rank: int | None = None) -> dict:
    """dA, gU, gS, gVh drawn from a standard normal (complex for complex cases).

    With rank, the cotangents are those of the top rank triplets (and gerr of the error).
    """
    rng = np.random.default_rng(seed)
    m, n = shape[-2:]
    batch = tuple(shape[:-2])
    k = min(m, n) if rank is None else rank
    ku, kv = (m, n) if (case.full_matrices and rank is None) else (k, k)

    def draw(sh, real=False):
        x = rng.standard_normal(batch + sh)
        if case.complex and not real:
            x = x + 1j * rng.standard_normal(batch + sh)
        return x

    out = {
        "dA": draw((m, n)),
        "gU": draw((m, ku)),
        "gS": draw((k,), real=True),
        "gVh": draw((kv, n)),
    }
    if rank is not None:
        out["gerr"] = draw((), real=True)
    return out


def rule_tolerances(s, m: int, n: int, dtype, degeneracy_tol=None, rank_tol=None):
    """The degeneracy and rank tolerances the rules use for singular values s (one matrix)."""
    eps = float(np.finfo(np.dtype(dtype)).eps)
    s_max = float(np.max(s, initial=0.0))
    deg = DEGENERACY_FACTOR * eps * s_max if degeneracy_tol is None else float(degeneracy_tol)
    rnk = max(m, n) * eps * s_max if rank_tol is None else float(rank_tol)
    return deg, rnk


@dataclass(frozen=True)
class Groups:
    """The singular values of one matrix, grouped as finite differences can tell them apart.

    blocks: groups of consecutive nonzero values (singletons included) whose internal gaps are
        below what finite differences resolve; null: the values they cannot tell from zero.
    rule_cut: per block, whether every pair inside it is degenerate for the rules (their
        1/(s_j - s_i) term was cut, and svd_jvp selected the basis); null_cut: whether every
        null value is at or below the rules' rank tolerance.
    """

    blocks: tuple[tuple[int, ...], ...]
    null: tuple[int, ...]
    rule_cut: tuple[bool, ...]
    null_cut: bool

    @property
    def simple(self) -> bool:
        """Every value resolved and nonzero: U and V themselves are smooth here."""
        return not self.null and all(len(b) == 1 for b in self.blocks)


def group_values(s, resolution: float, deg_tol: float, rank_tol: float) -> Groups:
    """Groups of the descending singular values s of one matrix (see Groups)."""
    s = np.asarray(s, dtype=np.float64)
    zero = max(resolution, rank_tol)
    null = tuple(int(i) for i in np.nonzero(s <= zero)[0])
    live = [i for i in range(s.shape[-1]) if i not in null]
    blocks: list[list[int]] = []
    cut: list[bool] = []
    for i in live:
        if blocks and s[blocks[-1][-1]] - s[i] <= max(resolution, deg_tol):
            cut[-1] = cut[-1] and bool(s[blocks[-1][-1]] - s[i] <= deg_tol)
            blocks[-1].append(i)
        else:
            blocks.append([i])
            cut.append(True)
    null_cut = bool(all(s[i] <= rank_tol for i in null))
    return Groups(tuple(tuple(b) for b in blocks), null, tuple(cut), null_cut)


def batch_groups(S, dA, h: float, m: int, n: int, dtype, degeneracy_tol=None, rank_tol=None):
    """Groups for each matrix of a batch (S (..., k) the rules' values, dA (..., m, n))."""
    k = S.shape[-1]
    S2 = np.asarray(S).reshape(-1, k)
    dA2 = np.asarray(dA).reshape(-1, m, n)
    out = []
    for s, d in zip(S2, dA2, strict=True):
        deg, rnk = rule_tolerances(s, m, n, dtype, degeneracy_tol, rank_tol)
        resolution = RESOLUTION * h * (float(np.linalg.norm(d, 2)) if d.size else 0.0)
        out.append(group_values(s, resolution, deg, rnk))
    return out
