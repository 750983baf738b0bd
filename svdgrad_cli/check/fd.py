"""Reference: finite differences of numpy's SVD in 64-bit along dA.

Where every singular value is resolved and nonzero, U and V are smooth and are compared
directly (gauge-aligned to the rules' factors). Elsewhere only gauge-invariant functions are
(invariants.py): S through its groups (one-sided at equal and zero values), U_b Vh_b per block,
and the projectors onto whole null spaces. The gradient gA is checked through its pairing with
dA, against the finite difference of the loss its cotangents come from.

Central differences use A +- t dA, one-sided ones A, A + t dA, A + 2t dA (second order); t is
the relative step cbrt(eps) times ||A|| / ||dA||. The noise of the differences is estimated by
repeating them at t / 2; a row's tolerance is raised to 10x that noise, and a row whose noise
exceeds NOISE_LIMIT is left out, with a note.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from . import invariants as inv
from .evaluate import TANGENT_NAMES, Evaluation
from .numerics import align_factors, elements, fd_step, rel_error
from .report import Row
from .tolerances import NOISE_LIMIT, tolerance


class Quantity(NamedTuple):
    """A function of the SVD and its derivative by the rules, compared by finite differences.

    value maps numpy's (U, s, Vh) at a perturbed A (the whole batch) to a flat vector; rule is
    the rules' derivative of it; one_sided marks entries differenced one-sidedly. A scalar row
    (the loss of gA) has scale set: its error is |fd - rule| / scale.
    """

    output: str
    value: Callable
    rule: np.ndarray
    floor: float
    one_sided: np.ndarray | None = None
    scale: float | None = None

    def error(self, fd) -> float:
        if self.scale is not None:
            return float(abs(float(fd[0]) - float(self.rule[0])) / max(self.scale, 1e-300))
        return rel_error(self.rule, fd, self.floor)

    def noise(self, fd1, fd2) -> float:
        if self.scale is not None:
            return float(abs(float(fd1[0]) - float(fd2[0])) / max(self.scale, 1e-300))
        return rel_error(fd1, fd2, self.floor)


def floors(ev: Evaluation) -> dict:
    nA = float(np.linalg.norm(ev.A64.ravel()))
    nd = float(np.linalg.norm(ev.dA64.ravel()))
    unit = 1e-3 * nd / max(nA, 1e-300)
    return {"dS": 1e-3 * nd, "derr": 1e-3 * nd, "dU": unit, "dVh": unit, "unit": unit}


def pairing(cots: dict, tangents: dict) -> tuple[float, float]:
    """Re sum(g * d) over the cotangents, and sum |g| |d| as its scale."""
    value, scale = 0.0, 0.0
    for cname, g in cots.items():
        if g is None:
            continue
        d = tangents[TANGENT_NAMES[cname]]
        value += float(np.real(np.sum(g * d)))
        scale += float(np.sum(np.abs(g) * np.abs(d)))
    return value, scale


def quantities(ev: Evaluation) -> tuple[list[Quantity], list[str]]:
    """What finite differences compare for this evaluation, and notes on what they cannot."""
    if ev.rank is not None:
        from .truncated import truncated_quantities

        return truncated_quantities(ev)
    case = ev.case
    m, n = ev.shape
    full = case.full_matrices and case.compute_uv
    fl = floors(ev)
    notes: list[str] = []
    out: list[Quantity] = []
    P, T = ev.primals, ev.tangents
    if ev.simple:
        U0 = P.get("U")
        Vh0 = P.get("Vh")
        out.append(Quantity("dS", lambda F: F[1].ravel(), T["dS"].ravel(), fl["dS"]))
        if case.compute_uv:

            def aligned(F, i):
                return align_factors(*F, U0.astype(F[0].dtype), Vh0.astype(F[2].dtype), full)[i]

            out.append(Quantity("dU", lambda F: aligned(F, 0).ravel(), T["dU"].ravel(), fl["dU"]))
            out.append(
                Quantity("dVh", lambda F: aligned(F, 2).ravel(), T["dVh"].ravel(), fl["dVh"])
            )
    else:
        null_selected = not (full and m != n)
        parts = [inv.spectral_parts(g, True, null_selected) for g in ev.groups]
        Sr = elements(P["S"], 1).astype(np.float64)
        dSr = elements(T["dS"], 1)
        rule_S = np.concatenate(
            [inv.spectral_tangent(s, d, p) for s, d, p in zip(Sr, dSr, parts, strict=True)]
        )
        one = np.concatenate([inv.spectral_one_sided(p) for p in parts])

        def spectral(F):
            s2 = elements(F[1], 1)
            return np.concatenate(
                [inv.spectral_vector(s, p) for s, p in zip(s2, parts, strict=True)]
            )

        out.append(Quantity("dS", spectral, rule_S, fl["dS"], one))
        if any(kind == "none" for p in parts for kind, _ in p):
            notes.append(
                "svd_jvp selects the null vectors a tangent picks only for a thin (or square) "
                "SVD: dS at zero singular values is not checked here (the thin case checks it)"
            )
        if case.compute_uv:
            out.extend(_invariant_factor_quantities(ev, fl["unit"], notes))
    out.extend(_loss_quantity(ev, notes))
    return out, notes


def _invariant_factor_quantities(ev: Evaluation, unit: float, notes: list[str]):
    m, n = ev.shape
    full = ev.case.full_matrices
    P, T = ev.primals, ev.tangents
    U, Vh = elements(P["U"], 2), elements(P["Vh"], 2)
    dU, dVh = elements(T["dU"], 2), elements(T["dVh"], 2)
    k = min(m, n)
    blocks = [g.blocks for g in ev.groups]
    lnull = [inv.left_null(g, m, n, full) for g in ev.groups]
    rnull = [inv.right_null(g, m, n, full) for g in ev.groups]
    out = []

    def stacked(fn, *arrays, sets):
        return np.concatenate(
            [fn(*xs, s).ravel() for *xs, s in zip(*arrays, sets, strict=True) if s] or [np.zeros(0)]
        )

    rule = stacked(inv.pair_products_tangent, U[..., :k], Vh[..., :k, :], dU, dVh, sets=blocks)

    def products(F):
        u, vh = elements(F[0], 2), elements(F[2], 2)
        return stacked(inv.pair_products, u[..., :k], vh[..., :k, :], sets=blocks)

    out.append(Quantity("d(U Vh)", products, rule, unit))
    if any(x for x in lnull):
        rule = stacked(inv.left_projector_tangent, U, dU, sets=lnull)

        def left(F):
            return stacked(inv.left_projector, elements(F[0], 2), sets=lnull)

        out.append(Quantity("d(UU^H)", left, rule, unit))
    if any(x for x in rnull):
        rule = stacked(inv.right_projector_tangent, Vh, dVh, sets=rnull)

        def right(F):
            return stacked(inv.right_projector, elements(F[2], 2), sets=rnull)

        out.append(Quantity("d(VV^H)", right, rule, unit))
    if any(x is None for x in lnull + rnull):
        side = "U" if any(x is None for x in lnull) else "V"
        notes.append(
            f"the null columns of a thin {side} span only part of the null space (which part "
            "depends on dA at second order): finite differences check U_b Vh_b per group of "
            "values and S; the chain rule checks the null columns"
        )
    return out


def _loss_quantity(ev: Evaluation, notes: list[str]):
    """gA through Re sum(gA * dA) against the derivative of the loss of its cotangents."""
    lhs = float(np.real(np.sum(ev.gA * ev.dA)))
    rhs, scale = pairing(ev.cots, ev.linear_tangents)
    scale += abs(lhs)
    rule = np.asarray([lhs])
    rank = ev.rank

    def outputs(F):
        """(U, s, Vh[, err]) of numpy's thin or full SVD F: the top rank triplets with rank."""
        if rank is None:
            return F
        from .truncated import _split

        return _split(rank, F)

    if ev.cots_kind == "invariant":
        loss = ev.loss

        def value(F):
            return np.asarray([loss.value(*outputs(F))])

        return [Quantity("gA", value, rule, 0.0, scale=scale)]
    if not ev.simple:
        rel = float(ev.vinfo.get("gauge_relative", 0.0))
        notes.append(
            "the loss your cotangents come from is not a smooth function of A here (equal or "
            f"zero singular values; gauge dependence relative {rel:.1e}): gA is checked by the "
            "adjoint identity only"
        )
        return []
    uv = ev.case.compute_uv
    full = ev.case.full_matrices and uv
    U0, Vh0 = ev.linear_primals.get("U"), ev.linear_primals.get("Vh")
    cots = ev.cots

    def value(F):
        F = outputs(F)
        if uv:
            U, s, Vh = align_factors(
                F[0], F[1], F[2], U0.astype(F[0].dtype), Vh0.astype(F[2].dtype), full
            )
            F = (U, s, Vh) + tuple(F[3:])
        total = 0.0
        for cname, x in zip(("gU", "gS", "gVh", "gerr"), F, strict=False):
            g = cots.get(cname)
            if g is not None and x is not None:
                total += float(np.real(np.sum(g * x)))
        return np.asarray([total])

    return [Quantity("gA", value, rule, 0.0, scale=scale)]


