"""Reference: results the user computed with another implementation (--against).

Another SVD may pick another sign (phase, for complex) for each singular pair, and other
extra columns for a full SVD; the tangents follow. Before comparing, the user's dU and dVh are
brought into the rules' gauge: from the user's own factors where they are given (--factors),
else from the tangents themselves (the sign or phase of each pair that brings them closest, and
an orthogonal/unitary Procrustes rotation for the extra columns). dS and gA are gauge-free and
compared as they are (gA with --factors: against svd_vjp with those factors, which the
cotangents were taken at). At equal or zero singular values U and V depend on the basis chosen,
so with --factors the gauge-invariant U_b Vh_b of each block is compared instead, and without
them dU and dVh are not compared.
"""

from __future__ import annotations

import numpy as np

from ..errors import ArgumentError
from . import invariants as inv
from .evaluate import Evaluation
from .fd import floors
from .numerics import _H, batch_groups, elements, pair_phases, polar, rel_error
from .report import Row


def phases_from_factors(ours: dict, U, Vh) -> np.ndarray:
    """d with the user's U = ours U d per pair (and Vh = conj(d) ours Vh)."""
    r = min(ours["U"].shape[-1], ours["Vh"].shape[-2], U.shape[-1], Vh.shape[-2])
    c = np.sum(np.conj(ours["U"][..., :, :r]) * U[..., :, :r], axis=-2)
    c = c + np.sum(ours["Vh"][..., :r, :] * np.conj(Vh[..., :r, :]), axis=-1)
    return pair_phases(c)


def phases_from_tangents(ours: dict, theirs: dict, r: int) -> np.ndarray:
    """d with the user's dU = ours dU d (and dVh = conj(d) ours dVh), closest in norm."""
    c = 0
    if "dU" in theirs:
        c = c + np.sum(np.conj(ours["dU"][..., :, :r]) * theirs["dU"][..., :, :r], axis=-2)
    if "dVh" in theirs:
        c = c + np.sum(ours["dVh"][..., :r, :] * np.conj(theirs["dVh"][..., :r, :]), axis=-1)
    return pair_phases(c)


def align(theirs: dict, d, rot_u=None, rot_v=None) -> dict:
    """The user's dU, dVh in the rules' gauge: pairs by conj(d) (rows of Vh by d), the extra
    columns of U by rot_u^H (rows of Vh by rot_v), where theirs = ours with those applied."""
    out = dict(theirs)
    r = d.shape[-1]
    if "dU" in out:
        dU = np.array(out["dU"], dtype=np.result_type(out["dU"], d))
        dU[..., :, :r] = dU[..., :, :r] * np.conj(d)[..., None, :]
        if rot_u is not None:
            dU[..., :, r:] = dU[..., :, r:] @ _H(rot_u)
        out["dU"] = dU
    if "dVh" in out:
        dVh = np.array(out["dVh"], dtype=np.result_type(out["dVh"], d))
        dVh[..., :r, :] = dVh[..., :r, :] * d[..., :, None]
        if rot_v is not None:
            dVh[..., r:, :] = rot_v @ dVh[..., r:, :]
        out["dVh"] = dVh
    return out


def _flipped(d) -> int:
    return int(np.sum(np.abs(d - 1) > 1e-6))


