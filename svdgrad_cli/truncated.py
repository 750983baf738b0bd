"""Truncated SVD: the top R singular triplets and the truncation error, differentiable exactly.

``truncated_svd(a, rank)`` returns ``TruncatedSVDResult(U, S, Vh, err)``, a jax.custom_jvp whose
rule couples the kept triplets to the discarded spectrum (see rules/truncated.py), and
``svd(a, full_matrices=False, rank=R)`` its first three outputs. Two solvers:

- "dense": the full thin SVD, then the closed form of the coupled system; exact for any
  degeneracy among the discarded values.
- "iterative": the top R triplets by subspace iteration (products by A and A^H), the coupled
  system by conjugate gradients (the same products); never forms A_perp or an m x m matrix.

``truncated_jvp`` and ``truncated_vjp`` are the conveniences svd_jvp and svd_vjp call with
``rank=``; they also return the diagnostics (the gap at the cut, iterations, residuals).
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .errors import ArgumentError
from .rules import truncated as tr
from .rules._common import _H, _Hdot, reciprocals

SOLVERS = ("auto", "dense", "iterative")

#: solver="auto" picks "iterative" when min(m, n) >= AUTO_MIN_SIZE and rank <= min(m, n) / 8
AUTO_MIN_SIZE = 400


class SolverWarning(RuntimeWarning):
    """truncated_svd and svd(..., rank=) with the iterative solver: a loop stopped short of its
    tolerance (at maxiter, or at a gap too small for it), or the cut lies inside a degenerate
    pair, where no derivative exists. Issued when the computation runs (under jit too); svd_jvp
    and svd_vjp with rank= report the same in their Diagnostics instead."""


def _warn_unless(ok, text, residual=None):
    """A SolverWarning, when the computation runs, unless every entry of ok is True."""

    def emit(ok, residual):
        if not bool(np.all(np.asarray(ok))):
            size = "" if residual is None else f" (relative residual {np.max(residual):.1e})"
            warnings.warn(f"truncated SVD: {text.format(size=size)}", SolverWarning, stacklevel=2)

    jax.debug.callback(emit, ok, residual)


_SHORT = (
    "the iterative solver's {what} stopped short of its tolerance{{size}}: maxiter too small or "
    "a small gap at the cut; the {result} are only about that accurate. Raise maxiter or use "
    "solver='dense' (exact)"
)


class TruncatedSVDResult(NamedTuple):
    """The top R triplets U (..., m, R), S (..., R), Vh (..., R, n) and err = ||A - U S Vh||_F."""

    U: jax.Array
    S: jax.Array
    Vh: jax.Array
    err: jax.Array


class Options(NamedTuple):
    """Static settings of the iterative solver (hashable: part of the compiled program)."""

    tol: float = 0.0  # 0: 32 machine eps (top triplets) and 32 machine eps (CG)
    maxiter: int = 200
    oversample: int = 10
    seed: int = 0


def resolve_solver(solver: str, m: int, n: int, rank: int) -> str:
    if solver not in SOLVERS:
        raise ArgumentError(f"solver must be one of {SOLVERS}, not {solver!r}")
    if solver != "auto":
        return solver
    k = min(m, n)
    return "iterative" if k >= AUTO_MIN_SIZE and 8 * rank <= k else "dense"


def options(tol=None, maxiter=None) -> Options:
    """Options for tol (None: 32 machine eps) and maxiter (None: 200), checked: ArgumentError
    naming the argument otherwise."""
    if maxiter is None:
        maxiter = Options().maxiter
    if isinstance(maxiter, bool) or not isinstance(maxiter, (int, np.integer)) or maxiter < 1:
        raise ArgumentError(f"maxiter must be a positive integer, got {maxiter!r}")
    if tol is not None and (
        isinstance(tol, bool)
        or not isinstance(tol, (int, float, np.integer, np.floating))
        or not (np.isfinite(tol) and tol > 0)
    ):
        raise ArgumentError(f"tol must be a positive finite number or None (default), got {tol!r}")
    return Options(tol=float(tol or 0.0), maxiter=int(maxiter))


def check_rank(rank, m: int, n: int) -> int:
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)):
        raise ArgumentError(f"rank must be an integer, got {rank!r}")
    k = min(m, n)
    if not 1 <= rank <= k:
        raise ArgumentError(f"rank must be between 1 and min(m, n) = {k}, got {rank}")
    return int(rank)


# --------------------------------------------------------------------------------------------
# pieces shared by the primal, the rule and the conveniences


def _tol(dtype, opts: Options) -> float:
    return opts.tol if opts.tol > 0 else 32 * float(np.finfo(np.dtype(dtype)).eps)


def _cg_limits(dtype, opts: Options) -> dict:
    return dict(tol=_tol(dtype, opts), maxiter=opts.maxiter)


def _products(a):
    return (lambda Y: a @ Y), (lambda X: _Hdot(a, X))


def _row_sum(fn, m: int, block: int = 1024):
    """sum over row blocks of fn(start, mask), mask (b,) marking rows counted in this block.

    The last block is shifted back to end at row m (static shapes), and its rows already counted
    are masked; memory stays bounded by the block.
    """
    b = min(block, m)
    starts = np.arange(0, m, b)

    def body(total, start):
        s0 = jnp.minimum(start, m - b)
        mask = (s0 + jnp.arange(b, dtype=jnp.int32)) >= start
        return total + fn(s0, mask, b), None

    first = fn(jnp.zeros((), jnp.int32), jnp.ones((b,), bool), b)
    total, _ = lax.scan(body, first, jnp.asarray(starts[1:], dtype=jnp.int32))
    return total


def _perp_inner(a, U, s, Vh, other=None):
    """||A_perp||_F^2 (other None) or Re <A_perp, other>, by row blocks of A_perp."""
    m = a.shape[-2]
    US = U * s[..., None, :].astype(U.dtype)

    def fn(start, mask, b):
        rows_a = lax.dynamic_slice_in_dim(a, start, b, axis=-2)
        rows_p = rows_a - lax.dynamic_slice_in_dim(US, start, b, axis=-2) @ Vh
        rows_o = rows_p if other is None else lax.dynamic_slice_in_dim(other, start, b, axis=-2)
        val = jnp.real(jnp.conj(rows_p) * rows_o)
        return jnp.sum(jnp.where(mask[:, None], val, 0), axis=(-2, -1))

    return _row_sum(fn, m)


def _random_start(a, l: int, seed: int):
    n = a.shape[-1]
    key = jax.random.PRNGKey(seed)
    shape = a.shape[:-2] + (n, l)
    rdt = jnp.finfo(a.dtype).dtype
    if jnp.issubdtype(a.dtype, jnp.complexfloating):
        k1, k2 = jax.random.split(key)
        re = jax.random.normal(k1, shape, rdt)
        return lax.complex(re, jax.random.normal(k2, shape, rdt)).astype(a.dtype)
    return jax.random.normal(key, shape, rdt)


def _top(a, rank: int, opts: Options):
    """(U, s, Vh, next_value, iterations, residual) by subspace iteration."""
    m, n = a.shape[-2:]
    l = min(min(m, n), rank + max(opts.oversample, rank))
    matvec, rmatvec = _products(a)
    return tr.top_triplets(
        matvec,
        rmatvec,
        _random_start(a, l, opts.seed),
        rank,
        tol=_tol(a.dtype, opts),
        maxiter=opts.maxiter,
    )


def _discarded_cut(s_kept, s_next, deg_tol):
    """Relative gap (s_R - s_{R+1}) / s_R at the cut, and whether it is within deg_tol."""
    sR = s_kept[..., -1]
    gap = sR - s_next
    rel = jnp.where(sR > 0, gap / jnp.where(sR > 0, sR, 1), 0)
    return rel, gap <= deg_tol


# --------------------------------------------------------------------------------------------
# the custom_jvp


@partial(jax.custom_jvp, nondiff_argnums=(4, 5, 6))
def _tsvd(a, eps, degeneracy_tol, rank_tol, rank, solver, opts):
    """(U, s, Vh, err, aux), aux (..., 4) real: s_{R+1} (or its Ritz estimate), iterations,
    relative residual and convergence (1 or 0) of the top-triplet iteration (0, 0 and 1 for the
    dense solver); aux has no derivative."""
    rdt = jnp.finfo(a.dtype).dtype
    if solver == "dense":
        U, s, Vh = jnp.linalg.svd(a, full_matrices=False)
        nxt = s[..., rank] if rank < s.shape[-1] else jnp.zeros(s.shape[:-1], rdt)
        aux = _aux(nxt)
        return (
            U[..., :rank],
            s[..., :rank],
            Vh[..., :rank, :],
            tr.truncation_error(s[..., rank:]),
            aux,
        )
    U, s, Vh, nxt, it, rel, ok = _top(a, rank, opts)
    err = jnp.sqrt(jnp.maximum(_perp_inner(a, U, s, Vh), 0))
    return U, s, Vh, err, _aux(nxt, it, rel, ok)


def _aux(nxt, it=None, rel=None, converged=None):
    """The primal's aux (..., 4): s_{R+1}, and iterations, residual and convergence of the
    top-triplet iteration (none: 0, 0, converged)."""
    rdt = nxt.dtype

    def col(x, default):
        x = jnp.asarray(default if x is None else x).astype(rdt)
        return jnp.broadcast_to(x, nxt.shape)

    return jnp.stack([nxt, col(it, 0), col(rel, 0), col(converged, 1)], axis=-1)


def _tangents(a, da, eps, degeneracy_tol, rank_tol, rank, solver, opts, warn=False):
    """((U, s, Vh, err, aux), (dU, dS, dVh, derr), extras): the truncated rule, either solver.

    extras: dict of cut_gap (relative), cut_degenerate, solver_iterations, solver_residual,
    solver_converged. warn: issue a SolverWarning when the conjugate gradients (forward, or
    their transpose in reverse mode) stop short, or the cut is degenerate (for the custom_jvp,
    which has no diagnostics).
    """
    from .api import _svd  # the thin SVD with svdgrad's own rule: differentiable again

    m, n = a.shape[-2:]
    dtype = a.dtype
    rdt = jnp.finfo(dtype).dtype
    matvec, rmatvec = _products(a)
    if solver == "dense":
        Uf, sf, Vhf = _svd(a, eps, degeneracy_tol, rank_tol, False, True)
        U, s, Vh = Uf[..., :rank], sf[..., :rank], Vhf[..., :rank, :]
        Ud, sd, Vd = Uf[..., rank:], sf[..., rank:], _H(Vhf[..., rank:, :])
        err = tr.truncation_error(sd)
        nxt = sf[..., rank] if rank < sf.shape[-1] else jnp.zeros(sf.shape[:-1], rdt)
        aux = lax.stop_gradient(_aux(nxt))
    else:
        U, s, Vh, err, aux = _tsvd(a, eps, degeneracy_tol, rank_tol, rank, solver, opts)
    rec = reciprocals(s, m, n, eps, degeneracy_tol, rank_tol)
    gap, degenerate_cut = _discarded_cut(s, aux[..., 0], rec.deg_tol)
    V = _H(Vh)

    dAV = da @ V
    P = _Hdot(U, dAV)
    rU = dAV - U @ P
    rV = _Hdot(da, U) - V @ _H(P)
    op = tr.coupled_operator(s, matvec, rmatvec, U, V)
    if solver == "dense":

        def solve(ru, rv):
            xy = tr.solve_closed_form(s, ru, rv, Ud, sd, Vd, rec.deg_tol)
            return xy, (jnp.zeros((), jnp.int32), jnp.zeros((), rdt), jnp.ones((), bool))

    else:
        tol = _tol(dtype, opts)

        def solve(ru, rv):
            x, y, it, res, ok = tr.solve_cg(op, s, ru, rv, U, V, tol=tol, maxiter=opts.maxiter)
            if warn:
                _warn_unless(
                    ok, _SHORT.format(what="conjugate gradients", result="derivatives"), res
                )
            return (x, y), (it, res, ok)

    (X, Y), (iterations, residual, converged) = tr.linear_solve(op, rU, rV, solve, has_aux=True)
    Omega_U, Omega_V = tr.kept_omegas(P, rec)
    dU = U @ Omega_U + X
    dVh = _H(V @ Omega_V + Y)
    dS = jnp.real(jnp.diagonal(P, axis1=-2, axis2=-1))
    if solver == "dense":
        inner = jnp.sum(sd * jnp.real(jnp.sum(jnp.conj(Ud) * (da @ Vd), axis=-2)), axis=-1)
    else:
        inner = _perp_inner(a, U, s, Vh, da)
    derr = jnp.where(err > 0, inner / jnp.where(err > 0, err, 1), 0)
    extras = dict(
        cut_gap=gap,
        cut_degenerate=degenerate_cut,
        solver_iterations=iterations,
        solver_residual=residual,
        solver_converged=converged,
    )
    return (U, s, Vh, err, aux), (dU, dS, dVh, derr), extras


@_tsvd.defjvp
def _tsvd_jvp(rank, solver, opts, primals, tangents):
    a, eps, degeneracy_tol, rank_tol = primals
    primal_out, tangent_out, extras = _tangents(
        a, tangents[0], eps, degeneracy_tol, rank_tol, rank, solver, opts, warn=True
    )
    _warn_unless(
        ~extras["cut_degenerate"],
        f"the cut at rank {rank} lies inside a degenerate pair (s_R = s_(R+1)): the top {rank} "
        "triplets have no derivative there, and the finite values returned are not one; keep "
        "or drop the whole block of equal singular values",
    )
    return primal_out, tangent_out + (jnp.zeros_like(primal_out[4]),)


# --------------------------------------------------------------------------------------------
# public entry points


def _prepare(a, rank, solver, eps, degeneracy_tol, rank_tol, tol, maxiter):
    from .api import _array, _check_matrix, _inexact_dtype, _tolerances

    a = _array(a, "a")
    _check_matrix(a, "a")
    m, n = a.shape[-2:]
    rank = check_rank(rank, m, n)
    solver = resolve_solver(solver, m, n, rank)
    dtype = _inexact_dtype(a.dtype)
    if a.dtype != dtype:
        a = a.astype(dtype) if isinstance(a, jax.Array) else jnp.asarray(a, dtype)
    opts = options(tol, maxiter)
    rdt = jnp.finfo(dtype).dtype
    tols = tuple(jnp.asarray(t).astype(rdt) for t in _tolerances(eps, degeneracy_tol, rank_tol))
    return a, rank, solver, tols, opts


def truncated_svd(
    a,
    rank,
    *,
    solver="auto",
    eps=0.0,
    degeneracy_tol=None,
    rank_tol=None,
    tol=None,
    maxiter=200,
):
    """The top ``rank`` singular triplets of a and the truncation error, differentiable exactly.

    Returns ``TruncatedSVDResult(U, S, Vh, err)``: U (..., m, R), S (..., R), Vh (..., R, n),
    err = ||A - U diag(S) Vh||_F (...). The derivatives of all four, in forward and reverse mode
    and to second order, include the coupling of the kept triplets to the discarded spectrum
    (the thin rule applied to truncated factors misses it). A cut inside a degenerate pair
    (s_R = s_{R+1} within degeneracy_tol) has no derivative: results stay finite there, and
    svd_jvp / svd_vjp with ``rank=`` report it (Diagnostics.cut_degenerate).

    solver : "dense" (full thin SVD and the closed form; exact for any degeneracy among the
        discarded values), "iterative" (subspace iteration and conjugate gradients with
        products by A and A^H only; never forms A - U S Vh or an m x m matrix) or "auto"
        (iterative when min(m, n) >= 400 and rank <= min(m, n) / 8).
    tol, maxiter : iterative solver: relative residual to reach (default 32 machine eps) and
        the most iterations of each loop (the top-triplet iteration for the triplets, the
        conjugate gradients for their derivatives).
    eps, degeneracy_tol, rank_tol : as in svd.

    Nothing here stops silently short of its tolerance. When a loop of the iterative solver
    does (maxiter too small, or a gap s_R - s_{R+1} so small relative to s_R that rounding
    stalls it), a :class:`SolverWarning` (a RuntimeWarning) gives the residual reached, when the
    computation runs, under jit, vmap and grad too; so does a derivative taken at a cut inside
    a degenerate pair. Turn it into an error with ``warnings.simplefilter("error",
    SolverWarning)``. svd_jvp and svd_vjp with ``rank=`` and ``return_info=True`` report the
    same as data: Diagnostics.solver_converged (False when a loop stopped short),
    range_residual, solver_residual and cut_degenerate.
    """
    a, rank, solver, tols, opts = _prepare(
        a, rank, solver, eps, degeneracy_tol, rank_tol, tol, maxiter
    )
    return _truncated_jit(a, *tols, rank=rank, solver=solver, opts=opts)


@partial(jax.jit, static_argnames=("rank", "solver", "opts"))
def _truncated_jit(a, eps, degeneracy_tol, rank_tol, *, rank, solver, opts):
    """truncated_svd once its arguments are checked: compiled once per shape, dtype, rank,
    solver and options (a call outside jit would otherwise dispatch op by op and trace the
    loops anew each time); inlined under an outer jit, and differentiable through _tsvd."""
    U, s, Vh, err, aux = _tsvd(a, eps, degeneracy_tol, rank_tol, rank, solver, opts)
    if solver == "iterative":
        text = _SHORT.format(what="top-triplet iteration", result="triplets and their derivatives")
        _warn_unless(aux[..., 3] > 0.5, text, aux[..., 2])
    return TruncatedSVDResult(U, s, Vh, err)


def info_fields(extras, aux):
    """The truncation fields of Diagnostics from the rule's extras and the primal's aux."""
    rdt = aux.dtype
    return dict(
        cut_gap=jnp.min(extras["cut_gap"]) if extras["cut_gap"].size else jnp.zeros((), rdt),
        cut_degenerate=jnp.any(extras["cut_degenerate"]),
        solver_iterations=jnp.max(extras["solver_iterations"]).astype(jnp.int32),
        solver_residual=jnp.max(extras["solver_residual"]).astype(rdt),
        range_iterations=jnp.max(aux[..., 1]).astype(jnp.int32),
        range_residual=jnp.max(aux[..., 2]),
        solver_converged=jnp.all(extras["solver_converged"]) & jnp.all(aux[..., 3] > 0.5),
    )


def _next_value(matvec, rmatvec, probe, U, s, Vh, opts: Options):
    """(s_{R+1}, iterations, relative residual, converged) for given top-R factors (U, s, Vh)
    of the matrix of matvec and rmatvec (probe: its shape and dtype), by tr.next_value with the
    solver's tol and maxiter (products only). The residual is relative to s_1 and bounds the
    error of the estimate (a Ritz value, from below): an estimate that did not converge is
    reported (converged False), since it could hide a cut inside a degenerate pair. Without
    discarded directions (R = min(m, n)) s_{R+1} = 0 exactly. A diagnostic: no derivative
    flows through it."""
    m, n = probe.shape[-2:]
    rank = s.shape[-1]
    rdt = jnp.finfo(probe.dtype).dtype
    if rank >= min(m, n):
        zero = jnp.zeros(s.shape[:-1], rdt)
        return zero, jnp.zeros((), jnp.int32), jnp.zeros((), rdt), jnp.ones((), bool)
    sg = lax.stop_gradient
    p = min(min(m, n) - rank, 1 + opts.oversample)
    U, s, V = sg(U), sg(s).astype(rdt), sg(_H(Vh))
    nxt, it, rel, ok = tr.next_value(
        lambda X: sg(matvec(X)),
        lambda Y: sg(rmatvec(Y)),
        U,
        V,
        _random_start(probe, p, opts.seed + 1),
        s[..., 0],
        tol=_tol(probe.dtype, opts),
        maxiter=opts.maxiter,
    )
    return nxt, it, rel.astype(rdt), ok


def vjp_core(a, factors, GU, gS, GVh, gerr, eps, degeneracy_tol, rank_tol, rank, solver, opts):
    """Hermitian-pairing cotangent of A from (GU, gS, GVh, gerr) of the top-R triplets and err.

    factors: (U, s, Vh) of rank R the cotangents were taken at, or None (computed here). With
    factors, s_{R+1} (the gap at the cut) is the top value of A - U S Vh: from its SVD for the
    dense solver, by _next_value for the iterative one (its iterations, residual and convergence
    in aux, as the top-triplet iteration's are without factors).
    Returns (GA, extras, gauge, aux, (U, s, Vh, err)), gauge the fields of _gauge_fields.
    """
    m, n = a.shape[-2:]
    dtype = a.dtype
    rdt = jnp.finfo(dtype).dtype
    matvec, rmatvec = _products(a)
    Ud = sd = Vd = None
    if factors is None and solver == "dense":
        from .api import _svd

        Uf, sf, Vhf = _svd(a, eps, degeneracy_tol, rank_tol, False, True)
        U, s, Vh = Uf[..., :rank], sf[..., :rank], Vhf[..., :rank, :]
        Ud, sd, Vd = Uf[..., rank:], sf[..., rank:], _H(Vhf[..., rank:, :])
        err = tr.truncation_error(sd)
        nxt = sf[..., rank] if rank < sf.shape[-1] else jnp.zeros(sf.shape[:-1], rdt)
        aux = _aux(nxt)
    elif factors is None:
        U, s, Vh, err, aux = _tsvd(a, eps, degeneracy_tol, rank_tol, rank, solver, opts)
    else:
        U, s, Vh = factors
        if solver == "dense":  # the discarded triplets: the SVD of A - U S Vh
            Ud, sd, Vhd = jnp.linalg.svd(a - (U * s[..., None, :].astype(dtype)) @ Vh, False)
            Vd = _H(Vhd)
            err = tr.truncation_error(sd)
            nxt = sd[..., 0]
        else:
            err = jnp.sqrt(jnp.maximum(_perp_inner(a, U, s, Vh), 0))
            nxt, it, rel, ok = _next_value(matvec, rmatvec, a, U, s, Vh, opts)
            nxt = jnp.broadcast_to(nxt, s.shape[:-1])
        aux = _aux(nxt) if solver == "dense" else _aux(nxt, it, rel, ok)
    rec = reciprocals(s, m, n, eps, degeneracy_tol, rank_tol)
    gap, degenerate_cut = _discarded_cut(s, aux[..., 0], rec.deg_tol)
    V = _H(Vh)

    M_U = None if GU is None else _Hdot(U, GU)
    GV = None if GVh is None else _H(GVh)
    M_V = None if GV is None else _Hdot(V, GV)
    G_P = tr.kept_cotangent(M_U, M_V, gS, rec, dtype)
    gauge = _gauge_fields(s, rec, U, V, GU, GV, M_U, M_V, gS)
    zero_U = jnp.zeros(U.shape, dtype) if GU is None else None
    zero_V = jnp.zeros(V.shape, dtype) if GV is None else None
    gX = zero_U if GU is None else GU - U @ M_U
    gY = zero_V if GV is None else GV - V @ M_V
    op = tr.coupled_operator(s, matvec, rmatvec, U, V)
    if solver == "dense":
        X, Y = tr.solve_closed_form(s, gX, gY, Ud, sd, Vd, rec.deg_tol)
        iterations, residual = jnp.zeros((), jnp.int32), jnp.zeros((), rdt)
        converged = jnp.ones((), bool)
    else:
        tol = _tol(dtype, opts)
        X, Y, iterations, residual, converged = tr.solve_cg(
            op, s, gX, gY, U, V, tol=tol, maxiter=opts.maxiter
        )
    GA = (U @ G_P + X) @ Vh + U @ _H(Y) if G_P is not None else X @ Vh + U @ _H(Y)
    if gerr is not None:
        perp = a - (U * s[..., None, :].astype(dtype)) @ Vh
        scale = jnp.where(err > 0, gerr / jnp.where(err > 0, err, 1), 0).astype(dtype)
        GA = GA + scale[..., None, None] * perp
    extras = dict(
        cut_gap=gap,
        cut_degenerate=degenerate_cut,
        solver_iterations=iterations,
        solver_residual=residual,
        solver_converged=converged,
    )
    return GA, extras, gauge, aux, (U, s, Vh, err)


def _gauge_fields(s, rec, U, V, GU, GV, M_U, M_V, gS):
    """The gauge fields of Diagnostics for the cotangents of the kept triplets, as the thin
    rule fills them for its k columns: the phase of complex pairs and the basis inside a
    degenerate block of kept values (rotation), gS split inside such a block (spectrum), and
    kept values in the null space (null_space: gS on them, or the null columns' cotangents).
    GU (m, R) and GV = GVh^H (n, R) in the Hermitian pairing; M_U = U^H GU, M_V = V^H GV."""
    from .api import _ratio
    from .rules import degenerate

    rotation, spectrum, null_abs, scale = degenerate.reverse_ambiguity(s, rec, M_U, M_V, gS)
    null = rec.rank_cut
    for G, F, M in ((GU, U, M_U), (GV, V, M_V)):
        if G is None:
            continue
        null_abs = jnp.maximum(null_abs, degenerate.null_frame_dependence(M, null))
        scale = jnp.maximum(scale, jnp.max(jnp.abs(M), initial=0.0))
        if F.shape[-2] > F.shape[-1]:  # a null column's cotangent outside the kept frame
            out = jnp.where(null[..., None, :], G - F @ M, 0)
            null_abs = jnp.maximum(null_abs, jnp.max(jnp.abs(out), initial=0.0))
            scale = jnp.maximum(scale, jnp.max(jnp.abs(G), initial=0.0))
    g_abs = jnp.maximum(jnp.maximum(rotation, spectrum), null_abs)
    return dict(
        rotation_relative=_ratio(rotation, scale),
        spectrum_relative=_ratio(spectrum, scale),
        null_space_relative=_ratio(null_abs, scale),
        gauge_residual=g_abs,
        gauge_relative=_ratio(g_abs, scale),
    )


@partial(jax.jit, static_argnames=("rank", "solver", "opts", "compute_uv", "with_info"))
def jvp_jit(a, da, eps, degeneracy_tol, rank_tol, *, rank, solver, opts, compute_uv, with_info):
    from .api import Diagnostics, _base_info

    batch = np.broadcast_shapes(a.shape[:-2], da.shape[:-2])
    a = jnp.broadcast_to(a, batch + a.shape[-2:])
    da = jnp.broadcast_to(da, batch + da.shape[-2:])
    primal, tangent, extras = _tangents(a, da, eps, degeneracy_tol, rank_tol, rank, solver, opts)
    (U, s, Vh, err, aux), (dU, dS, dVh, derr) = primal, tangent
    if compute_uv:
        out = (U, s, Vh, err), (dU, dS, dVh, derr)
    else:
        out = (s, err), (dS, derr)
    if not with_info:
        return out
    m, n = a.shape[-2:]
    info = _base_info(s, reciprocals(s, m, n, eps, degeneracy_tol, rank_tol), eps)
    info.update(info_fields(extras, aux))
    return out + (Diagnostics(**info),)


@partial(jax.jit, static_argnames=("rank", "solver", "opts", "convention", "with_info", "given"))
def vjp_jit(
    a,
    factors,
    gU,
    gS,
    gVh,
    gerr,
    eps,
    degeneracy_tol,
    rank_tol,
    *,
    rank,
    solver,
    opts,
    convention,
    with_info,
    given,
):
    from .api import Diagnostics, _base_info, _factor_residual

    dtype = a.dtype
    rdt = jnp.finfo(dtype).dtype
    cplx = jnp.issubdtype(dtype, jnp.complexfloating)
    shapes = [a.shape[:-2]] + [
        g.shape[: g.ndim - c] for g, c in ((gU, 2), (gS, 1), (gVh, 2), (gerr, 0)) if g is not None
    ]
    batch = np.broadcast_shapes(*shapes)

    def inward(g, core):
        if g is None:
            return None
        g = jnp.broadcast_to(g.astype(dtype), batch + g.shape[g.ndim - core :])
        return jnp.conj(g) if (cplx and convention == "jax") else g

    a = jnp.broadcast_to(a, batch + a.shape[-2:])
    GU, GVh = inward(gU, 2), inward(gVh, 2)
    gS = None if gS is None else jnp.broadcast_to(jnp.real(gS).astype(rdt), batch + gS.shape[-1:])
    gerr = None if gerr is None else jnp.broadcast_to(jnp.real(gerr).astype(rdt), batch)
    if given:
        U, s, Vh = factors
        factors = (
            jnp.broadcast_to(U.astype(dtype), batch + U.shape[-2:]),
            jnp.broadcast_to(s.astype(rdt), batch + s.shape[-1:]),
            jnp.broadcast_to(Vh.astype(dtype), batch + Vh.shape[-2:]),
        )
    GA, extras, gauge, aux, (U, s, Vh, err) = vjp_core(
        a,
        factors if given else None,
        GU,
        gS,
        GVh,
        gerr,
        eps,
        degeneracy_tol,
        rank_tol,
        rank,
        solver,
        opts,
    )
    if cplx and convention == "jax":
        GA = jnp.conj(GA)
    if not with_info:
        return GA
    m, n = a.shape[-2:]
    info = _base_info(s, reciprocals(s, m, n, eps, degeneracy_tol, rank_tol), eps)
    info.update(info_fields(extras, aux))
    info.update({k: v.astype(rdt) for k, v in gauge.items()})
    if given:
        # the factors must be the top R of an SVD of A: A V = U S and A^H U = V S
        AV = a @ _H(Vh)
        res_u = jnp.sqrt(jnp.sum(jnp.abs(AV - U * s[..., None, :].astype(dtype)) ** 2))
        res_v = jnp.sqrt(
            jnp.sum(jnp.abs(_Hdot(a, U) - _H(Vh) * s[..., None, :].astype(dtype)) ** 2)
        )
        scale = jnp.sqrt(jnp.sum(jnp.abs(a) ** 2))
        rel = jnp.where(scale > 0, jnp.maximum(res_u, res_v) / jnp.where(scale > 0, scale, 1), 0)
        info["factor_residual"] = jnp.maximum(
            rel.astype(rdt),
            _factor_residual(U @ (s[..., :, None].astype(dtype) * Vh), U, s, Vh, rank),
        )
    return GA, Diagnostics(**info)


# --------------------------------------------------------------------------------------------
# matrices known only by their products


class LinearOperator(NamedTuple):
    """A matrix known by its products, for the iterative solver: matvec(X) = A X for X (n, p),
    rmatvec(Y) = A^H Y for Y (m, p), shape (m, n), dtype. Both must be linear and accept
    blocks of columns (jnp arrays); they may close over arrays of any size."""

    matvec: Any
    rmatvec: Any
    shape: tuple
    dtype: Any


class LowRank(NamedTuple):
    """A matrix as left @ right (left (m, p), right (p, n)); todense() forms it."""

    left: jax.Array
    right: jax.Array

    def todense(self):
        return self.left @ self.right


def _op_setup(op, rank, tol, maxiter):
    if not isinstance(op, LinearOperator):
        raise TypeError("expected a svdgrad_cli.LinearOperator(matvec, rmatvec, shape, dtype)")
    m, n = (int(d) for d in op.shape)
    rank = check_rank(rank, m, n)
    opts = options(tol, maxiter)
    dtype = jnp.dtype(op.dtype)
    return m, n, rank, dtype, opts


def _op_top(op, m, n, rank, dtype, opts):
    l = min(min(m, n), rank + max(opts.oversample, rank))
    probe = jax.ShapeDtypeStruct((m, n), dtype)
    start = _random_start(probe, l, opts.seed)
    return tr.top_triplets(
        op.matvec, op.rmatvec, start, rank, tol=_tol(dtype, opts), maxiter=opts.maxiter
    )


def operator_jvp(op, dop, rank, *, tol=None, maxiter=200):
    """Forward mode for a matrix known by its products (iterative solver only).

    op, dop : LinearOperator of A and of the tangent dA (or dA as an array).
    Returns ((U, S, Vh), (dU, dS, dVh), info) with info a dict of the solver's iterations and
    residuals and the Ritz estimate of the gap at the cut. The truncation error needs the
    whole of A (its Frobenius norm) and is not computed here.
    """
    m, n, rank, dtype, opts = _op_setup(op, rank, tol, maxiter)
    if not isinstance(dop, LinearOperator):
        dA = jnp.asarray(dop, dtype)
        dop = LinearOperator(lambda X: dA @ X, lambda Y: _Hdot(dA, Y), (m, n), dtype)
    U, s, Vh, nxt, it_top, res_top, ok_top = _op_top(op, m, n, rank, dtype, opts)
    V = _H(Vh)
    dAV = dop.matvec(V)
    P = _Hdot(U, dAV)
    rU = dAV - U @ P
    rV = dop.rmatvec(U) - V @ _H(P)
    op_c = tr.coupled_operator(s, op.matvec, op.rmatvec, U, V)
    X, Y, it, res, ok = tr.solve_cg(op_c, s, rU, rV, U, V, **_cg_limits(dtype, opts))
    rec = reciprocals(s, m, n, 0.0, -1.0, -1.0)
    Omega_U, Omega_V = tr.kept_omegas(P, rec)
    dU = U @ Omega_U + X
    dVh = _H(V @ Omega_V + Y)
    dS = jnp.real(jnp.diagonal(P, axis1=-2, axis2=-1))
    gap, cut = _discarded_cut(s, nxt, rec.deg_tol)
    info = dict(
        cut_gap=gap,
        cut_degenerate=cut,
        solver_iterations=it,
        solver_residual=res,
        range_iterations=it_top,
        range_residual=res_top,
        solver_converged=ok & ok_top,
    )
    return (U, s, Vh), (dU, dS, dVh), info


def operator_vjp(op, gU=None, gS=None, gVh=None, *, rank, factors=None, tol=None, maxiter=200):
    """Reverse mode for a matrix known by its products (iterative solver only).

    Hermitian pairing (PyTorch's convention; for real A the same as JAX's). Returns
    (gA, info) with gA a LowRank (left (m, 2R), right (2R, n)): the gradient of a loss of the
    top R triplets is U G_P V^H + X V^H + U Y^H, rank at most 2R, so it is never formed.
    info also holds the gauge fields of Diagnostics (gauge_relative, rotation_relative,
    spectrum_relative, null_space_relative, gauge_residual) for the given cotangents.

    factors : the top R triplets (U, S, Vh) the cotangents were taken at, or None (computed
        here). With factors, s_{R+1} (for cut_gap and cut_degenerate) is estimated by subspace
        iteration on A - U S Vh (products by A and A^H; never formed) until its relative
        residual (range_iterations, range_residual) reaches tol; solver_converged is False
        when it stops short, since the estimate, from below, could then hide a cut inside a
        degenerate pair.
    """
    m, n, rank, dtype, opts = _op_setup(op, rank, tol, maxiter)
    if gU is None and gS is None and gVh is None:
        raise ArgumentError("operator_vjp needs at least one of gU, gS, gVh")
    if factors is None:
        U, s, Vh, nxt, it_top, res_top, ok_top = _op_top(op, m, n, rank, dtype, opts)
    else:
        U, s, Vh = (jnp.asarray(f) for f in factors)
        U, Vh = U.astype(dtype), Vh.astype(dtype)
        s = s.astype(jnp.finfo(dtype).dtype)
        probe = jax.ShapeDtypeStruct((m, n), dtype)
        nxt, it_top, res_top, ok_top = _next_value(op.matvec, op.rmatvec, probe, U, s, Vh, opts)
    V = _H(Vh)
    rec = reciprocals(s, m, n, 0.0, -1.0, -1.0)
    GU = None if gU is None else jnp.asarray(gU, dtype)
    GV = None if gVh is None else _H(jnp.asarray(gVh, dtype))
    gS = None if gS is None else jnp.real(jnp.asarray(gS)).astype(s.dtype)
    M_U = None if GU is None else _Hdot(U, GU)
    M_V = None if GV is None else _Hdot(V, GV)
    G_P = tr.kept_cotangent(M_U, M_V, gS, rec, dtype)
    gX = jnp.zeros(U.shape, dtype) if GU is None else GU - U @ M_U
    gY = jnp.zeros(V.shape, dtype) if GV is None else GV - V @ M_V
    op_c = tr.coupled_operator(s, op.matvec, op.rmatvec, U, V)
    X, Y, it, res, ok = tr.solve_cg(op_c, s, gX, gY, U, V, **_cg_limits(dtype, opts))
    left = jnp.concatenate([(U @ G_P if G_P is not None else 0) + X, U], axis=-1)
    right = jnp.concatenate([Vh, _H(Y)], axis=-2)
    gap, cut = _discarded_cut(s, nxt, rec.deg_tol)
    info = dict(
        cut_gap=gap,
        cut_degenerate=cut,
        solver_iterations=it,
        solver_residual=res,
        range_iterations=it_top,
        range_residual=res_top,
        solver_converged=ok & ok_top,
    )
    info.update(_gauge_fields(s, rec, U, V, GU, GV, M_U, M_V, gS))
    return LowRank(left, right), info
