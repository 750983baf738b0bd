"""Public entry points: svd (a differentiable drop-in for jnp.linalg.svd), svd_jvp and svd_vjp.

svd is a jax.custom_jvp whose rule is svdgrad's (rules/), for all eight cases. The rule calls
svd again for its own primal, so it is itself differentiable: second order, Hessians and
Hessian-vector products go through the same rule. Reverse mode comes from JAX transposing the
rule. Importing this module changes no global JAX setting.

svd_jvp and svd_vjp are conveniences over the same rules, callable under jit, vmap and grad:
svd_jvp also selects, when a tangent splits a degenerate block, the basis the perturbation picks
(degenerate perturbation theory); svd_vjp takes the factors the cotangents were taken at and
reports what the cotangents cannot determine.
"""

from __future__ import annotations

import contextvars
from functools import lru_cache, partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .errors import ArgumentError
from .rules import degenerate, values
from .rules import svd as rule
from .rules._common import _H, default_tolerances, reciprocals

CONVENTIONS = ("jax", "torch")


class SVDResult(NamedTuple):
    """U (..., m, k or m), S (..., k) real and descending, Vh (..., k or n, n)."""

    U: jax.Array
    S: jax.Array
    Vh: jax.Array


class Diagnostics(NamedTuple):
    """What the tolerances did and what a tangent or cotangent leaves undetermined.

    Every field is an array (a device array, or a tracer under a transformation); reading one
    synchronises. Sizes marked relative are divided by the largest entry of the projections
    they come from; 0 where nothing of the kind exists.

    S: the singular values; min_s, max_s, min_gap (smallest s_i - s_{i+1}).
    degenerate_pairs: pairs whose 1/(s_j - s_i) term was cut; rank_cut: values at or below the
        rank tolerance; broadened: whether Lorentzian broadening was on.
    degenerate_split (forward): how much the tangent splits a degenerate block (relative
        off-diagonal Hermitian part of U^H dA V there); basis_selected: whether svd_jvp returned
        U and Vh rotated into the basis the tangent selects.
    gauge_relative (reverse): the largest of the four sizes below; gauge_residual its absolute
        size. rotation_relative: dependence on the phase of complex pairs or the basis inside a
        degenerate block. spectrum_relative: gS not constant on a degenerate block (the
        cotangents do not say how the equal values split). null_space_relative: dependence on
        singular vectors of the null space (or on the extra columns of a full SVD), or a
        cotangent on a zero singular value. factor_residual: for given factors, the larger of
        ||A - U S Vh|| / ||A|| and the departure from unitarity (max abs).
    With rank= (truncated SVD): cut_gap, (s_R - s_{R+1}) / s_R (the Ritz estimate of s_{R+1}
        for the iterative solver); cut_degenerate, whether the cut lies inside a degenerate
        pair (no derivative exists); solver_iterations and solver_residual of the conjugate
        gradients (relative); range_iterations and range_residual of the top-triplet
        iteration (max ||A v_i - s_i u_i|| / s_1) or, with factors= and the iterative solver,
        of the estimate of s_{R+1} (||A_perp v - s u|| / s_1). Zero without rank=.
        solver_converged:
        False when either loop of the iterative solver ends with its relative residual
        (range_residual, solver_residual) above max(tol, 1e4 machine eps), whether it stopped
        at its iteration limit (maxiter), stalled at a tiny gap, or diverged (a cut inside a
        degenerate pair); the results are then only about as accurate as those residuals.
        True for the dense solver and without rank=.
    """

    S: jax.Array
    min_s: jax.Array
    max_s: jax.Array
    min_gap: jax.Array
    degenerate_pairs: jax.Array
    rank_cut: jax.Array
    broadened: jax.Array
    degenerate_split: jax.Array
    basis_selected: jax.Array
    gauge_residual: jax.Array
    gauge_relative: jax.Array
    rotation_relative: jax.Array
    spectrum_relative: jax.Array
    null_space_relative: jax.Array
    factor_residual: jax.Array
    cut_gap: jax.Array
    cut_degenerate: jax.Array
    solver_iterations: jax.Array
    solver_residual: jax.Array
    range_iterations: jax.Array
    range_residual: jax.Array
    solver_converged: jax.Array = np.True_


# --------------------------------------------------------------------------------------------
# devices and argument checking


def resolve_device(device=None):
    """A jax.Device from "cpu", "gpu", "auto" or a jax.Device; None stays None (no transfer)."""
    if device is None or isinstance(device, jax.Device):
        return device
    if device == "cpu":
        return jax.devices("cpu")[0]
    if device == "gpu":
        try:
            gpus = jax.devices("gpu")
        except RuntimeError:
            gpus = []
        if not gpus:
            raise RuntimeError(
                "no GPU is available to JAX here; install a CUDA build of jaxlib "
                "(pip install 'svdgrad[gpu]') or use device='cpu'"
            )
        return gpus[0]
    if device == "auto":
        return jax.devices()[0]
    raise ArgumentError(f"device must be 'cpu', 'gpu', 'auto' or a jax.Device, not {device!r}")


def _is_tracer(x) -> bool:
    return isinstance(x, jax.core.Tracer)


def _inexact_dtype(*dtypes):
    """The common inexact dtype (integers and bools become the default float), as JAX runs it."""
    return _inexact_dtype_cached(bool(jax.config.jax_enable_x64), *dtypes)


