"""Public entry points: svd_jvp and svd_vjp.

Both are jitted (flags static, tolerances traced so that changing them does not recompile),
batched over leading dimensions with NumPy broadcasting between A and the tangents or
cotangents, dtype-preserving (float32, float64, complex64, complex128; x64 is enabled when this
package is imported) and run on the device the caller names.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from .rules import full, thin, values
from .rules._common import _H, default_tolerances, reciprocals

jax.config.update("jax_enable_x64", True)

CONVENTIONS = ("jax", "torch")


# --------------------------------------------------------------------------------------------
# devices and argument checking


def resolve_device(device=None):
    """A jax.Device from None/"cpu" (the default), "gpu", "auto" or a jax.Device."""
    if device is None or device == "cpu":
        return jax.devices("cpu")[0]
    if isinstance(device, jax.Device):
        return device
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
    raise ValueError(f"device must be 'cpu', 'gpu', 'auto' or a jax.Device, not {device!r}")


def _as_array(x, name):
    x = jnp.asarray(x) if not isinstance(x, jax.Array) else x
    if x.ndim < 2 and name == "A":
        raise ValueError(f"A must have shape (..., m, n), got shape {x.shape}")
    if not (jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.complexfloating)):
        x = x.astype(jnp.float64)
    return x


def _check_matrix_shape(A, X, name, expected):
    if X.ndim < len(expected) or tuple(X.shape[X.ndim - len(expected) :]) != tuple(expected):
        raise ValueError(
            f"{name} must end in shape {tuple(expected)} to match A of shape {A.shape}, "
            f"got shape {X.shape}"
        )
    try:
        np.broadcast_shapes(A.shape[:-2], X.shape[: X.ndim - len(expected)])
    except ValueError:
        raise ValueError(
            f"batch dimensions of {name} {X.shape[: X.ndim - len(expected)]} do not broadcast "
            f"with those of A {A.shape[:-2]}"
        ) from None


def _place(x, dtype, dev):
    """x as dtype on dev, without a copy or a dispatch when it is already there."""
    if x.dtype != dtype:
        x = x.astype(dtype)
    if isinstance(x, jax.Array) and x.devices() == {dev}:
        return x
    return jax.device_put(x, dev)


def _tol(x):
    return -1.0 if x is None else float(x)


def _check_tols(eps, degeneracy_tol, rank_tol):
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    for name, v in (("degeneracy_tol", degeneracy_tol), ("rank_tol", rank_tol)):
        if v is not None and v < 0:
            raise ValueError(f"{name} must be >= 0 or None (default), got {v}")


# --------------------------------------------------------------------------------------------
# diagnostics (device arrays, no synchronisation)


def _info(s, rec, eps):
    k = s.shape[-1]
    iu = jnp.triu(jnp.ones((k, k), bool), 1)
    if k > 1:
        gaps = s[..., :-1] - s[..., 1:]
        min_gap = jnp.min(gaps)
    else:
        min_gap = jnp.asarray(jnp.inf, s.dtype)
    return {
        "S": s,
        "min_s": jnp.min(s) if s.size else jnp.asarray(jnp.nan, s.dtype),
        "max_s": jnp.max(s) if s.size else jnp.asarray(jnp.nan, s.dtype),
        "min_gap": min_gap,
        "degenerate_pairs": jnp.sum(rec.degenerate & iu),
        "rank_cut": jnp.sum(rec.rank_cut),
        "broadened": jnp.asarray(eps) > 0,
    }


def _gauge(M_U, M_V, rec, extra):
    """Size of the part of a cotangent that the arbitrary gauge would change.

    Phase of complex singular pairs and rotations inside degenerate blocks: the skew-Hermitian
    part of N = M_U + M_V on the diagonal and on degenerate pairs must vanish. extra: the skew
    part of U2^H GU2 or Vh2 GVh2^H in the full case (or None).
    """
    parts = [M for M in (M_U, M_V) if M is not None]
    if not parts:
        z = jnp.zeros((), rec.s_inv.dtype)
        return z, z
    N = parts[0] if len(parts) == 1 else parts[0] + parts[1]
    k = N.shape[-1]
    watch = rec.degenerate | jnp.eye(k, dtype=bool)
    skew = jnp.abs(N - _H(N))
    absolute = jnp.max(jnp.where(watch, skew, 0)) if k else jnp.zeros((), skew.dtype)
    scale = jnp.max(jnp.stack([jnp.max(jnp.abs(M)) for M in parts])) if k else 1.0
    if extra is not None:
        absolute = jnp.maximum(absolute, jnp.max(extra))
    tiny = jnp.finfo(skew.dtype).tiny
    return absolute, absolute / jnp.maximum(scale, tiny)


# --------------------------------------------------------------------------------------------
# forward mode


@partial(jax.jit, static_argnames=("full_matrices", "compute_uv", "with_info"))
def _jvp(A, dA, eps, degeneracy_tol, rank_tol, *, full_matrices, compute_uv, with_info):
    m, n = A.shape[-2:]
    k = min(m, n)
    if not compute_uv:
        U, s, Vh = jnp.linalg.svd(A, full_matrices=False)
        dS = values.values_jvp(U, Vh, dA)
        out = ((s,), (dS,))
        if with_info:
            rec = reciprocals(s, m, n, eps, degeneracy_tol, rank_tol)
            return out + (_info(s, rec, eps),)
        return out

    U, s, Vh = jnp.linalg.svd(A, full_matrices=full_matrices)
    rec = reciprocals(s, m, n, eps, degeneracy_tol, rank_tol)
    U1, Vh1 = U[..., :, :k], Vh[..., :k, :]
    dU, dS, dVh = thin.thin_jvp(U1, s, Vh1, dA, rec)
    s_inv = rec.s_inv.astype(dA.dtype)
    if full_matrices and m > n:
        dU2 = full.full_jvp_extra_U(U1, s_inv, Vh1, dA, U[..., :, k:])
        dU = jnp.concatenate([dU, dU2], axis=-1)
    elif full_matrices and n > m:
        dVh2 = full.full_jvp_extra_Vh(U1, s_inv, Vh1, dA, Vh[..., k:, :])
        dVh = jnp.concatenate([dVh, dVh2], axis=-2)
    out = ((U, s, Vh), (dU, dS, dVh))
    if with_info:
        return out + (_info(s, rec, eps),)
    return out


def svd_jvp(
    A,
    dA,
    *,
    full_matrices: bool = False,
    compute_uv: bool = True,
    eps: float = 0.0,
    degeneracy_tol: float | None = None,
    rank_tol: float | None = None,
    device=None,
    return_info: bool = False,
):
    """Forward-mode derivative (JVP) of A = U diag(S) Vh.

    Parameters
    ----------
    A : array (..., m, n); float32, float64, complex64 or complex128 (integers become float64).
    dA : tangent, (..., m, n), its batch dimensions broadcast with A's. An A of shape (m, n) with
        a dA of shape (T, m, n) computes one SVD and T tangents.
    full_matrices : False (thin: U is (m, k), Vh is (k, n), k = min(m, n)) or True (U is
        (m, m), Vh is (n, n)). For the extra columns the horizontal gauge U2^H dU2 = 0
        (resp. V2^H dV2 = 0) is used.
    compute_uv : False returns the singular values and their tangents only.
    eps : Lorentzian broadening; 1/(s_j^2 - s_i^2) becomes x / (x^2 + eps). 0 (default): exact.
    degeneracy_tol : pairs with |s_i - s_j| <= degeneracy_tol drop their 1/(s_j - s_i) term
        (the 1/(s_j + s_i) term stays). None: 64 * machine eps * max(S). Exact when the
        quantity being differentiated does not depend on the basis inside the degenerate block.
    rank_tol : singular values <= rank_tol are treated as zero: the terms with 1/s leave them
        out, as a pseudo-inverse does. None: max(S) * max(m, n) * machine eps (as
        numpy.linalg.matrix_rank).
    device : None or "cpu" (default), "gpu", "auto" or a jax.Device.
    return_info : also return a dict of diagnostics (device arrays; reading them synchronises):
        S, min_s, max_s, min_gap, degenerate_pairs, rank_cut, broadened.

    Returns
    -------
    ``(U, S, Vh), (dU, dS, dVh)`` or, with compute_uv=False, ``(S,), (dS,)``; with return_info a
    third element, the diagnostics dict. Primal outputs have A's batch shape, tangents the
    broadcast batch shape. dS is real.

    Conventions: complex singular vectors carry an arbitrary phase per singular pair; the
    gauge is JAX's, with Im diag(V^H dV) = 0 and the whole phase term i Im diag(U^H dA V) / S in
    dU, so the thin JVP equals jax.jvp of jnp.linalg.svd. Real inputs use the same formulas.
    Equal singular values: the default degeneracy_tol keeps the result finite; the difference
    term inside a degenerate block is dropped. Zero singular values: see rank_tol.
    """
    _check_tols(eps, degeneracy_tol, rank_tol)
    dev = resolve_device(device)
    A = _as_array(A, "A")
    dA = _as_array(dA, "dA")
    _check_matrix_shape(A, dA, "dA", A.shape[-2:])
    dtype = jnp.result_type(A.dtype, dA.dtype)
    A, dA = _place(A, dtype, dev), _place(dA, dtype, dev)
    return _jvp(
        A,
        dA,
        float(eps),
        _tol(degeneracy_tol),
        _tol(rank_tol),
        full_matrices=bool(full_matrices),
        compute_uv=bool(compute_uv),
        with_info=bool(return_info),
    )


# --------------------------------------------------------------------------------------------
# reverse mode


@partial(jax.jit, static_argnames=("full_matrices", "compute_uv", "convention", "with_info"))
def _vjp(
    A,
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
):
    m, n = A.shape[-2:]
    k = min(m, n)
    dtype = A.dtype
    cplx = jnp.issubdtype(dtype, jnp.complexfloating)

    # JAX's cotangents pair without conjugation: Re sum(g * d). The rules below use the
    # Hermitian pairing Re sum(conj(G) * d), so G = conj(g) on the way in and out. PyTorch's
    # convention is the Hermitian one already.
    def inward(g):
        if g is None:
            return None
        g = g.astype(dtype) if g.dtype != dtype else g
        return jnp.conj(g) if (cplx and convention == "jax") else g

    GU, GVh = inward(gU), inward(gVh)
    gS_real = None if gS is None else jnp.real(gS)

    if not compute_uv:
        U, s, Vh = jnp.linalg.svd(A, full_matrices=False)
        GA = values.values_vjp(U, Vh, gS_real, dtype)
        gauge = None
        M_U = M_V = None
        rec = reciprocals(s, m, n, eps, degeneracy_tol, rank_tol) if with_info else None
    else:
        U, s, Vh = jnp.linalg.svd(A, full_matrices=full_matrices)
        rec = reciprocals(s, m, n, eps, degeneracy_tol, rank_tol)
        U1, Vh1 = U[..., :, :k], Vh[..., :k, :]
        GU1 = GU[..., :, :k] if GU is not None else None
        GVh1 = GVh[..., :k, :] if GVh is not None else None
        GA, M_U, M_V = thin.thin_vjp(U1, s, Vh1, GU1, gS_real, GVh1, rec, dtype)
        s_inv = rec.s_inv.astype(dtype)
        gauge = None
        if full_matrices and m > n and GU is not None:
            GU2, U2 = GU[..., :, k:], U[..., :, k:]
            GA = GA + full.full_vjp_extra_U(U1, s_inv, Vh1, GU2, U2)
            if with_info:
                gauge = full.skew_relative(_H(U2) @ GU2)
        elif full_matrices and n > m and GVh is not None:
            GVh2, Vh2 = GVh[..., k:, :], Vh[..., k:, :]
            GA = GA + full.full_vjp_extra_Vh(U1, s_inv, Vh1, GVh2, Vh2)
            if with_info:
                gauge = full.skew_relative(GVh2 @ _H(Vh2))

    if cplx and convention == "jax":
        GA = jnp.conj(GA)
    if not with_info:
        return GA
    info = _info(s, rec, eps)
    g_abs, g_rel = _gauge(M_U, M_V, rec, None if gauge is None else gauge[0])
    if gauge is not None:  # the extra columns, relative to the size of their own projection
        g_rel = jnp.maximum(g_rel, gauge[1])
    info["gauge_residual"] = g_abs
    info["gauge_relative"] = g_rel
    return GA, info


def svd_vjp(
    A,
    gU=None,
    gS=None,
    gVh=None,
    *,
    full_matrices: bool = False,
    compute_uv: bool = True,
    convention: str = "jax",
    eps: float = 0.0,
    degeneracy_tol: float | None = None,
    rank_tol: float | None = None,
    device=None,
    return_info: bool = False,
):
    """Reverse-mode derivative (VJP) of A = U diag(S) Vh: the cotangent gA of A.

    Parameters
    ----------
    A : array (..., m, n).
    gU, gS, gVh : cotangents of U (..., m, k or m), S (..., k) and Vh (..., k or n, n); None
        means zero, at least one is required. With compute_uv=False only gS is accepted. Their
        batch dimensions broadcast with A's.
    convention : "jax" (default): the cotangents pair with the outputs without conjugation, as in
        jax.vjp, so that Re sum(gA * dA) = Re sum(gU * dU) + sum(gS * dS) + Re sum(gVh * dVh)
        for the (dU, dS, dVh) that svd_jvp returns for dA. "torch": the pairing conjugates, as
        PyTorch's autograd does: torch_vjp(c) = conj(jax_vjp(conj(c))).
    full_matrices, compute_uv, eps, degeneracy_tol, rank_tol, device : as in svd_jvp.
    return_info : also return the diagnostics of svd_jvp plus gauge_residual and
        gauge_relative: the size of the part of the cotangent that depends on the arbitrary
        phase of complex singular vectors (Im diag(U^H GU + Vh GVh^H)), on the basis inside a
        degenerate block, or on the extra columns of a full SVD. A loss that is a function of A
        alone has gauge_relative at rounding level; a larger value means the result depends on
        an arbitrary choice made by the SVD routine.

    Returns
    -------
    gA with the broadcast batch shape and A's dtype (or the cotangents' common dtype), or
    ``(gA, info)`` with return_info.

    The VJP is the exact transpose of svd_jvp, gauge convention included. For complex inputs the
    phase term U diag(i Im diag(U^H GU) / S) V^H is included; it gives the gradient of a
    gauge-invariant loss, and for a gauge-dependent one the transpose of JAX's gauge choice.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, not {convention!r}")
    _check_tols(eps, degeneracy_tol, rank_tol)
    if gU is None and gS is None and gVh is None:
        raise ValueError("svd_vjp needs at least one of gU, gS, gVh")
    if not compute_uv and (gU is not None or gVh is not None):
        raise ValueError("with compute_uv=False only gS is accepted (U and Vh are not outputs)")
    dev = resolve_device(device)
    A = _as_array(A, "A")
    m, n = A.shape[-2:]
    k = min(m, n)
    ku, kv = (m, n) if full_matrices else (k, k)
    cots = {}
    for name, g, shape in (("gU", gU, (m, ku)), ("gS", gS, (k,)), ("gVh", gVh, (kv, n))):
        if g is not None:
            g = _as_array(g, name)
            _check_matrix_shape(A, g, name, shape)
            cots[name] = g
    dtype = jnp.result_type(A.dtype, *[g.dtype for g in cots.values()])
    A = _place(A, dtype, dev)
    cots = {name: _place(g, g.dtype, dev) for name, g in cots.items()}
    return _vjp(
        A,
        cots.get("gU"),
        cots.get("gS"),
        cots.get("gVh"),
        float(eps),
        _tol(degeneracy_tol),
        _tol(rank_tol),
        full_matrices=bool(full_matrices),
        compute_uv=bool(compute_uv),
        convention=convention,
        with_info=bool(return_info),
    )


__all__ = ["svd_jvp", "svd_vjp", "resolve_device", "default_tolerances", "CONVENTIONS"]
