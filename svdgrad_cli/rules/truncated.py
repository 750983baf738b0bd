"""Truncated SVD: exact derivatives of the top R singular triplets, forward and reverse.

Notation: A = U S V^H + A_perp with U (m, R), S (R), V (n, R) the kept triplets and
A_perp = A - U S V^H the discarded part (A_perp V = 0, U^H A_perp = 0). Q_U = I - U U^H,
Q_V = I - V V^H, P = U^H dA V (R, R).

Forward. Differentiating A V = U S and A^H U = V S and projecting with Q_U and Q_V gives, for
X = Q_U dU and Y = Q_V dV (the parts of the tangents outside the kept frames),

    X S - A_perp Y = Q_U dA V,        Y S - A_perp^H X = Q_V dA^H U,

and, inside the frames, the thin rule on the R x R block: dS = Re diag P, U^H dU = Omega_U,
V^H dV = Omega_V (Dinv, Sinv2 over kept pairs, JAX's phase gauge). For column i the system is
(s_i - K) z = r with K = [[0, A_perp], [A_perp^H, 0]], whose eigenvalues are +-s_k (discarded) and
0: Hermitian positive definite on the complement of the frames exactly when s_R > s_{R+1}.
Without truncation (A_perp = 0) it reduces to X = Q_U dA V S^-1, the thin rule's projector
term; with it, it couples the kept vectors to the discarded spectrum, which the thin rule applied
to truncated factors misses (Francuz, Schuch and Vanhecke, "Stable and efficient differentiation
of tensor network algorithms", arXiv:2311.11894, 2023).

Closed form, from any SVD of A_perp = U_d S_d V_d^H (the discarded triplets, zero values
allowed): with alpha_ki = u_k^H r_U,i and beta_ki = v_k^H r_V,i,

    a_ki = 1/2 [(alpha + beta) / (s_i - s_k) + (alpha - beta) / (s_i + s_k)]
    b_ki = 1/2 [(alpha + beta) / (s_i - s_k) - (alpha - beta) / (s_i + s_k)]
    X_i = r_U,i / s_i + sum_k u_k (s_k / s_i) b_ki,   Y_i = r_V,i / s_i + sum_k v_k (s_k / s_i) a_ki

(the r / s_i term is the whole solution on the null space of A_perp; the sums correct it on the
discarded directions and vanish for s_k = 0, whatever basis the null space was given).

Iterative: the same system by conjugate gradients, one column per kept value, with products by
A and A^H only: for x orthogonal to U and y orthogonal to V, A_perp y = A y and
A_perp^H x = A^H x. It converges at the rate set by (s_i + s_{R+1}) / (s_i - s_{R+1}).

Reverse. The system is self-adjoint, so the transpose solves it again, with right-hand sides
Q_U gU and Q_V gV, and adds X V^H + U Y^H to the kept block's U G_P V^H (MatrixAlgebraKit.jl's
svd_trunc_pullback! solves the same equations).

Truncation error: err = ||A_perp||_F, d err = Re <A_perp, dA> / err, g_A += g_err A_perp / err.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from ._common import _H, Reciprocals, _Hdot, is_complex

#: the top-triplet iteration stops, short of tol, where its residual stalls below
#: STALL_SLACK * tol (rounding)
STALL_SLACK = 1e3
#: an iterative loop has converged when its final relative residual is finite and at most
#: max(tol, ROUNDING_LIMIT * machine eps), however it stopped
ROUNDING_LIMIT = 1e4


def converged(residual, tol):
    """Whether a final relative residual meets tol or, for a tol below what rounding allows,
    ROUNDING_LIMIT machine eps."""
    limit = jnp.maximum(tol, ROUNDING_LIMIT * jnp.finfo(residual.dtype).eps)
    return jnp.all(jnp.isfinite(residual)) & jnp.all(residual <= limit)


def _cplx_i(x, dtype):
    """i * x for real x, as dtype (complex); strict dtype promotion has no real * 1j."""
    return lax.complex(jnp.zeros_like(x), x).astype(dtype)


def kept_omegas(P, rec: Reciprocals):
    """(Omega_U, Omega_V): U^H dU and V^H dV on the kept block (thin rule, JAX's gauge)."""
    dtype = P.dtype
    PH = _H(P)
    Sym, Skew = (P + PH) / 2, (P - PH) / 2
    Dinv, Sinv2 = rec.Dinv.astype(dtype), rec.Sinv2.astype(dtype)
    Omega_U = Dinv * Sym + Sinv2 * Skew
    Omega_V = Dinv * Sym - Sinv2 * Skew
    if is_complex(P):
        d = _cplx_i(jnp.imag(jnp.diagonal(P, axis1=-2, axis2=-1)) * rec.s_inv, dtype)
        eye = jnp.broadcast_to(jnp.eye(P.shape[-1], dtype=dtype), P.shape)
        Omega_U = Omega_U + d[..., :, None] * eye
    return Omega_U, Omega_V


def kept_cotangent(M_U, M_V, gS, rec: Reciprocals, dtype):
    """G_P (R, R): the kept block's share of U^H GA V (transpose of kept_omegas and dS)."""
    G = None
    Dinv, Sinv2 = rec.Dinv.astype(dtype), rec.Sinv2.astype(dtype)
    if M_U is not None:
        K_U = M_U - _H(M_U)
        G = 0.5 * (Dinv + Sinv2) * K_U
        if jnp.issubdtype(dtype, jnp.complexfloating):
            d = _cplx_i(jnp.imag(jnp.diagonal(M_U, axis1=-2, axis2=-1)) * rec.s_inv, dtype)
            eye = jnp.broadcast_to(jnp.eye(M_U.shape[-1], dtype=dtype), M_U.shape)
            G = G + d[..., :, None] * eye
    if M_V is not None:
        K_V = M_V - _H(M_V)
        term = 0.5 * (Dinv - Sinv2) * K_V
        G = term if G is None else G + term
    if gS is not None:
        diag = gS.astype(dtype)[..., :, None] * jnp.broadcast_to(
            jnp.eye(gS.shape[-1], dtype=dtype), gS.shape + gS.shape[-1:]
        )
        G = diag if G is None else G + diag
    return G


# --------------------------------------------------------------------------- the coupled system


def solve_closed_form(s, rU, rV, Ud, sd, Vd, deg_tol=None):
    """(X, Y) solving X S - A_perp Y = rU, Y S - A_perp^H X = rV, with A_perp = Ud sd Vd^H.

    rU (m, R) orthogonal to the kept U, rV (n, R) orthogonal to the kept V; s (R,) kept values,
    all greater than every sd. Divisions by s_i - s_k and s_i + s_k only (never their product).
    deg_tol (...,): pairs with s_i - s_k <= deg_tol (a cut inside a degenerate pair, where no
    derivative exists) drop their 1/(s_i - s_k) term, so that the result stays finite; the
    caller reports the cut.
    """
    dtype = rU.dtype
    alpha = _Hdot(Ud, rU)  # (kd, R)
    beta = _Hdot(Vd, rV)
    si = s[..., None, :]
    sk = sd[..., :, None]
    diff = si - sk
    if deg_tol is not None:
        cut = diff <= deg_tol[..., None, None]
        diff = jnp.where(cut, 1, diff)
    plus = (alpha + beta) / diff.astype(dtype)
    if deg_tol is not None:
        plus = jnp.where(cut, 0, plus)
    minus = (alpha - beta) / (si + sk).astype(dtype)
    a = (plus + minus) / 2
    b = (plus - minus) / 2
    ratio = (sk / si).astype(dtype)
    s_inv = (1 / s).astype(dtype)[..., None, :]
    X = rU * s_inv + Ud @ (ratio * b)
    Y = rV * s_inv + Vd @ (ratio * a)
    return X, Y


def solve_cg(op, s, rU, rV, U, V, *, tol, maxiter):
    """(X, Y, iterations, relative residual, converged) by conjugate gradients, one column per
    kept value.

    op: coupled_operator (products by A and A^H only). Each column i solves the Hermitian
    positive definite (s_i - K) z = r on the complement of the kept frames; the iterates are
    projected back onto it at every step, so rounding cannot drift into the frames. The part of
    r in the frames (op multiplies it by s_i there) is solved exactly.
    converged (see :func:`converged`) judges the true relative residual of what is returned:
    False when the loop stopped at maxiter short of tol, stalled above it (rounding at a tiny
    gap), or diverged (a singular system: a cut inside a degenerate pair).
    """
    dtype = rU.dtype
    rdt = jnp.finfo(dtype).dtype
    S = s.astype(dtype)[..., None, :]

    def proj(Z, F):
        return Z - F @ _Hdot(F, Z)

    def dot(ax, ay, bx, by):  # column-wise <a, b>, real (the operator is Hermitian)
        return jnp.real(jnp.sum(jnp.conj(ax) * bx, axis=-2) + jnp.sum(jnp.conj(ay) * by, axis=-2))

    bnorm = jnp.sqrt(dot(rU, rV, rU, rV))
    bnorm_safe = jnp.where(bnorm > 0, bnorm, 1)
    # the operator maps the frames to themselves, column i times s_i: that part of the solution
    # is exact; the iteration solves the rest, on the complement (a reverse-mode cotangent may
    # have both)
    cU, cV = proj(rU, U), proj(rV, V)
    fx, fy = (rU - cU) * (1 / S), (rV - cV) * (1 / S)
    x0, y0 = cU * (1 / S), cV * (1 / S)  # the solution when A_perp = 0
    ox, oy = op((x0, y0))
    # residuals, like iterates, stay on the complement: a rounding component in the frames is
    # out of reach of the iteration, and left in it would stall rr while p shrinks (alpha =
    # rr / <p, A p> then blows up once a column reaches rounding level)
    rx, ry = proj(cU - ox, U), proj(cV - oy, V)
    rr = dot(rx, ry, rx, ry)

    def running(rr):
        return jnp.sqrt(rr) > tol * bnorm_safe

    def cond(state):
        it, _, _, _, _, _, _, rr = state
        # a singular system (a cut inside a degenerate pair) diverges: stop before overflow
        return (it < maxiter) & jnp.any(running(rr)) & jnp.all(jnp.isfinite(rr))

    def body(state):
        it, x, y, rx, ry, px, py, rr = state
        active = running(rr)  # converged columns stay as they are
        qx, qy = op((px, py))
        pq = dot(px, py, qx, qy)
        ok = active & (pq > 0)
        alpha = jnp.where(ok, rr / jnp.where(ok, pq, 1), 0).astype(dtype)
        x, y = x + alpha[..., None, :] * px, y + alpha[..., None, :] * py
        rx = proj(rx - alpha[..., None, :] * qx, U)
        ry = proj(ry - alpha[..., None, :] * qy, V)
        rr_new = dot(rx, ry, rx, ry)
        ok = active & (rr > 0)
        beta = jnp.where(ok, rr_new / jnp.where(ok, rr, 1), 0).astype(dtype)
        px = jnp.where(active[..., None, :], rx + beta[..., None, :] * px, px)
        py = jnp.where(active[..., None, :], ry + beta[..., None, :] * py, py)
        return it + 1, proj(x, U), proj(y, V), rx, ry, proj(px, U), proj(py, V), rr_new

    state = (jnp.zeros((), jnp.int32), x0, y0, rx, ry, rx, ry, rr)
    it, x, y, rx, ry, _, _, rr = lax.while_loop(cond, body, state)
    finite = jnp.all(jnp.isfinite(rr)) & jnp.all(jnp.isfinite(x)) & jnp.all(jnp.isfinite(y))
    x = jnp.where(jnp.isfinite(x), x, 0) + fx
    y = jnp.where(jnp.isfinite(y), y, 0) + fy
    # the true residual of what is returned
    ox, oy = op((x, y))
    res = jnp.sqrt(dot(rU - ox, rV - oy, rU - ox, rV - oy)) / bnorm_safe
    res = jnp.max(res, initial=jnp.zeros((), rdt)).astype(rdt)
    return x, y, it, res, finite & converged(res, tol)


def coupled_operator(s, matvec, rmatvec, U, V):
    """z = (x, y) -> (x S - Q_U A y, y S - Q_V A^H x): the system's operator (on the complement
    of the kept frames, where it equals (s_i - K) z column by column)."""
    S = s[..., None, :]

    def proj(Z, F):
        return Z - F @ _Hdot(F, Z)

    def op(z):
        x, y = z
        return x * S.astype(x.dtype) - proj(matvec(y), U), y * S.astype(y.dtype) - proj(
            rmatvec(x), V
        )

    return op


def linear_solve(op, rU, rV, solve, has_aux=False):
    """The coupled solve as jax.lax.custom_linear_solve, so that JAX can transpose it (reverse
    mode) and differentiate it again (second order) by implicit differentiation.

    op: the operator (coupled_operator); solve(rU, rV) -> (X, Y), or ((X, Y), aux) with
    has_aux. The operator is self-adjoint, so its transpose is the same solve.
    """

    def solver(_, b):
        return solve(*b)

    return lax.custom_linear_solve(op, (rU, rV), solver, symmetric=True, has_aux=has_aux)


# --------------------------------------------------------------------------- top R triplets


def top_triplets(matvec, rmatvec, Omega, R, *, tol, maxiter, scale=None):
    """The top R singular triplets by subspace iteration with Rayleigh-Ritz, to full precision.

    matvec(V) = A V, rmatvec(Q) = A^H Q on blocks; Omega (..., n, l) a random start, l > R where
    possible (the oversampling). Each step: W = A^H Q, the SVD of the small B = W^H = Q^H A gives
    Ritz triplets (Q Ub, sb, Vb), then Y = A Vb gives their residuals A v_i - s_i u_i and the next
    orthonormal basis Q = qr(Y). It stops when every kept residual is at most tol * s_1, when
    the residual stops shrinking within 1000 tol (rounding), or after maxiter steps.

    The residuals are relative to s_1, the largest Ritz value, or to scale (...,) where that is
    larger.

    Returns (U (m, R), s (R,), Vh (R, n), next_value, iterations, relative residual,
    converged), next_value the Ritz estimate of s_{R+1} (0 when l == R); converged (see
    :func:`converged`) is False when the loop stopped above tol and ROUNDING_LIMIT eps.
    """
    Q, _ = jnp.linalg.qr(matvec(Omega))
    dtype = Q.dtype
    rdt = jnp.finfo(dtype).dtype
    l = Q.shape[-1]

    def ritz(Q):
        W = rmatvec(Q)  # (n, l) = B^H
        Ub, sb, Vbh = jnp.linalg.svd(_H(W), full_matrices=False)
        V = _H(Vbh)
        Y = matvec(V)
        U = Q @ Ub
        res = jnp.sqrt(jnp.sum(jnp.abs(Y - U * sb[..., None, :].astype(dtype)) ** 2, axis=-2))
        top = sb[..., :1] if scale is None else jnp.maximum(sb[..., :1], scale[..., None])
        top = jnp.where(top > 0, top, 1)
        rel = jnp.max(res[..., :R] / top, initial=jnp.zeros((), rdt))
        return U, sb, V, Y, rel

    U, sb, V, Y, rel = ritz(Q)
    inf = jnp.asarray(jnp.inf, rdt)

    def cond(state):
        it, _, _, _, _, rel, prev = state
        # near rounding level a residual that no longer shrinks is as good as it gets
        return (it < maxiter) & (rel > tol) & ((rel < 0.9 * prev) | (rel > STALL_SLACK * tol))

    def body(state):
        it, U, sb, V, Y, rel, _ = state
        Q, _ = jnp.linalg.qr(Y)
        U2, sb2, V2, Y2, rel2 = ritz(Q)
        return it + 1, U2, sb2, V2, Y2, rel2, rel

    state = (jnp.ones((), jnp.int32), U, sb, V, Y, rel, inf)
    it, U, sb, V, _, rel, _ = lax.while_loop(cond, body, state)
    nxt = sb[..., R] if l > R else jnp.zeros(sb.shape[:-1], rdt)
    return U[..., :R], sb[..., :R], _H(V[..., :R]), nxt, it, rel, converged(rel, tol)


def next_value(matvec, rmatvec, U, V, Omega, scale, *, tol, maxiter):
    """s_{R+1} of A from its top R singular vectors U (m, R), V (n, R): the largest singular
    value of A_perp = (I - U U^H) A (I - V V^H), by the subspace iteration of
    :func:`top_triplets` on A_perp's products (from products by A and A^H; A_perp is never
    formed), started from Omega (..., n, p).

    The iteration approaches s_{R+1} from below (a Ritz value never exceeds it), so an estimate
    is only as good as its residual: the loop stops when the leading Ritz pair (u, s, v) has
    ||A_perp v - s u|| <= tol * scale (A_perp^H u = s v holds by construction; scale is s_1 of
    A, and a residual r puts a singular value of A_perp within r s_1 of s), when the residual
    stalls at rounding level, or after maxiter steps.

    Returns (s_{R+1} (...,), iterations, relative residual, converged), converged (see
    :func:`converged`) False when the residual stayed above tol and ROUNDING_LIMIT eps.
    """

    def proj(Z, F):
        return Z - F @ _Hdot(F, Z)

    def perp(X):
        return proj(matvec(proj(X, V)), U)

    def rperp(Y):
        return proj(rmatvec(proj(Y, U)), V)

    _, sb, _, _, it, rel, ok = top_triplets(
        perp, rperp, Omega, 1, tol=tol, maxiter=maxiter, scale=scale
    )
    return sb[..., 0], it, rel, ok


# --------------------------------------------------------------------------- the error


def truncation_error(s_discarded):
    """||A_perp||_F from the discarded singular values, scaled so it never over- or underflows."""
    top = jnp.max(s_discarded, axis=-1, initial=0.0)
    safe = jnp.where(top > 0, top, 1)
    return top * jnp.sqrt(jnp.sum((s_discarded / safe[..., None]) ** 2, axis=-1))


__all__ = [
    "kept_omegas",
    "kept_cotangent",
    "solve_closed_form",
    "solve_cg",
    "linear_solve",
    "coupled_operator",
    "top_triplets",
    "next_value",
    "truncation_error",
]
