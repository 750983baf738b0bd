"""Run the rules once for a case: the Evaluation every reference compares against.

svd_jvp is called twice where it selects a basis (equal or zero singular values): as the user
calls it (the basis the tangent selects: what the chain rule and the finite differences of
gauge-invariant functions check), and with the tangent given one extra batch dimension, which
keeps svd's own basis and so is the linear rule whose transpose svd_vjp is (what the adjoint
identity checks). The cotangents are the user's, or random ones where U and V are smooth, or the
cotangents of a random gauge-invariant loss (invariants.InvariantLoss) where they are not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ArgumentError
from .invariants import InvariantLoss
from .numerics import Groups, batch_groups, fd_step, random_directions, rule_tolerances
from .report import Case
from .tolerances import tolerance

#: exact references allow CONDITIONED * machine eps * kappa (see Evaluation.tolerance)
CONDITIONED = 100.0

TANGENT_NAMES = {"gU": "dU", "gS": "dS", "gVh": "dVh", "gerr": "derr"}


@dataclass
class Evaluation:
    case: Case
    dtype: np.dtype  # what the rules ran in
    A: np.ndarray  # (batch..., m, n), dtype
    dA: np.ndarray
    A64: np.ndarray  # 64-bit copies for the references
    dA64: np.ndarray
    primals: dict  # U, S, Vh (and err with rank) in the basis the tangent selects
    tangents: dict  # dU, dS, dVh (and derr)
    linear_primals: dict  # svd's own basis: the linear rule
    linear_tangents: dict
    cots: dict  # gU, gS, gVh (and gerr) in JAX's pairing, taken at linear_primals
    cots_kind: str  # "given", "random" or "invariant"
    gA: np.ndarray
    info: dict  # svd_jvp's Diagnostics, as NumPy values
    vinfo: dict  # svd_vjp's
    groups: list[Groups]
    h: float  # the finite-difference step (absolute, along dA)
    numerics: dict  # eps, degeneracy_tol, rank_tol
    device: Any = None
    rank: int | None = None
    solver: str = "auto"
    loss: InvariantLoss | None = None
    approximate: list[str] = field(default_factory=list)  # why the rules are inexact by request
    cut: dict = field(default_factory=dict)  # with rank: the cut at R (truncated.cut_status)

    @property
    def name(self) -> str:
        return self.case.name if self.rank is None else f"{self.case.name} r={self.rank}"

    @property
    def shape(self) -> tuple:
        return self.A.shape[-2:]

    @property
    def simple(self) -> bool:
        """Every singular value resolved and nonzero: U and V themselves are smooth."""
        return all(g.simple for g in self.groups)

    @property
    def exact(self) -> bool:
        """No pair cut and no value left out by the rules' tolerances, no broadening."""
        return (
            not self.approximate
            and int(self.info.get("degenerate_pairs", 0)) == 0
            and int(self.info.get("rank_cut", 0)) == 0
        )

    @property
    def kappa(self) -> float:
        """s_max over the smallest gap or value the rules divide by (with their default
        tolerances), the largest over the batch: how much rounding errors are amplified."""
        m, n = self.shape
        k = self.primals["S"].shape[-1]
        worst = 1.0
        for s in np.asarray(self.primals["S"], dtype=np.float64).reshape(-1, k):
            deg, rnk = rule_tolerances(s, m, n, self.dtype)
            s_max = float(np.max(s, initial=0.0))
            kept = s[s > rnk]
            gaps = np.abs(kept[:-1] - kept[1:])
            gaps = gaps[gaps > deg]
            sizes = np.concatenate([gaps, kept])
            if sizes.size and s_max > 0:
                worst = max(worst, s_max / float(np.min(sizes)))
        return worst

    def tolerance(self, reference: str) -> float:
        """The table's tolerance for a reference; for the exact references (all but "fd"), at
        least 100 machine eps times kappa, the rounding error an ill-conditioned input allows."""
        base = tolerance(self.dtype, reference)
        if reference == "fd":
            return base
        return max(base, CONDITIONED * float(np.finfo(self.dtype).eps) * self.kappa)

    def kwargs(self) -> dict:
        kw = dict(self.numerics, device=self.device)
        if self.rank is None:
            kw.update(full_matrices=self.case.full_matrices, compute_uv=self.case.compute_uv)
        else:
            kw.update(compute_uv=self.case.compute_uv, rank=self.rank, solver=self.solver)
        return kw


def case_dtype(A, case: Case):
    base = np.dtype(A.dtype)
    if not np.issubdtype(base, np.inexact):
        base = np.dtype(np.float64)
    if case.complex:
        return np.result_type(base, np.complex64)
    if np.issubdtype(base, np.complexfloating):
        raise ArgumentError("a complex A cannot be checked in a real case")
    return base


def _numpy_info(info) -> dict:
    out = {}
    for key, value in info._asdict().items():
        arr = np.asarray(value)
        out[key] = arr if arr.ndim else arr.item()
    return out