def check_against(ev: Evaluation, against: dict, factors=None) -> tuple[list[Row], list[str]]:
    """Rows comparing the user's results (dU, dS, dVh, gA; derr with rank) with the rules'."""
    ours = dict(ev.tangents)
    ours["gA"] = ev.gA
    notes: list[str] = []
    rows: list[Row] = []
    tol = ev.tolerance("against")
    fl = floors(ev)
    theirs = {}
    for name, value in against.items():
        if name not in ours:
            raise ArgumentError(
                f"--against holds {name!r}, which case {ev.name} does not produce "
                f"(it produces {', '.join(sorted(ours))})"
            )
        value = np.asarray(value)
        if value.shape != ours[name].shape:
            rows.append(Row(ev.name, name, "against", float("inf"), tol))
            notes.append(f"--against {name} has shape {value.shape}, expected {ours[name].shape}")
            continue
        theirs[name] = value
    m, n = ev.shape
    k = min(m, n) if ev.rank is None else ev.rank
    full = ev.case.full_matrices and ev.case.compute_uv
    rule_groups = batch_groups(
        ev.primals["S"],
        ev.dA64,
        0.0,
        m,
        n,
        ev.dtype,
        ev.numerics["degeneracy_tol"],
        ev.numerics["rank_tol"],
    )
    simple = all(g.simple for g in rule_groups)
    if factors is not None:
        factors = _check_factors(ev, factors)

    # singular values: per value where they are distinct, per block sum where equal
    if "dS" in theirs:
        if simple:
            rows.append(
                Row(ev.name, "dS", "against", rel_error(theirs["dS"], ours["dS"], fl["dS"]), tol)
            )
        else:
            parts = [
                [p for p in inv.spectral_parts(g, selected=False) if p[0] in ("value", "sum")]
                for g in rule_groups
            ]
            mine = np.concatenate(
                [
                    inv.spectral_tangent(s, s, p)
                    for s, p in zip(elements(theirs["dS"], 1), parts, strict=True)
                ]
            )
            ref = np.concatenate(
                [
                    inv.spectral_tangent(s, s, p)
                    for s, p in zip(elements(ours["dS"], 1), parts, strict=True)
                ]
            )
            rows.append(Row(ev.name, "dS", "against", rel_error(mine, ref, fl["dS"]), tol))
            notes.append(
                "--against dS: at equal singular values the sum over each block is compared "
                "(how equal values split depends on the basis); zero values are left out"
            )

    # singular vectors
    has_uv = [x for x in ("dU", "dVh") if x in theirs]
    if has_uv:
        if simple:
            if factors is not None:
                d = phases_from_factors(ev.primals, factors[0], factors[2])
                rot_u = rot_v = None
                if full and m > n:
                    rot_u = polar(_H(ev.primals["U"][..., :, k:]) @ factors[0][..., :, k:])
                if full and n > m:
                    rot_v = polar(factors[2][..., k:, :] @ _H(ev.primals["Vh"][..., k:, :]))
                how = "from your factors"
            else:
                d = phases_from_tangents(ours, theirs, k)
                rot_u = rot_v = None
                if full and m > n and "dU" in theirs:
                    rot_u = polar(_H(ours["dU"][..., :, k:]) @ theirs["dU"][..., :, k:])
                if full and n > m and "dVh" in theirs:
                    rot_v = polar(theirs["dVh"][..., k:, :] @ _H(ours["dVh"][..., k:, :]))
                how = "from the results themselves; pass --factors to align from your factors"
            aligned = align(theirs, d, rot_u, rot_v)
            flips = _flipped(d)
            if flips:
                kind = "phase" if np.iscomplexobj(d) else "sign"
                notes.append(
                    f"--against: the {kind} of {flips} singular pair(s) of your results differs "
                    f"from the rules' factors and was aligned ({how})"
                )
            for name in has_uv:
                err = rel_error(aligned[name], ours[name], fl[name])
                rows.append(Row(ev.name, name, "against", err, tol))
        elif factors is not None and "dU" in theirs and "dVh" in theirs:
            rows.extend(_invariant_rows(ev, theirs, factors, rule_groups, tol, fl["unit"]))
            notes.append(
                "--against: at equal or zero singular values U_b Vh_b of each block (and the "
                "null-space projectors) are compared: dU and dVh depend on the basis"
            )
        else:
            notes.append(
                "--against dU/dVh: at equal or zero singular values they depend on the basis "
                "chosen; pass --factors (and both dU and dVh) to compare U_b Vh_b per block"
            )

    if "gA" in theirs:
        ref = ours["gA"]
        if factors is not None:
            ref = _vjp_at(ev, factors)
        rows.append(Row(ev.name, "gA", "against", rel_error(theirs["gA"], ref), tol))
    if "derr" in theirs:
        rows.append(
            Row(
                ev.name,
                "derr",
                "against",
                rel_error(theirs["derr"], ours["derr"], fl["derr"]),
                tol,
            )
        )
    return rows, notes


def _check_factors(ev: Evaluation, factors):
    U, S, Vh = (np.asarray(x) for x in factors)
    P = ev.primals
    if "U" not in P:
        return U, S, Vh
    if U.shape[-2:] != P["U"].shape[-2:] or Vh.shape[-2:] != P["Vh"].shape[-2:]:
        raise ArgumentError(
            f"--factors: U {U.shape} and Vh {Vh.shape} are not the factors of case {ev.name} "
            f"(U {P['U'].shape}, Vh {P['Vh'].shape}); select the case with --full/--thin"
        )
    return U, S, Vh


def _vjp_at(ev: Evaluation, factors) -> np.ndarray:
    from .. import api

    cots = {}
    for k, v in ev.cots.items():
        if v is None:
            continue
        cots[k] = np.real(v) if k in ("gS", "gerr") else v
    return np.asarray(api.svd_vjp(ev.A, **cots, factors=factors, **ev.kwargs()))


def _invariant_rows(ev, theirs, factors, groups, tol, unit):
    m, n = ev.shape
    full = ev.case.full_matrices
    k = min(m, n)
    U, _, Vh = factors
    mine_parts, ref_parts = [], []
    elems = zip(
        elements(U, 2),
        elements(Vh, 2),
        elements(theirs["dU"], 2),
        elements(theirs["dVh"], 2),
        elements(ev.primals["U"], 2),
        elements(ev.primals["Vh"], 2),
        elements(ev.tangents["dU"], 2),
        elements(ev.tangents["dVh"], 2),
        groups,
        strict=False,
    )
    for u, vh, du, dvh, uo, vho, duo, dvho, g in elems:
        mine_parts.append(
            inv.pair_products_tangent(u[:, :k], vh[:k], du[:, :k], dvh[:k], g.blocks).ravel()
        )
        ref_parts.append(
            inv.pair_products_tangent(uo[:, :k], vho[:k], duo[:, :k], dvho[:k], g.blocks).ravel()
        )
        left = inv.left_null(g, m, n, full)
        right = inv.right_null(g, m, n, full)
        if left:
            mine_parts.append(inv.left_projector_tangent(u, du, left).ravel())
            ref_parts.append(inv.left_projector_tangent(uo, duo, left).ravel())
        if right:
            mine_parts.append(inv.right_projector_tangent(vh, dvh, right).ravel())
            ref_parts.append(inv.right_projector_tangent(vho, dvho, right).ravel())
    err = rel_error(np.concatenate(mine_parts), np.concatenate(ref_parts), unit)
    return [Row(ev.name, "d(U Vh)", "against", err, tol)]