@lru_cache(maxsize=256)
def _inexact_dtype_cached(x64, *dtypes):
    dt = np.result_type(*[np.dtype(d) for d in dtypes])
    if not np.issubdtype(dt, np.inexact):
        dt = np.result_type(dt, np.float64)
    return jax.dtypes.canonicalize_dtype(dt)


def _array(x, name):
    if isinstance(x, (jax.Array, np.ndarray)):
        return x
    try:
        return jnp.asarray(x)
    except TypeError as exc:
        raise TypeError(f"{name} must be an array, got {type(x).__name__}: {exc}") from None


def _check_matrix(a, name):
    if a.ndim < 2:
        raise ArgumentError(
            f"{name} must have shape (..., m, n), got shape {a.shape}; a vector needs a "
            "trailing or leading axis of length 1"
        )


def _check_shape(A, X, name, expected):
    nd = len(expected)
    if X.ndim == A.ndim - 2 + nd and X.shape[: X.ndim - nd] == A.shape[:-2]:  # the common case
        if tuple(X.shape[X.ndim - nd :]) == tuple(expected):
            return
    if X.ndim < nd or tuple(X.shape[X.ndim - nd :]) != tuple(expected):
        raise ArgumentError(
            f"{name} must end in shape {tuple(expected)} to match A of shape {A.shape}, "
            f"got shape {X.shape}"
        )
    try:
        np.broadcast_shapes(A.shape[:-2], X.shape[: X.ndim - nd])
    except ValueError:
        raise ArgumentError(
            f"batch dimensions of {name} {X.shape[: X.ndim - nd]} do not broadcast "
            f"with those of A {A.shape[:-2]}"
        ) from None


def _place(x, dtype, dev):
    """x as a JAX array of dtype, on dev when a device was named (never for tracers)."""
    if x.dtype != dtype:
        x = x.astype(dtype) if isinstance(x, jax.Array) else jnp.asarray(x, dtype)
    if dev is None or _is_tracer(x):
        return x if isinstance(x, jax.Array) else jnp.asarray(x)
    if isinstance(x, jax.Array) and x.devices() == {dev}:
        return x
    return jax.device_put(x, dev)


def _tolerances(eps, degeneracy_tol, rank_tol):
    """The three tolerances as scalars or arrays (None -> -1, "the default"); concrete values
    are checked here, traced ones as they are (a negative traced value means the default)."""
    if (
        type(eps) in (float, int)
        and eps >= 0
        and (
            degeneracy_tol is None or (type(degeneracy_tol) in (float, int) and degeneracy_tol >= 0)
        )
        and (rank_tol is None or (type(rank_tol) in (float, int) and rank_tol >= 0))
    ):  # the common case, without NumPy
        return (
            float(eps),
            -1.0 if degeneracy_tol is None else float(degeneracy_tol),
            -1.0 if rank_tol is None else float(rank_tol),
        )
    out = []
    for name, v, allow_none in (
        ("eps", eps, False),
        ("degeneracy_tol", degeneracy_tol, True),
        ("rank_tol", rank_tol, True),
    ):
        if v is None:
            if not allow_none:
                raise ArgumentError("eps must be a number >= 0 (0 means exact), not None")
            out.append(-1.0)
            continue
        if not _is_tracer(v):
            arr = np.asarray(v)
            if arr.dtype.kind not in "biuf":
                raise ArgumentError(f"{name} must be a real number, got {v!r}")
            if np.any(arr < 0) or np.any(np.isnan(arr)):
                fix = ">= 0" if not allow_none else ">= 0, or None for the default"
                raise ArgumentError(f"{name} must be {fix}, got {v!r}")
            out.append(float(arr) if arr.ndim == 0 else arr)
        else:
            out.append(v)
    return tuple(out)


# --------------------------------------------------------------------------------------------
# svd: the custom_jvp


@partial(jax.custom_jvp, nondiff_argnums=(4, 5))
def _svd(a, eps, degeneracy_tol, rank_tol, full_matrices, compute_uv):
    if compute_uv:
        return tuple(jnp.linalg.svd(a, full_matrices=full_matrices, compute_uv=True))
    return jnp.linalg.svd(a, full_matrices=False, compute_uv=False)


@_svd.defjvp
def _svd_jvp_rule(full_matrices, compute_uv, primals, tangents):
    a, eps, degeneracy_tol, rank_tol = primals
    da = tangents[0]
    m, n = a.shape[-2:]
    fm = full_matrices and compute_uv
    # the rule's own primal goes through _svd, so the rule is differentiable in turn
    U, s, Vh = _svd(a, eps, degeneracy_tol, rank_tol, fm, True)
    rec = reciprocals(s, m, n, eps, degeneracy_tol, rank_tol)
    if not compute_uv:
        return s, values.values_jvp(U, Vh, da)
    return (U, s, Vh), rule.tangents(U, s, Vh, da, rec, fm)


