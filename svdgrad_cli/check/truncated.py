"""The truncated SVD (top R triplets and err = ||A - U S Vh||_F): its evaluation, the quantities
finite differences compare, and the naive thin rule shown beside them.

Finite differences compare gauge-invariant functions of the top R triplets: the projectors
U U^H and V V^H, the best rank-R approximation U S Vh, S (through its groups) and err; gA is
checked through the loss of random multiples of these. The naive thin rule (the thin formula
applied to the truncated factors as if A - U S Vh were zero, which is what JAX, PyTorch and
TensorFlow do) is compared with the same finite differences, as information: its error is what
the coupling to the discarded spectrum is worth on this input.
"""

from __future__ import annotations

import numpy as np

from ..errors import ArgumentError
from . import invariants as inv
from .evaluate import Evaluation, _numpy_info, case_dtype
from .numerics import (
    _H,
    RESOLUTION,
    batch_groups,
    elements,
    fd_step,
    random_directions,
    rel_error,
    rule_tolerances,
)
from .report import Case, Row


def _split(rank, F):
    """(U, s, Vh, err) of the top rank triplets from a thin SVD F = (U, s, Vh) (U, Vh may be
    None for values only)."""
    U, s, Vh = F
    rest = s[..., rank:]
    err = np.sqrt(np.sum(rest * rest, axis=-1))
    U = None if U is None else U[..., :, :rank]
    Vh = None if Vh is None else Vh[..., :rank, :]
    return U, s[..., :rank], Vh, err


class TruncatedLoss:
    """L = Re<B, U U^H> + Re<C, V V^H> + Re<D, U S Vh> + sum_b w_b sum_{i in b} s_i + e err,
    summed over the batch (B, C Hermitian; b the groups of the kept values): a smooth function
    of A wherever s_R > s_{R+1}."""

    def __init__(self, groups, m, n, rank, case, rng):
        self.groups = list(groups)
        self.rank = rank
        self.uv = case.compute_uv
        cplx = case.complex
        nb = len(self.groups)
        self.B = np.stack([inv.hermitian(rng, m, cplx) for _ in range(nb)])
        self.C = np.stack([inv.hermitian(rng, n, cplx) for _ in range(nb)])
        D = rng.standard_normal((nb, m, n))
        D = D + 1j * rng.standard_normal((nb, m, n)) if cplx else D
        # U S Vh has f' != 0 on a block of equal kept values: no cotangent determines its
        # gradient there (see svd_vjp), so it is left out of such a matrix's loss
        simple = np.array([all(len(b) == 1 for b in g.blocks) for g in self.groups])
        self.D = D * simple[:, None, None]
        self.w = [rng.standard_normal(len(g.blocks)) for g in self.groups]
        self.e = rng.standard_normal(nb)

    def _flat(self, U, s, Vh, err):
        R = self.rank
        s2 = np.asarray(s).reshape(-1, R)
        e2 = np.asarray(err).reshape(-1)
        if not self.uv:
            return [(None, x, None, e) for x, e in zip(s2, e2, strict=True)]
        U2 = np.asarray(U).reshape((-1,) + U.shape[-2:])
        V2 = np.asarray(Vh).reshape((-1,) + Vh.shape[-2:])
        return list(zip(U2, s2, V2, e2, strict=True))

    def value(self, U, s, Vh, err) -> float:
        total = 0.0
        for i, (u, x, vh, e) in enumerate(self._flat(U, s, Vh, err)):
            for w, b in zip(self.w[i], self.groups[i].blocks, strict=True):
                total += w * float(np.sum(x[list(b)]))
            total += self.e[i] * float(e)
            if self.uv:
                total += float(np.real(np.sum(np.conj(self.B[i]) * (u @ _H(u)))))
                total += float(np.real(np.sum(np.conj(self.C[i]) * (_H(vh) @ vh))))
                total += float(np.real(np.sum(np.conj(self.D[i]) * ((u * x) @ vh))))
        return total

    def cotangents(self, U, s, Vh, err) -> dict:
        """gU, gS, gVh, gerr in JAX's pairing at (U, s, Vh, err)."""
        parts = self._flat(U, s, Vh, err)
        gS = np.zeros((len(parts), self.rank))
        gerr = np.asarray(self.e[: len(parts)], dtype=np.float64)
        if self.uv:
            dt = np.result_type(U, Vh, np.float64)
            gU = np.zeros((len(parts),) + U.shape[-2:], dt)
            gVh = np.zeros((len(parts),) + Vh.shape[-2:], dt)
        for i, (u, x, vh, _) in enumerate(parts):
            for w, b in zip(self.w[i], self.groups[i].blocks, strict=True):
                gS[i, list(b)] += w
            if not self.uv:
                continue
            Dc = np.conj(self.D[i])
            gU[i] += 2 * self.B[i].T @ np.conj(u) + Dc @ vh.T * x[None, :]
            gVh[i] += 2 * np.conj(vh) @ self.C[i].T + x[:, None] * (u.T @ Dc)
            gS[i] += np.real(np.sum(u * (Dc @ vh.T), axis=0))
        out = {"gS": gS.reshape(np.shape(s)), "gerr": gerr.reshape(np.shape(err))}
        if self.uv:
            out["gU"] = gU.reshape(U.shape)
            out["gVh"] = gVh.reshape(Vh.shape)
        return out


