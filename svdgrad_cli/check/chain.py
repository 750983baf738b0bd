"""Reference: the chain rule dA = dU S Vh + U dS Vh + U S dVh, with the factors and tangents
svd_jvp returns (at equal and zero singular values, in the basis the tangent selects, where it
holds exactly too)."""

from __future__ import annotations

import numpy as np

from .evaluate import Evaluation
from .numerics import rel_error
from .report import Row


def reconstruction(U, S, Vh, dU, dS, dVh) -> np.ndarray:
    """dU S Vh + U dS Vh + U S dVh, S padded to U's columns and Vh's rows."""
    k = S.shape[-1]
    Sm = np.zeros(S.shape[:-1] + (U.shape[-1], Vh.shape[-2]), np.result_type(U, S))
    idx = np.arange(k)
    Sm[..., idx, idx] = S
    dSm = np.zeros_like(Sm)
    dSm[..., idx, idx] = dS
    return dU @ Sm @ Vh + U @ dSm @ Vh + U @ Sm @ dVh


def supported(ev: Evaluation) -> str | None:
    m, n = ev.shape
    if ev.rank is not None or not ev.case.compute_uv:
        return ""  # nothing to say: the truncated check compares d(U S Vh) instead
    if ev.approximate:
        return "the chain rule does not hold for approximate rules: skipped"
    if ev.case.full_matrices and m != n and int(ev.info.get("rank_cut", 0)):
        return (
            "svd_jvp does not select the null vectors of a full SVD with m != n, so the chain "
            "rule does not hold there: skipped (the thin case checks it)"
        )
    return None


def check_chain_rule(ev: Evaluation) -> tuple[list[Row], list[str]]:
    why = supported(ev)
    if why is not None:
        return [], [why] if why else []
    P, T = ev.primals, ev.tangents
    rec = reconstruction(P["U"], P["S"], P["Vh"], T["dU"], T["dS"], T["dVh"])
    err = rel_error(rec, np.broadcast_to(ev.dA, rec.shape))
    return [Row(ev.name, "dA", "chain rule", err, ev.tolerance("chain rule"))], []