def svd(
    a,
    full_matrices: bool = True,
    compute_uv: bool = True,
    *,
    eps=0.0,
    degeneracy_tol=None,
    rank_tol=None,
    rank=None,
    solver="auto",
):
    """Singular value decomposition a = U diag(S) Vh, differentiable in every case.

    The call and defaults of jnp.linalg.svd: returns ``SVDResult(U, S, Vh)`` (a NamedTuple) or,
    with compute_uv=False, S alone. The factors are those of jnp.linalg.svd; derivatives come
    from svdgrad's rule (a jax.custom_jvp) in forward and reverse mode, for thin and full
    matrices (m != n included, where jnp.linalg.svd raises), real and complex. It works under
    jit, vmap, grad, jacfwd, jacrev, hessian and linearize, on the device the data lives on.

    Parameters
    ----------
    a : array (..., m, n); integer inputs become the default float type.
    full_matrices : True (default, as jnp.linalg.svd): U is (m, m), Vh is (n, n); the extra
        columns use the horizontal gauge U2^H dU2 = 0 (V2^H dV2 = 0). False: thin, k = min(m, n).
    compute_uv : False returns S only.
    eps : Lorentzian broadening of 1/(s_j^2 - s_i^2), x -> x / (x^2 + eps). 0 (default): exact.
    degeneracy_tol : pairs with |s_i - s_j| <= degeneracy_tol drop their 1/(s_j - s_i) term (the
        1/(s_j + s_i) term stays). None: 64 * machine eps * max(S).
    rank_tol : singular values <= rank_tol are left out of the 1/s terms, as a pseudo-inverse
        does. None: max(S) * max(m, n) * machine eps.
        The tolerances may be traced (no recompilation when they change; a negative traced
        value means the default, while a negative concrete value is an error: pass None, not
        -1, for the default); they receive no derivative.

    Degenerate and zero singular values: the rule is linear in the tangent, as a custom_jvp
    must be, so inside a degenerate block it cannot select the basis a tangent picks (svd_jvp
    does). Derivatives that stay exact at exactly equal values: the singular values through any
    symmetric function of each block (sum, nuclear norm, sum of squares, log det), the polar
    factor U Vh, projectors onto whole blocks (U_b U_b^H, V_b V_b^H), and anything built from
    U and Vh whose cotangent has no Hermitian off-diagonal part on the block. Not exact there:
    U f(S) Vh with f' != 0 on the block (A itself, A A^H A) and second derivatives of
    spectral losses whose gradient is such a function (sum s_i^2, log det). svd_vjp with
    return_info=True reports whether a given cotangent is affected.

    rank : None (default), or R: the top R singular triplets, U (..., m, R), S (..., R),
        Vh (..., R, n), with full_matrices=False; their derivatives include the coupling to
        the discarded spectrum (see svdgrad_cli.truncated_svd, which also returns the
        truncation error). solver : "auto" (default), "dense" or "iterative", with rank only.
        The iterative solver warns (svdgrad_cli.truncated.SolverWarning) when it stops short
        of full precision, and so does a derivative at a cut inside a degenerate pair; pass
        tol= and maxiter= through truncated_svd.
    """
    if rank is not None:
        if full_matrices:
            raise ArgumentError(
                "rank= gives the top rank singular triplets, a thin result: pass "
                "full_matrices=False with rank="
            )
        from .truncated import truncated_svd

        out = truncated_svd(
            a, rank, solver=solver, eps=eps, degeneracy_tol=degeneracy_tol, rank_tol=rank_tol
        )
        return SVDResult(out.U, out.S, out.Vh) if compute_uv else out.S
    a = _array(a, "a")
    _check_matrix(a, "a")
    dtype = _inexact_dtype(a.dtype)
    if a.dtype != dtype:
        a = a.astype(dtype) if isinstance(a, jax.Array) else jnp.asarray(a, dtype)
    rdt = jnp.finfo(dtype).dtype
    eps, degeneracy_tol, rank_tol = (
        jnp.asarray(t).astype(rdt) for t in _tolerances(eps, degeneracy_tol, rank_tol)
    )
    out = _svd(a, eps, degeneracy_tol, rank_tol, bool(full_matrices), bool(compute_uv))
    return SVDResult(*out) if compute_uv else out


# --------------------------------------------------------------------------------------------
# diagnostics (arrays, no synchronisation)


def _zero(dtype):
    return jnp.zeros((), dtype)


def _base_info(s, rec, eps):
    rdt = s.dtype
    k = s.shape[-1]
    iu = jnp.broadcast_to(jnp.triu(jnp.ones((k, k), bool), 1), rec.degenerate.shape)
    nonempty = s.size > 0
    min_gap = jnp.min(s[..., :-1] - s[..., 1:]) if k > 1 and nonempty else jnp.asarray(jnp.inf, rdt)
    z = _zero(rdt)
    return dict(
        S=s,
        min_s=jnp.min(s) if nonempty else jnp.asarray(jnp.nan, rdt),
        max_s=jnp.max(s) if nonempty else jnp.asarray(jnp.nan, rdt),
        min_gap=min_gap,
        degenerate_pairs=jnp.sum(rec.degenerate & iu),
        rank_cut=jnp.sum(rec.rank_cut),
        broadened=jnp.asarray(eps) > 0,
        degenerate_split=z,
        basis_selected=jnp.zeros((), bool),
        gauge_residual=z,
        gauge_relative=z,
        rotation_relative=z,
        spectrum_relative=z,
        null_space_relative=z,
        factor_residual=z,
        cut_gap=z,
        cut_degenerate=jnp.zeros((), bool),
        solver_iterations=jnp.zeros((), jnp.int32),
        solver_residual=z,
        range_iterations=jnp.zeros((), jnp.int32),
        range_residual=z,
        solver_converged=jnp.ones((), bool),
    )


def _to_batch(batch, *xs, core=None):
    """Each x broadcast to batch + its own trailing core dimensions (None passes through).

    The rules then never broadcast arrays of different rank (jax_numpy_rank_promotion="raise"
    stays usable); XLA does not copy a broadcast it can fuse.
    """
    out = []
    for x, nd in zip(xs, core, strict=True):
        if x is None or tuple(x.shape[: x.ndim - nd]) == tuple(batch):
            out.append(x)
        else:
            out.append(jnp.broadcast_to(x, tuple(batch) + tuple(x.shape[x.ndim - nd :])))
    return out