class Differencer:
    """numpy SVDs of A + c t dA, cached by the multiple c, and the differences of quantities."""

    def __init__(self, ev: Evaluation):
        self.ev = ev
        self.full = ev.case.full_matrices and ev.case.compute_uv
        self.uv = ev.case.compute_uv or ev.rank is not None
        self.cache: dict[float, tuple] = {}

    def factors(self, t: float):
        if t not in self.cache:
            a = self.ev.A64 + t * self.ev.dA64
            if self.uv:
                self.cache[t] = tuple(np.linalg.svd(a, full_matrices=self.full))
            else:
                self.cache[t] = (None, np.linalg.svd(a, compute_uv=False), None)
        return self.cache[t]

    def derivative(self, q: Quantity, t: float) -> np.ndarray:
        central = (q.value(self.factors(t)) - q.value(self.factors(-t))) / (2 * t)
        if q.one_sided is None or not np.any(q.one_sided):
            return central
        f0, f1, f2 = (q.value(self.factors(c * t)) for c in (0.0, 1.0, 2.0))
        one = (-3 * f0 + 4 * f1 - f2) / (2 * t)
        return np.where(q.one_sided, one, central)


def check_fd(ev: Evaluation) -> tuple[list[Row], list[str], dict]:
    """Rows of the finite-difference reference, notes, and {"fd_noise", "fd_trustworthy"}."""
    notes: list[str] = []
    if ev.approximate:
        notes.append("finite differences are not a reference for approximate rules: skipped")
        return [], notes, {"fd_noise": None, "fd_trustworthy": False}
    if ev.rank is not None and not ev.cut["resolved"]:
        if ev.cut["degenerate"]:
            notes.append(
                f"the cut at R = {ev.rank} lies inside a degenerate pair (s_R = s_R+1): the top "
                "R triplets have no derivative there; finite differences skipped"
            )
        else:
            notes.append(
                f"the gap at the cut, s_R - s_R+1 = {ev.cut['gap']:.1e}, is below what finite "
                "differences resolve: skipped"
            )
        return [], notes, {"fd_noise": None, "fd_trustworthy": False}
    qs, more = quantities(ev)
    notes.extend(more)
    if not ev.simple and ev.rank is None:
        what = (
            "S (one-sided at equal and zero values), U_b Vh_b for each group b of values and "
            "the null-space projectors"
            if ev.case.compute_uv
            else "S by groups (one-sided at equal and zero values)"
        )
        notes.append(
            "equal or zero singular values (or closer than finite differences resolve): U and V "
            f"are not differentiable there; finite differences check {what}"
        )
    diff = Differencer(ev)
    base = tolerance(ev.dtype, "fd")
    rows, noises, trustworthy = [], [], True
    for q in qs:
        fd1 = diff.derivative(q, ev.h)
        fd2 = diff.derivative(q, ev.h / 2)
        noise = q.noise(fd1, fd2)
        if not noise <= NOISE_LIMIT:
            trustworthy = False
            notes.append(
                f"finite differences of {q.output} are too noisy to be a reference "
                f"(two steps differ by {noise:.1e}): not counted"
            )
            continue
        noises.append(noise)
        rows.append(Row(ev.name, q.output, "fd", q.error(fd2), max(base, 10 * noise), noise))
    noise = max(noises) if noises else None
    return rows, notes, {"fd_noise": noise, "fd_trustworthy": bool(trustworthy and rows)}


#: the relative steps of --steps: half decades from 1e-1 to 1e-13
STEPS = tuple(10.0 ** (-e / 2) for e in range(2, 27))


def step_errors(ev: Evaluation, steps=STEPS) -> list[dict]:
    """The finite-difference error (the largest relative error over the compared outputs, gA
    excepted) at each relative step h: truncation error falls as h^2, rounding rises as eps/h.
    Returns [{"h", "error", "best"}]; the best step is marked."""
    qs, _ = quantities(ev)
    qs = [q for q in qs if q.scale is None]
    diff = Differencer(ev)
    out = []
    for h in steps:
        t = fd_step(ev.A64, ev.dA64, h)
        errors = [q.error(diff.derivative(q, t)) for q in qs]
        out.append({"h": float(h), "error": float(max(errors)) if errors else float("nan")})
        diff.cache.clear()
    finite = [i for i, r in enumerate(out) if np.isfinite(r["error"])]
    best = min(finite, key=lambda i: out[i]["error"]) if finite else None
    for i, r in enumerate(out):
        r["best"] = i == best
    return out