def _approximations(S, m, n, dtype, info, numerics) -> list[str]:
    """What the tolerances or the broadening changed beyond what the defaults would."""
    out = []
    if numerics["eps"] > 0:
        out.append(f"Lorentzian broadening --eps {numerics['eps']:g} changes the result by design")
    k = S.shape[-1]
    deg_default = rank_default = 0
    for s in np.asarray(S, dtype=np.float64).reshape(-1, k):
        deg, rnk = rule_tolerances(s, m, n, dtype)
        gaps = np.abs(s[:, None] - s[None, :])
        deg_default += int(np.sum(np.triu(gaps <= deg, 1)))
        rank_default += int(np.sum(s <= rnk))
    if numerics["eps"] == 0 and int(info["degenerate_pairs"]) > deg_default:
        out.append(
            f"--degeneracy-tol cut {int(info['degenerate_pairs']) - deg_default} pair(s) of "
            "distinct singular values, which changes the result by design"
        )
    if int(info["rank_cut"]) > rank_default:
        out.append(
            f"--rank-tol left out {int(info['rank_cut']) - rank_default} nonzero singular "
            "value(s), which changes the result by design"
        )
    return out


def _broadcast(A, dA, cots):
    batch = np.broadcast_shapes(
        A.shape[:-2],
        dA.shape[:-2],
        *[np.shape(g)[: np.ndim(g) - c] for g, c in cots if g is not None],
    )
    return batch


def evaluate(
    A,
    case: Case,
    *,
    dA=None,
    gU=None,
    gS=None,
    gVh=None,
    seed: int = 0,
    eps: float = 0.0,
    degeneracy_tol: float | None = None,
    rank_tol: float | None = None,
    device=None,
) -> Evaluation:
    """Run svd_jvp and svd_vjp for one case (see the module's docstring)."""
    from .. import api

    A = np.asarray(A)
    dtype = np.dtype(case_dtype(A, case))
    hi = np.result_type(dtype, np.float64)
    m, n = A.shape[-2:]
    rnd = random_directions(A.shape, case, seed)
    dA = rnd["dA"] if dA is None else np.asarray(dA)
    names = ("gU", "gS", "gVh") if case.compute_uv else ("gS",)
    user = {"gU": gU, "gS": gS, "gVh": gVh}
    user = {k: (None if user[k] is None else np.asarray(user[k])) for k in names}
    given = any(v is not None for v in user.values())
    if not case.complex:
        for name, x in [("dA", dA)] + list(user.items()):
            if x is not None and np.iscomplexobj(x):
                raise ArgumentError(
                    f"{name} is complex but case {case.name} is real; pass --complex (library: a "
                    "complex case)"
                )
    core = {"gU": 2, "gS": 1, "gVh": 2}
    batch = _broadcast(A, dA, [(v, core[k]) for k, v in user.items()])
    A = np.broadcast_to(A, batch + (m, n)).astype(dtype)
    dA = np.broadcast_to(dA, batch + (m, n)).astype(dtype)
    numerics = {"eps": float(eps), "degeneracy_tol": degeneracy_tol, "rank_tol": rank_tol}
    kw = dict(numerics, full_matrices=case.full_matrices, compute_uv=case.compute_uv, device=device)

    out = api.svd_jvp(A, dA, return_info=True, **kw)
    primals, tangents, info = out[0], out[1], _numpy_info(out[2])
    pnames = ("U", "S", "Vh") if case.compute_uv else ("S",)
    tnames = ("dU", "dS", "dVh") if case.compute_uv else ("dS",)
    primals = {k: np.asarray(v) for k, v in zip(pnames, primals, strict=True)}
    tangents = {k: np.asarray(v) for k, v in zip(tnames, tangents, strict=True)}
    if bool(info["basis_selected"]):
        # one more batch dimension on the tangent: svd's own basis, the linear rule
        lp, lt = api.svd_jvp(A, dA[None], **kw)
        linear_primals = {k: np.asarray(v) for k, v in zip(pnames, lp, strict=True)}
        linear_tangents = {k: np.asarray(v)[0] for k, v in zip(tnames, lt, strict=True)}
    else:
        linear_primals, linear_tangents = primals, tangents

    A64, dA64 = A.astype(hi), dA.astype(hi)
    h = fd_step(A64, dA64)
    groups = batch_groups(primals["S"], dA64, h, m, n, dtype, degeneracy_tol, rank_tol)
    simple = all(g.simple for g in groups)
    loss = None
    if given:
        cots, kind = user, "given"
    elif simple:
        cots, kind = {k: rnd[k] for k in names}, "random"
    else:
        loss = InvariantLoss(groups, m, n, case, np.random.default_rng([seed, 1]))
        cots = loss.cotangents(
            linear_primals.get("U"), linear_primals["S"], linear_primals.get("Vh")
        )
        cots = {k: cots[k] for k in names}
        kind = "invariant"
    cot_in = {}
    for k, v in cots.items():
        if v is None:
            cot_in[k] = None
        elif k == "gS":
            cot_in[k] = np.real(v).astype(np.finfo(dtype).dtype)
        else:
            cot_in[k] = v.astype(dtype)
    gA, vinfo = api.svd_vjp(A, **cot_in, return_info=True, **kw)
    return Evaluation(
        case=case,
        dtype=dtype,
        A=A,
        dA=dA,
        A64=A64,
        dA64=dA64,
        primals=primals,
        tangents=tangents,
        linear_primals=linear_primals,
        linear_tangents=linear_tangents,
        cots=cots,
        cots_kind=kind,
        gA=np.asarray(gA),
        info=info,
        vinfo=_numpy_info(vinfo),
        groups=groups,
        h=h,
        numerics=numerics,
        device=device,
        loss=loss,
        approximate=_approximations(primals["S"], m, n, dtype, info, numerics),
    )