def _rec_to_batch(batch, rec):
    cores = (2, 2, 1, 2, 1, 0)
    return type(rec)(*_to_batch(batch, *rec, core=cores))


def _ratio(x, scale):
    tiny = jnp.finfo(scale.dtype).tiny
    return jnp.where(scale > tiny, x / jnp.maximum(scale, tiny), 0)


# --------------------------------------------------------------------------------------------
# forward mode


def _selected_frames(U1, Vh1, P, X, dA, s, rec, tall, nulls):
    """U1, Vh1, P, X in the basis dA selects inside degenerate blocks and, with nulls, among the
    null vectors (degenerate.selected_basis, degenerate.null_basis), and whether it did.

    One lax.cond (outside vmap): nothing beyond the test runs when no block is degenerate and
    no value is in the null space.
    """
    from .rules import thin

    same, possible = degenerate.clusters(s, rec)
    null = rec.rank_cut
    any_null = jnp.any(null, axis=-1) if nulls else jnp.zeros(possible.shape, bool)

    def rotate():
        W = degenerate.selected_basis(P, same)
        WH = _H(W)
        U2, Vh2, P2, X2 = U1 @ W, WH @ Vh1, WH @ P @ W, (X @ W if tall else WH @ X)
        ok = jnp.zeros(null.shape[:-1], bool)
        if nulls:
            zero, default = jnp.zeros((), rec.s_inv.dtype), -jnp.ones((), rec.s_inv.dtype)

            def thin_svd(Y):
                return _svd(Y, zero, default, default, False, True)

            U3, Vh3, ok = degenerate.null_basis(U2, Vh2, dA, null, thin_svd)
            P3, X3 = thin.project(U3, Vh3, dA)
            U2, Vh2, P2, X2 = (
                jnp.where(jnp.reshape(ok, ok.shape + (1, 1)), new, old)
                for new, old in ((U3, U2), (Vh3, Vh2), (P3, P2), (X3, X2))
            )
        return U2, Vh2, P2, X2, possible | ok

    def keep():
        return U1, Vh1, P, X, jnp.zeros(possible.shape, bool)

    if P.ndim == 2:
        return jax.lax.cond(possible | any_null, rotate, keep)
    return rotate()


def _jvp_impl(
    A, dA, eps, degeneracy_tol, rank_tol, *, full_matrices, compute_uv, select, with_info
):
    m, n = A.shape[-2:]
    k = min(m, n)
    fm = full_matrices and compute_uv
    U, s, Vh = _svd(A, eps, degeneracy_tol, rank_tol, fm, True)
    rec = reciprocals(s, m, n, eps, degeneracy_tol, rank_tol)
    batch = np.broadcast_shapes(A.shape[:-2], dA.shape[:-2])
    primal_U, primal_s, primal_Vh = U, s, Vh  # A's batch: the outputs unless a basis is selected
    U, s, Vh, dA = _to_batch(batch, U, s, Vh, dA, core=(2, 1, 2, 2))
    rec = _rec_to_batch(batch, rec)
    U1, Vh1 = U[..., :, :k], Vh[..., :k, :]
    from .rules import thin

    P, X = thin.project(U1, Vh1, dA)
    same, possible = degenerate.clusters(s, rec)
    split = degenerate.split_size(P, same)
    scale = jnp.max(jnp.abs(P), initial=0.0) if P.size else _zero(s.dtype)
    selected = jnp.zeros((), bool)
    if select:
        # a full SVD with m != n would need its extra columns completed anew: no null selection
        U1, Vh1, P, X, chosen = _selected_frames(
            U1, Vh1, P, X, dA, s, rec, m > k, nulls=not (fm and m != n)
        )
        selected = jnp.any(chosen)
        if fm and m > n:
            U = jnp.concatenate([U1, U[..., :, k:]], axis=-1)
        elif fm and n > m:
            Vh = jnp.concatenate([Vh1, Vh[..., k:, :]], axis=-2)
        else:
            U, Vh = U1, Vh1
    if compute_uv:
        tangents = rule.tangents_projected(U, s, Vh, P, X, rec, fm)
        primals = (U, primal_s, Vh) if select else (primal_U, primal_s, primal_Vh)
    else:
        primals = (primal_s,)
        tangents = (jnp.real(jnp.diagonal(P, axis1=-2, axis2=-1)),)
    if not with_info:
        return primals, tangents
    info = _base_info(s, rec, eps)
    info["degenerate_split"] = jnp.max(_ratio(split, scale)) if split.size else _zero(s.dtype)
    info["basis_selected"] = selected
    return primals, tangents, Diagnostics(**info)