def evaluate_truncated(
    A,
    case: Case,
    rank: int,
    *,
    solver: str = "auto",
    dA=None,
    gU=None,
    gS=None,
    gVh=None,
    gerr=None,
    seed: int = 0,
    eps: float = 0.0,
    degeneracy_tol: float | None = None,
    rank_tol: float | None = None,
    device=None,
) -> Evaluation:
    """Run svd_jvp and svd_vjp with rank= for one thin case."""
    from .. import api
    from .evaluate import _approximations, _broadcast

    if case.full_matrices:
        raise ArgumentError("rank= gives a thin result: the truncated check has no full case")
    A = np.asarray(A)
    dtype = np.dtype(case_dtype(A, case))
    hi = np.result_type(dtype, np.float64)
    m, n = A.shape[-2:]
    rnd = random_directions(A.shape, case, seed, rank=rank)
    dA = rnd["dA"] if dA is None else np.asarray(dA)
    names = ("gU", "gS", "gVh", "gerr") if case.compute_uv else ("gS", "gerr")
    user = {"gU": gU, "gS": gS, "gVh": gVh, "gerr": gerr}
    user = {k: (None if user[k] is None else np.asarray(user[k])) for k in names}
    core = {"gU": 2, "gS": 1, "gVh": 2, "gerr": 0}
    batch = _broadcast(A, dA, [(v, core[k]) for k, v in user.items()])
    A = np.broadcast_to(A, batch + (m, n)).astype(dtype)
    dA = np.broadcast_to(dA, batch + (m, n)).astype(dtype)
    numerics = {"eps": float(eps), "degeneracy_tol": degeneracy_tol, "rank_tol": rank_tol}
    kw = dict(numerics, compute_uv=case.compute_uv, device=device, rank=rank, solver=solver)
    out = api.svd_jvp(A, dA, return_info=True, **kw)
    primals, tangents, info = out[0], out[1], _numpy_info(out[2])
    pnames = ("U", "S", "Vh", "err") if case.compute_uv else ("S", "err")
    tnames = ("dU", "dS", "dVh", "derr") if case.compute_uv else ("dS", "derr")
    primals = {k: np.asarray(v) for k, v in zip(pnames, primals, strict=True)}
    tangents = {k: np.asarray(v) for k, v in zip(tnames, tangents, strict=True)}

    A64, dA64 = A.astype(hi), dA.astype(hi)
    h = fd_step(A64, dA64)
    groups = batch_groups(primals["S"], dA64, h, m, n, dtype, degeneracy_tol, rank_tol)
    loss = None
    if any(v is not None for v in user.values()):
        cots, kind = user, "given"
    else:
        loss = TruncatedLoss(groups, m, n, rank, case, np.random.default_rng([seed, 2]))
        cots = loss.cotangents(primals.get("U"), primals["S"], primals.get("Vh"), primals["err"])
        cots = {k: cots[k] for k in names}
        kind = "invariant"
    rdt = np.finfo(dtype).dtype
    cot_in = {}
    for k, v in cots.items():
        if v is None:
            cot_in[k] = None
        elif k in ("gS", "gerr"):
            cot_in[k] = np.real(v).astype(rdt)
        else:
            cot_in[k] = v.astype(dtype)
    gA, vinfo = api.svd_vjp(A, **cot_in, return_info=True, **kw)
    ev = Evaluation(
        case=case,
        dtype=dtype,
        A=A,
        dA=dA,
        A64=A64,
        dA64=dA64,
        primals=primals,
        tangents=tangents,
        linear_primals=primals,
        linear_tangents=tangents,
        cots=cots,
        cots_kind=kind,
        gA=np.asarray(gA),
        info=info,
        vinfo=_numpy_info(vinfo),
        groups=groups,
        h=h,
        numerics=numerics,
        device=device,
        rank=rank,
        solver=solver,
        loss=loss,
        approximate=_approximations(primals["S"], m, n, dtype, info, numerics),
    )
    ev.cut = cut_status(ev)
    return ev


