"""Reference: jax.jvp and jax.vjp of jnp.linalg.svd, in 64-bit.

JAX's rule divides by s_j^2 - s_i^2 and by s, so it is a reference only where the rules cut
nothing (no equal and no zero singular values), and JAX has no rule for the full SVD with
m != n. For a truncated SVD, the top R triplets of JAX's thin SVD (and the error
sqrt(sum of the discarded s^2)) are exact where the whole spectrum is simple.
"""

from __future__ import annotations

import numpy as np

from .evaluate import Evaluation
from .fd import floors
from .numerics import pair_phases, rel_error
from .report import Row


def supported(ev: Evaluation) -> str | None:
    """None where JAX is a reference here, else why not."""
    m, n = ev.shape
    if ev.approximate:
        return "JAX's derivative is not a reference for approximate rules: skipped"
    if ev.rank is None and ev.case.full_matrices and ev.case.compute_uv and m != n:
        return "jax.jvp/jax.vjp do not support full_matrices=True with m != n"
    if not ev.exact or (ev.rank is not None and not ev.cut["spectrum_simple"]):
        return (
            "JAX's rule divides by s_j^2 - s_i^2 and by s, so it is no reference at equal or "
            "zero singular values: skipped"
        )
    return None


def jax_derivatives(ev: Evaluation) -> tuple[dict, np.ndarray]:
    """JAX's tangents (dU, dS, dVh[, derr]) along dA and its gA for ev.cots, in 64-bit."""
    import jax
    import jax.numpy as jnp

    case, rank = ev.case, ev.rank
    m, n = ev.shape
    k = min(m, n)

    def f(a):
        if rank is None:
            out = jnp.linalg.svd(a, full_matrices=case.full_matrices, compute_uv=case.compute_uv)
            return tuple(out) if case.compute_uv else (out,)
        U, s, Vh = jnp.linalg.svd(a, full_matrices=False)
        rest = s[..., rank:]
        if rank < k:
            err = jnp.sqrt(jnp.sum(rest * rest, axis=-1))
        else:
            err = jnp.zeros(s.shape[:-1], s.dtype)
        if case.compute_uv:
            return U[..., :, :rank], s[..., :rank], Vh[..., :rank, :], err
        return s[..., :rank], err

    if rank is None:
        names = ("dU", "dS", "dVh") if case.compute_uv else ("dS",)
    else:
        names = ("dU", "dS", "dVh", "derr") if case.compute_uv else ("dS", "derr")
    A = jnp.asarray(ev.A64)
    primals, tangents = jax.jvp(f, (A,), (jnp.asarray(ev.dA64),))
    jvp = {k: np.asarray(v) for k, v in zip(names, tangents, strict=True)}
    cots = dict(ev.cots)
    if case.compute_uv:
        # JAX's 64-bit SVD may pick other signs (phases) than the rules' factors: its tangents
        # are brought into the rules' gauge, and the cotangents into JAX's
        d = _phases(
            np.asarray(primals[0]), np.asarray(primals[2]), ev.primals["U"], ev.primals["Vh"]
        )
        jvp["dU"] = jvp["dU"] * d[..., None, :]
        jvp["dVh"] = jvp["dVh"] * np.conj(d)[..., :, None]
        if cots.get("gU") is not None:
            cots["gU"] = cots["gU"] * _pad(d, cots["gU"].shape[-1])[..., None, :]
        if cots.get("gVh") is not None:
            cots["gVh"] = cots["gVh"] * np.conj(_pad(d, cots["gVh"].shape[-2]))[..., :, None]
    _, pullback = jax.vjp(f, A)
    ct = []
    for name, p in zip(names, primals, strict=True):
        g = cots.get("g" + name[1:])
        if g is None:
            ct.append(jnp.zeros_like(p))
        else:
            g = np.broadcast_to(g, p.shape)
            ct.append(jnp.asarray(np.real(g) if name in ("dS", "derr") else g, p.dtype))
    (gA,) = pullback(tuple(ct))
    return jvp, np.asarray(gA)


def _phases(Uj, Vhj, U, Vh):
    """d with the rules' U = JAX's U d per column (and Vh = conj(d) JAX's Vh per row)."""
    c = np.sum(np.conj(Uj) * U, axis=-2) + np.sum(Vhj * np.conj(Vh), axis=-1)
    return pair_phases(c)


def _pad(d, size):
    """d extended by ones to size entries (the extra columns of a square full SVD have none)."""
    if d.shape[-1] >= size:
        return d[..., :size]
    return np.concatenate([d, np.ones(d.shape[:-1] + (size - d.shape[-1],), d.dtype)], axis=-1)


def check_jax(ev: Evaluation) -> tuple[list[Row], list[str]]:
    why = supported(ev)
    if why is not None:
        return [], [why]
    ref, gA = jax_derivatives(ev)
    fl = floors(ev)
    tol = ev.tolerance("jax")
    rows = [
        Row(ev.name, name, "jax", rel_error(ev.tangents[name], ref[name], fl[name]), tol)
        for name in ref
    ]
    rows.append(Row(ev.name, "gA", "jax", rel_error(ev.gA, gA), tol))
    return rows, []