def svd_jvp(
    A,
    dA,
    *,
    full_matrices: bool = False,
    compute_uv: bool = True,
    eps=0.0,
    degeneracy_tol=None,
    rank_tol=None,
    device=None,
    return_info: bool = False,
    rank=None,
    solver="auto",
    tol=None,
    maxiter=None,
):
    """Forward-mode derivative (JVP) of A = U diag(S) Vh, with degenerate perturbation theory.

    Parameters
    ----------
    A : array (..., m, n); float32, float64, complex64 or complex128 (integers become floats).
    dA : tangent (..., m, n), its batch dimensions broadcast with A's. An A of shape (m, n) with
        a dA of shape (T, m, n) computes one SVD and T tangents.
    full_matrices : False (default here: thin, U is (m, k), Vh is (k, n), k = min(m, n)) or
        True (U is (m, m), Vh is (n, n); horizontal gauge for the extra columns).
    compute_uv : False returns the singular values and their tangents only.
    eps, degeneracy_tol, rank_tol : as in :func:`svd`.
    device : None (default: where the data is, JAX's default device for NumPy input), "cpu",
        "gpu", "auto" or a jax.Device.
    return_info : also return a :class:`Diagnostics`.
    rank, solver : the truncated SVD of the top rank triplets (see truncated_svd): returns
        ``(U, S, Vh, err), (dU, dS, dVh, derr)`` (``(S, err), (dS, derr)`` with
        compute_uv=False), err the truncation error ||A - U S Vh||_F and derr its tangent.
        With rank, A is broadcast to the tangents' batch shape (one SVD per tangent).
    tol, maxiter : with rank and the iterative solver: the relative residual each loop (the
        top-triplet iteration, the conjugate gradients) is to reach (None: 32 machine eps) and
        the most iterations of each (None: 200). A loop that stops short of tol is never
        silent: with return_info, Diagnostics.solver_converged is False and range_residual /
        solver_residual give how far it got (see Diagnostics); check it, or use
        solver="dense", which is exact.

    Returns
    -------
    ``(U, S, Vh), (dU, dS, dVh)`` or, with compute_uv=False, ``(S,), (dS,)``; with return_info
    a third element, the Diagnostics. dS is real.

    Degenerate blocks. When the tangent splits a block of equal singular values (within
    degeneracy_tol), U and Vh are returned in the basis the tangent selects inside the block:
    the eigenvectors of the Hermitian part of the block of U^H dA V, whose eigenvalues, in
    descending order, are dS there. The chain rule dA = dU S Vh + U dS Vh + U S dVh then holds
    exactly, and so does the derivative of everything that does not depend on the basis inside
    the block (U f(S) Vh, projectors onto whole blocks, the polar factor, S). Diagnostics
    report basis_selected and degenerate_split. When several tangents share one SVD (dA has
    more batch dimensions than A), the basis cannot depend on the tangent and is not selected;
    degenerate_split then says how much that matters.

    Conventions: complex singular vectors carry an arbitrary phase per pair; the gauge is
    JAX's, Im diag(V^H dV) = 0 with the whole phase term i Im diag(U^H dA V) / S in dU, so the
    thin JVP equals jax.jvp of jnp.linalg.svd where both are defined. Singular values in the
    null space (at or below rank_tol) are left out of the 1/s terms, as a pseudo-inverse does.
    """
    A = _array(A, "A")
    dA = _array(dA, "dA")
    _check_matrix(A, "A")
    _check_shape(A, dA, "dA", A.shape[-2:])
    tols = _tolerances(eps, degeneracy_tol, rank_tol)
    dev = resolve_device(device)
    dtype = _inexact_dtype(A.dtype, dA.dtype)
    A, dA = _place(A, dtype, dev), _place(dA, dtype, dev)
    if rank is None and (tol is not None or maxiter is not None):
        raise ArgumentError(
            "tol and maxiter set the truncated SVD's iterative solver: they need rank="
        )
    if rank is not None:
        from . import truncated

        if full_matrices and compute_uv:
            raise ArgumentError("rank= gives a thin result: pass full_matrices=False with rank=")
        m, n = A.shape[-2:]
        rank = truncated.check_rank(rank, m, n)
        opts = truncated.options(tol, maxiter)
        return truncated.jvp_jit(
            A,
            dA,
            *tols,
            rank=rank,
            solver=truncated.resolve_solver(solver, m, n, rank),
            opts=opts,
            compute_uv=bool(compute_uv),
            with_info=bool(return_info),
        )
    # the basis may follow the tangent only when every SVD has one tangent of its own
    select = A.shape[:-2] == dA.shape[:-2] or tuple(A.shape[:-2]) == np.broadcast_shapes(
        A.shape[:-2], dA.shape[:-2]
    )
    if _all_floats(tols):
        return _run(
            "svd_jvp",
            _jvp_const,
            (A, dA),
            dict(
                zip(_TOLS, tols, strict=True),
                full_matrices=bool(full_matrices),
                compute_uv=bool(compute_uv),
                select=bool(select),
                with_info=bool(return_info),
            ),
        )
    return _jvp(
        A,
        dA,
        *tols,
        full_matrices=bool(full_matrices),
        compute_uv=bool(compute_uv),
        select=bool(select),
        with_info=bool(return_info),
    )


_TOLS = ("eps", "degeneracy_tol", "rank_tol")
_JVP_FLAGS = ("full_matrices", "compute_uv", "select", "with_info")
#: tolerances traced (arrays, tracers) or, when they are Python numbers, compile-time constants
#: (about 30 us less per small call: the reciprocals fold)
_jvp = jax.jit(_jvp_impl, static_argnames=_JVP_FLAGS)
_jvp_const = jax.jit(_jvp_impl, static_argnames=_JVP_FLAGS + _TOLS)


#: How svd_jvp and svd_vjp call their compiled program when the tolerances are constants:
#: None calls it; the command line sets a runner that keeps compiled executables across
#: processes (svdgrad_cli.cli._kept), called as runner(name, jitted, args, static_kwargs).
_RUNNER: contextvars.ContextVar = contextvars.ContextVar("svdgrad_runner", default=None)