def cut_status(ev: Evaluation) -> dict:
    """The whole spectrum in 64-bit and what it says about the cut at R:
    {"s": (..., k), "gap": smallest s_R - s_{R+1}, "degenerate": the rules found the cut inside
    a degenerate pair, "resolved": finite differences resolve the cut and err,
    "spectrum_simple": every value distinct and nonzero (JAX's thin rule is then exact)}."""
    m, n = ev.shape
    k = min(m, n)
    R = ev.rank
    s_all = np.linalg.svd(ev.A64, compute_uv=False)
    flat = s_all.reshape(-1, k)
    dA2 = ev.dA64.reshape(-1, m, n)
    degenerate = bool(np.any(np.asarray(ev.info.get("cut_degenerate", False))))
    resolved, simple, err_resolved = True, True, True
    gaps = []
    for s, d in zip(flat, dA2, strict=True):
        deg, rnk = rule_tolerances(s, m, n, ev.dtype)
        res = RESOLUTION * ev.h * float(np.linalg.norm(d, 2))
        nxt = s[R] if R < k else 0.0
        gaps.append(s[R - 1] - nxt)
        if s[R - 1] - nxt <= res:
            resolved = False
        err = float(np.sqrt(np.sum(s[R:] ** 2)))
        if R < k and err <= res:
            err_resolved = False
        if k > 1 and np.min(s[:-1] - s[1:]) <= deg or np.min(s) <= rnk:
            simple = False
    return {
        "gap": float(min(gaps)) if gaps else float("inf"),
        "degenerate": degenerate,
        "resolved": resolved and not degenerate,
        "err_resolved": err_resolved,
        "spectrum_simple": simple,
    }


def truncated_quantities(ev: Evaluation):
    """Quantities (see fd.Quantity) of the truncated SVD, and notes."""
    from .fd import Quantity, _loss_quantity, floors

    R = ev.rank
    fl = floors(ev)
    notes = []
    P, T = ev.primals, ev.tangents
    parts = [inv.spectral_parts(g, selected=False) for g in ev.groups]
    Sr = elements(P["S"], 1).astype(np.float64)
    dSr = elements(T["dS"], 1)
    rule_S = np.concatenate(
        [inv.spectral_tangent(s, d, p) for s, d, p in zip(Sr, dSr, parts, strict=True)]
    )

    def spectral(F):
        s2 = elements(_split(R, F)[1], 1)
        return np.concatenate([inv.spectral_vector(s, p) for s, p in zip(s2, parts, strict=True)])

    out = [Quantity("dS", spectral, rule_S, fl["dS"])]
    if ev.case.compute_uv:
        U, S, Vh = P["U"], P["S"], P["Vh"]
        dU, dS, dVh = T["dU"], T["dS"], T["dVh"]
        out.append(
            Quantity(
                "d(UU^H)",
                lambda F: _left(_split(R, F)[0]).ravel(),
                (dU @ _H(U) + U @ _H(dU)).ravel(),
                fl["unit"],
            )
        )
        out.append(
            Quantity(
                "d(VV^H)",
                lambda F: _right(_split(R, F)[2]).ravel(),
                (_H(dVh) @ Vh + _H(Vh) @ dVh).ravel(),
                fl["unit"],
            )
        )
        d_usv = (dU * S[..., None, :]) @ Vh + (U * dS[..., None, :]) @ Vh
        d_usv = d_usv + (U * S[..., None, :]) @ dVh
        out.append(
            Quantity("d(U S Vh)", lambda F: _usv(_split(R, F)).ravel(), d_usv.ravel(), fl["dS"])
        )
    if ev.cut["err_resolved"]:
        out.append(
            Quantity("derr", lambda F: np.ravel(_split(R, F)[3]), np.ravel(T["derr"]), fl["derr"])
        )
    else:
        notes.append(
            "err is zero (or too small for finite differences to resolve): it has only a "
            "one-sided derivative, not checked"
        )
    out.extend(_loss_quantity(ev, notes))
    return out, notes