def _run(name, jitted, args, static):
    runner = _RUNNER.get()
    if runner is None or any(_is_tracer(x) for x in jax.tree_util.tree_leaves(args)):
        return jitted(*args, **static)
    return runner(name, jitted, args, static)


def _all_floats(tols) -> bool:
    return all(type(t) is float for t in tols)


# --------------------------------------------------------------------------------------------
# reverse mode


def factor_tolerance(dtype, m: int, n: int) -> float:
    """How far given factors may be from factoring A: 100 * max(m, n) * machine eps."""
    return float(100 * max(m, n) * np.finfo(np.dtype(dtype)).eps)


def _factor_residual(A, U, s, Vh, k):
    U1, Vh1 = U[..., :, :k], Vh[..., :k, :]
    R = A - (U1 * s[..., None, :].astype(U1.dtype)) @ Vh1
    nA = jnp.sqrt(jnp.sum(jnp.abs(A) ** 2, axis=(-2, -1)))
    nR = jnp.sqrt(jnp.sum(jnp.abs(R) ** 2, axis=(-2, -1)))
    rel = jnp.where(nA > 0, nR / jnp.where(nA > 0, nA, 1), nR)
    UhU, VhV = _H(U) @ U, Vh @ _H(Vh)
    eU = jnp.abs(UhU - jnp.broadcast_to(jnp.eye(UhU.shape[-1], dtype=U.dtype), UhU.shape))
    eV = jnp.abs(VhV - jnp.broadcast_to(jnp.eye(VhV.shape[-1], dtype=Vh.dtype), VhV.shape))
    order = jnp.where(s.shape[-1] > 1, jnp.max(s[..., 1:] - s[..., :-1], initial=0.0), 0)
    negative = jnp.max(-s, initial=0.0)
    return jnp.maximum(
        jnp.maximum(jnp.max(rel), jnp.maximum(jnp.max(eU), jnp.max(eV))),
        _ratio(jnp.maximum(order, negative), jnp.max(jnp.abs(s), initial=0.0)),
    )


def _vjp_impl(
    A,
    factors,
    gU,
    gS,
    gVh,
    eps,
    degeneracy_tol,
    rank_tol,
    *,
    full_matrices,
    compute_uv,
    convention,
    with_info,
    given,
):
    m, n = A.shape[-2:]
    k = min(m, n)
    dtype = A.dtype
    cplx = jnp.issubdtype(dtype, jnp.complexfloating)
    fm = full_matrices and compute_uv

    # JAX's cotangents pair without conjugation: Re sum(g * d). The rules use the Hermitian
    # pairing Re sum(conj(G) * d), so G = conj(g) on the way in and out. PyTorch's convention is
    # the Hermitian one already.
    def inward(g):
        if g is None:
            return None
        g = g.astype(dtype) if g.dtype != dtype else g
        return jnp.conj(g) if (cplx and convention == "jax") else g

    GU, GVh = inward(gU), inward(gVh)
    rdt = jnp.finfo(dtype).dtype
    gS = None if gS is None else jnp.real(gS).astype(rdt)
    if given:
        U, s, Vh = factors[0].astype(dtype), factors[1].astype(rdt), factors[2].astype(dtype)
    else:
        U, s, Vh = _svd(A, eps, degeneracy_tol, rank_tol, fm, True)
    rec = reciprocals(s, m, n, eps, degeneracy_tol, rank_tol)
    batch = np.broadcast_shapes(
        A.shape[:-2],
        U.shape[:-2],
        *[g.shape[: g.ndim - c] for g, c in ((GU, 2), (gS, 1), (GVh, 2)) if g is not None],
    )
    A, U, s, Vh, GU, gS, GVh = _to_batch(
        batch, A, U, s, Vh, GU, gS, GVh, core=(2, 2, 1, 2, 2, 1, 2)
    )
    rec = _rec_to_batch(batch, rec)
    GA, M_U, M_V = rule.cotangent(U, s, Vh, GU, gS, GVh, rec, dtype, fm)
    if cplx and convention == "jax":
        GA = jnp.conj(GA)
    if not with_info:
        return GA

    info = _base_info(s, rec, eps)
    rotation, spectrum, null_values, scale = degenerate.reverse_ambiguity(s, rec, M_U, M_V, gS)
    null_abs = null_values
    null = rec.rank_cut
    for G, frame, tall in ((GU, U, True), (GVh, Vh, False)):
        if G is None:
            continue
        # the null frame: null columns of the thin part, plus the extra columns of a full SVD
        p = frame.shape[-1] if tall else frame.shape[-2]
        mask = null
        if p > k:
            mask = jnp.concatenate([null, jnp.ones(null.shape[:-1] + (p - k,), bool)], axis=-1)
        Z = _H(frame) @ G if tall else G @ _H(frame)
        null_abs = jnp.maximum(null_abs, degenerate.null_frame_dependence(Z, mask))
        scale = jnp.maximum(scale, jnp.max(jnp.abs(Z), initial=0.0))
        rows = m if tall else n
        if rows > p:  # thin: the part of a null column's cotangent outside the returned ones
            out = G - frame @ Z if tall else G - Z @ frame
            out = jnp.where(mask[..., None, :] if tall else mask[..., :, None], out, 0)
            null_abs = jnp.maximum(null_abs, jnp.max(jnp.abs(out), initial=0.0))
            scale = jnp.maximum(scale, jnp.max(jnp.abs(G), initial=0.0))
    info["rotation_relative"] = _ratio(rotation, scale)
    info["spectrum_relative"] = _ratio(spectrum, scale)
    info["null_space_relative"] = _ratio(null_abs, scale)
    g_abs = jnp.maximum(jnp.maximum(rotation, spectrum), null_abs)
    info["gauge_residual"] = g_abs
    info["gauge_relative"] = _ratio(g_abs, scale)
    if given:
        info["factor_residual"] = _factor_residual(A, U, s, Vh, k).astype(s.dtype)
    return GA, Diagnostics(**info)


_VJP_FLAGS = ("full_matrices", "compute_uv", "convention", "with_info", "given")
_vjp = jax.jit(_vjp_impl, static_argnames=_VJP_FLAGS)
_vjp_const = jax.jit(_vjp_impl, static_argnames=_VJP_FLAGS + _TOLS)


def svd_vjp(
    A,
    gU=None,
    gS=None,
    gVh=None,
    *,
    factors=None,
    full_matrices: bool = False,
    compute_uv: bool = True,
    convention: str = "jax",
    eps=0.0,
    degeneracy_tol=None,
    rank_tol=None,
    device=None,
    return_info: bool = False,
    rank=None,
    solver="auto",
    gerr=None,
    tol=None,
    maxiter=None,
):
    """Reverse-mode derivative (VJP) of A = U diag(S) Vh: the cotangent gA of A.

    Parameters
    ----------
    A : array (..., m, n).
    gU, gS, gVh : cotangents of U (..., m, k or m), S (..., k) and Vh (..., k or n, n); None
        means zero, at least one is required. With compute_uv=False only gS is accepted. Their
        batch dimensions broadcast with A's.
    factors : (U, S, Vh), the SVD the cotangents were taken at (numpy's, torch's, a GPU
        solver's: each may pick other signs or phases per singular pair, and only the factors
        say which). No SVD is computed then, only the products. Concrete factors are checked:
        ||A - U S Vh|| / ||A|| and the departure of U and Vh from unitarity must be within
        :func:`factor_tolerance`, and S non-negative and descending; otherwise ValueError.
        Under a transformation the same residual is in the Diagnostics (factor_residual).
        full_matrices follows the factors' shapes. None (default): the cotangents pair with
        the factors :func:`svd` returns for A.
    convention : "jax" (default): the cotangents pair with the outputs without conjugation, as in
        jax.vjp, so that Re sum(gA * dA) = Re sum(gU * dU) + sum(gS * dS) + Re sum(gVh * dVh)
        for the (dU, dS, dVh) of the rule. "torch": the pairing conjugates, as PyTorch's
        autograd does: torch_vjp(c) = conj(jax_vjp(conj(c))).
    full_matrices, compute_uv, eps, degeneracy_tol, rank_tol, device : as in svd_jvp.
    return_info : also return a :class:`Diagnostics`. gauge_relative measures how much of the
        result depends on something the cotangents cannot determine: the phase of complex
        pairs or the basis inside a degenerate block (rotation_relative), how equal values
        split (spectrum_relative), or null-space singular vectors and the extra columns of a
        full SVD (null_space_relative). A loss that is a smooth function of A has it at
        rounding level, except in the case svd's docstring names (U f(S) Vh with f' != 0 seen
        along a direction that keeps gS equal on the block).

    rank, solver, gerr : the truncated SVD of the top rank triplets (see truncated_svd): gU
        (..., m, R), gS (..., R), gVh (..., R, n) and gerr (...), the cotangent of the
        truncation error; factors, if given, are the rank-R triplets (as ``svdgrad svd --rank``
        writes them). The cotangents couple to the discarded spectrum through the same
        self-adjoint system as the forward rule. The gauge fields of the Diagnostics
        (gauge_relative and the three sizes it is the largest of) cover the R kept triplets as
        they cover the k columns of the thin SVD: the phase of complex kept pairs, the basis
        inside a degenerate block of kept values, gS split on such a block, kept values in the
        null space.
    tol, maxiter : as in svd_jvp (with rank and the iterative solver); with return_info,
        Diagnostics.solver_converged says whether both loops reached tol.

    Returns
    -------
    gA with the broadcast batch shape and A's dtype, or ``(gA, Diagnostics)``.

    The VJP is the exact transpose of the rule svd differentiates with, gauge included.
    """
    if convention not in CONVENTIONS:
        raise ArgumentError(f"convention must be one of {CONVENTIONS}, not {convention!r}")
    tols = _tolerances(eps, degeneracy_tol, rank_tol)
    if gU is None and gS is None and gVh is None and gerr is None:
        raise ArgumentError("svd_vjp needs at least one of gU, gS, gVh (or gerr with rank=)")
    if gerr is not None and rank is None:
        raise ArgumentError("gerr is the cotangent of the truncation error: it needs rank=")
    if rank is None and (tol is not None or maxiter is not None):
        raise ArgumentError(
            "tol and maxiter set the truncated SVD's iterative solver: they need rank="
        )
    if not compute_uv and (gU is not None or gVh is not None):
        raise ArgumentError("with compute_uv=False only gS is accepted (U and Vh are not outputs)")
    dev = resolve_device(device)
    A = _array(A, "A")
    _check_matrix(A, "A")
    m, n = A.shape[-2:]
    k = min(m, n)
    if rank is not None:
        from . import truncated

        if full_matrices and compute_uv:
            raise ArgumentError("rank= gives a thin result: pass full_matrices=False with rank=")
        k = rank = truncated.check_rank(rank, m, n)
        opts = truncated.options(tol, maxiter)
    if factors is not None:
        factors = _check_factors(A, factors, compute_uv, k, rank is not None)
        if rank is None:
            full_matrices = factors[0].shape[-1] == m if m > n else factors[2].shape[-2] == n
    ku, kv = (m, n) if (full_matrices and compute_uv) else (k, k)
    cots = {}
    for name, g, shape in (("gU", gU, (m, ku)), ("gS", gS, (k,)), ("gVh", gVh, (kv, n))):
        if g is not None:
            g = _array(g, name)
            _check_shape(A, g, name, shape)
            cots[name] = g
    # complex factors of a real A (another solver's complex SVD) make the work complex
    extra = [factors[0].dtype, factors[2].dtype] if factors is not None else []
    dtype = _inexact_dtype(A.dtype, *[g.dtype for g in cots.values()], *extra)
    A = _place(A, dtype, dev)
    cots = {name: _place(g, _inexact_dtype(g.dtype), dev) for name, g in cots.items()}
    if factors is not None:
        factors = tuple(_place(f, _inexact_dtype(f.dtype), dev) for f in factors)
    if rank is not None:
        if gerr is not None:
            gerr = _array(gerr, "gerr")
            if not _is_tracer(gerr) and np.iscomplexobj(np.empty(0, gerr.dtype)):
                raise ArgumentError("gerr must be real: the truncation error is real")
            try:
                np.broadcast_shapes(A.shape[:-2], gerr.shape)
            except ValueError:
                raise ArgumentError(
                    f"gerr has shape {gerr.shape}; it must broadcast with A's batch {A.shape[:-2]}"
                ) from None
            gerr = _place(gerr, _inexact_dtype(gerr.dtype), dev)
        out = truncated.vjp_jit(
            A,
            factors,
            cots.get("gU"),
            cots.get("gS"),
            cots.get("gVh"),
            gerr,
            *tols,
            rank=rank,
            solver=truncated.resolve_solver(solver, m, n, rank),
            opts=opts,
            convention=convention,
            with_info=bool(return_info) or factors is not None,
            given=factors is not None,
        )
    elif _all_floats(tols):
        out = _run(
            "svd_vjp",
            _vjp_const,
            (A, factors, cots.get("gU"), cots.get("gS"), cots.get("gVh")),
            dict(
                zip(_TOLS, tols, strict=True),
                full_matrices=bool(full_matrices),
                compute_uv=bool(compute_uv),
                convention=convention,
                with_info=bool(return_info) or factors is not None,
                given=factors is not None,
            ),
        )
    else:
        out = _vjp(
            A,
            factors,
            cots.get("gU"),
            cots.get("gS"),
            cots.get("gVh"),
            *tols,
            full_matrices=bool(full_matrices),
            compute_uv=bool(compute_uv),
            convention=convention,
            with_info=bool(return_info) or factors is not None,
            given=factors is not None,
        )
    if factors is None:
        return out
    gA, info = out
    if not _is_tracer(info.factor_residual):
        residual = float(info.factor_residual)
        limit = factor_tolerance(np.finfo(np.dtype(A.dtype)).dtype, m, n)
        limit = max(limit, factor_tolerance(np.finfo(np.dtype(factors[0].dtype)).dtype, m, n))
        if not residual <= limit:
            raise ArgumentError(
                f"factors do not factor A: residual {residual:.2e} (||A - U S Vh|| / ||A||, "
                f"unitarity and ordering) exceeds {limit:.1e}; pass the U, S, Vh of this A"
            )
    return (gA, info) if return_info else gA