def _left(U):
    return U @ _H(U)


def _right(Vh):
    return _H(Vh) @ Vh


def _usv(parts):
    U, s, Vh, _ = parts
    return (U * s[..., None, :]) @ Vh


def naive_tangents(ev: Evaluation) -> dict:
    """The naive thin rule's d(UU^H), d(VV^H), d(U S Vh): the thin formula applied to the top R
    triplets as if A - U S Vh were zero, in 64-bit."""
    P = ev.primals
    hi = ev.A64.dtype
    U, S, Vh = P["U"].astype(hi), P["S"].astype(np.float64), P["Vh"].astype(hi)
    V = _H(Vh)
    dA = ev.dA64
    dAV = dA @ V
    dAhU = _H(dA) @ U
    X = (dAV - U @ (_H(U) @ dAV)) / S[..., None, :]
    Y = (dAhU - V @ (_H(V) @ dAhU)) / S[..., None, :]
    m, n = ev.shape
    QU = np.eye(m) - U @ _H(U)
    QV = np.eye(n) - V @ _H(V)
    return {
        "d(UU^H)": X @ _H(U) + U @ _H(X),
        "d(VV^H)": Y @ _H(V) + V @ _H(Y),
        "d(U S Vh)": dA - QU @ dA @ QV,
    }


def cut_row(ev: Evaluation) -> Row | None:
    """A failing row when the cut lies inside a degenerate pair (s_R = s_{R+1} within the
    degeneracy tolerance): the top R triplets have no derivative there, so whatever the rules
    return is not one, and no reference can say otherwise (finite differences are skipped, and
    the adjoint identity of two finite results proves nothing). None for a proper cut."""
    if not ev.cut["degenerate"]:
        return None
    R = ev.rank
    gap = float(np.min(np.asarray(ev.info.get("cut_gap", 0.0)), initial=np.inf))
    return Row(
        ev.name,
        f"s_{R} = s_{R + 1}",
        "cut",
        float("inf"),
        ev.tolerance("fd"),
        detail=f"--rank {R}: the cut lies inside a degenerate pair, s_{R} = s_{R + 1} "
        f"(gap (s_R - s_R+1) / s_R = {gap:.1e}), so the top {R} triplets have no derivative",
    )


def check_naive(ev: Evaluation) -> tuple[list[Row], list[str]]:
    """Info rows: the naive thin rule against the same finite differences; at a cut inside a
    degenerate pair, the failing row of cut_row instead."""
    from .fd import Differencer

    row = cut_row(ev)
    if row is not None:
        return [row], [
            f"--rank {ev.rank}: the cut lies inside a degenerate pair; choose a rank that keeps "
            "or drops the whole block of equal singular values (s_R > s_R+1)"
        ]
    if not ev.case.compute_uv or not ev.cut["resolved"] or ev.approximate:
        return [], []
    naive = naive_tangents(ev)
    qs = {q.output: q for q in truncated_quantities(ev)[0]}
    diff = Differencer(ev)
    rows = []
    for name, value in naive.items():
        q = qs[name]
        fd = diff.derivative(q, ev.h / 2)
        rows.append(
            Row(
                ev.name,
                name,
                "naive rule",
                rel_error(value.ravel(), fd, q.floor),
                float("nan"),
                info=True,
            )
        )
    worst = max(r.rel_error for r in rows)
    note = (
        f"the naive thin rule (A - U S Vh taken as zero, as JAX, PyTorch and TensorFlow do) "
        f"is off by up to {worst:.0%} here; svdgrad's rule includes the coupling to the "
        "discarded spectrum"
    )
    return rows, [note]