def _check_factors(A, factors, compute_uv, k=None, truncated=False):
    try:
        U, S, Vh = factors
    except (TypeError, ValueError):
        raise ArgumentError("factors must be a tuple (U, S, Vh)") from None
    U, S, Vh = _array(U, "factors U"), _array(S, "factors S"), _array(Vh, "factors Vh")
    m, n = A.shape[-2:]
    k = min(m, n) if k is None else k
    if truncated:
        if S.ndim < 1 or S.shape[-1] != k or U.shape[-2:] != (m, k) or Vh.shape[-2:] != (k, n):
            raise ArgumentError(
                f"factors of rank {k} must have shapes (..., {m}, {k}), (..., {k}) and "
                f"(..., {k}, {n}); got {U.shape}, {S.shape} and {Vh.shape}"
            )
        return U, S, Vh
    if S.ndim < 1 or S.shape[-1] != k:
        raise ArgumentError(f"factors: S must have shape (..., {k}) for A of shape {A.shape}")
    if U.ndim < 2 or U.shape[-2] != m or U.shape[-1] not in (k, m):
        raise ArgumentError(
            f"factors: U must have shape (..., {m}, {k}) or (..., {m}, {m}), got {U.shape}"
        )
    if Vh.ndim < 2 or Vh.shape[-1] != n or Vh.shape[-2] not in (k, n):
        raise ArgumentError(
            f"factors: Vh must have shape (..., {k}, {n}) or (..., {n}, {n}), got {Vh.shape}"
        )
    if np.iscomplexobj(np.empty(0, S.dtype)):
        raise ArgumentError("factors: S must be real")
    return U, S, Vh


__all__ = [
    "svd",
    "svd_jvp",
    "svd_vjp",
    "SVDResult",
    "Diagnostics",
    "resolve_device",
    "default_tolerances",
    "factor_tolerance",
    "CONVENTIONS",
]
