"""svdgrad_cli.svd (and svd_jvp, svd_vjp) under JAX's transformations.

jit, vmap, grad, jacfwd, jacrev, hessian, linearize and their compositions, in the eight cases
(thin/full x real/complex x compute_uv), at tall, wide and square shapes, in single and double
precision. References: jnp.linalg.svd where JAX differentiates the case (thin, square full, S
only), central finite differences in float64 of gauge-invariant losses elsewhere (full with
m != n). Single precision is compared with the double-precision reference at the same matrix.
Every tolerance comes from helpers.TOL.

Complex inputs are differentiated through a real parametrisation x = (Re A, Im A), so that
jacfwd, jacrev and hessian apply as they are; jax.grad with respect to a complex A itself is
checked against finite differences of the real and imaginary parts (JAX's convention: grad =
dL/dRe A - i dL/dIm A).

Second order at equal singular values: svd's rule is linear in the tangent, so Hessians of
spectral losses whose gradient is U f(S) Vh with f' != 0 on a degenerate block (sum of squares,
log det) are not exact there; only their finiteness is required. The nuclear norm's (gradient
U Vh) is exact and is checked.
"""

from __future__ import annotations

import subprocess
import sys
from functools import cache, partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, fd_grad, randn, random_matrix

from svdgrad_cli import svd, svd_jvp, svd_vjp

SHAPES = {"tall": (5, 3), "wide": (3, 5), "square": (4, 4)}
DOUBLE = {False: np.float64, True: np.complex128}
SINGLE = {False: np.float32, True: np.complex64}


def _H(x):
    return jnp.conj(jnp.swapaxes(x, -1, -2))


def _real_dtype(dtype):
    return np.finfo(np.dtype(dtype)).dtype


def _case_id(full, cplx, uv):
    return f"{'full' if full else 'thin'}-{'complex' if cplx else 'real'}-{'usv' if uv else 's'}"


CASES = [
    (full, cplx, uv) for full in (False, True) for cplx in (False, True) for uv in (True, False)
]


def _jax_supports(full, uv, m, n):
    """Whether jnp.linalg.svd has a derivative for the case (it raises for full with m != n)."""
    return not (full and uv and m != n)


# --------------------------------------------------------------------------------------------
# gauge-invariant losses and their real parametrisation


def _consts(seed, m, n, dtype):
    """Fixed coefficients of the loss, in the dtype the loss runs in (strict promotion)."""
    rng = np.random.default_rng(seed)
    k = min(m, n)
    rdt = _real_dtype(dtype)
    return {
        "C": randn(rng, (m, n), dtype),  # pairs with U f(S) Vh
        "X": randn(rng, (m, 2), dtype),  # |U1^H X|^2, |U2^H X|^2
        "Y": randn(rng, (2, n), dtype),  # |Y V1|^2, |Y V2|^2
        "CU": randn(rng, (m, m), dtype),  # pairs with U U^H (full: the identity)
        "CV": randn(rng, (n, n), dtype),  # pairs with V V^H
        "w": rng.uniform(0.5, 1.5, k).astype(rdt),
    }


def _loss_of(out, c, full, uv):
    """A real loss of the outputs that is a function of A alone: invariant under the phase of
    each singular pair, and (full) under rotations of the extra columns U2 -> U2 Q."""
    if not uv:
        S = out
        return jnp.sum(c["w"] * S**2) + jnp.sum(jnp.sin(S))
    U, S, Vh = out
    k = S.shape[-1]
    U1, Vh1 = U[:, :k], Vh[:k, :]
    fS = (S + S**3 / 10).astype(U.dtype)
    L = jnp.sum(jnp.real(c["C"] * ((U1 * fS[None, :]) @ Vh1)))
    L = L + jnp.sum(jnp.abs(_H(U1) @ c["X"]) ** 2) + jnp.sum(jnp.abs(c["Y"] @ _H(Vh1)) ** 2)
    L = L + jnp.sum(c["w"] * jnp.sin(S))
    if full:
        U2, Vh2 = U[:, k:], Vh[k:, :]
        L = L + jnp.sum(jnp.abs(_H(U2) @ c["X"]) ** 2) + jnp.sum(jnp.abs(c["Y"] @ _H(Vh2)) ** 2)
        L = (
            L
            + jnp.sum(jnp.real(c["CU"] * (U @ _H(U))))
            + jnp.sum(jnp.real(c["CV"] * (_H(Vh) @ Vh)))
        )
    return L


def _to_matrix(x, cplx):
    return jax.lax.complex(x[0], x[1]) if cplx else x


def _to_real(A):
    A = np.asarray(A)
    return np.stack([A.real, A.imag]) if np.iscomplexobj(A) else A


def _loss(case, m, n, dtype, svd_fn=svd, seed=1):
    """The real-parametrised loss F(x) of a case, through svd_fn (svd or jnp.linalg.svd)."""
    full, cplx, uv = case
    c = _consts(seed, m, n, dtype)

    def F(x):
        out = svd_fn(_to_matrix(x, cplx), full_matrices=full, compute_uv=uv)
        return _loss_of(out, c, full, uv)

    return F


def _point(shape, dtype, seed=0):
    """x (real parametrisation) of a matrix with separated singular values 1 .. 2 + k. Its
    entries are rounded to single precision whatever dtype is, so that the single-precision
    matrix and its double-precision copy are the same matrix."""
    cplx = np.issubdtype(np.dtype(dtype), np.complexfloating)
    A = random_matrix(np.random.default_rng(seed), shape, DOUBLE[cplx])
    return _to_real(A.astype(SINGLE[cplx]).astype(dtype))


SVD_FNS = {"svd": svd, "jnp": jnp.linalg.svd}


@cache
def _jitted(case, shape, dtype, svd_name="svd", grad=True):
    """jit(grad(F)) (or jit(F)) of a case's loss through svd or jnp.linalg.svd, compiled once
    for the module (compilation is most of the module's time)."""
    F = _loss(case, *SHAPES[shape], dtype, SVD_FNS[svd_name])
    return jax.jit(jax.grad(F) if grad else F)


@cache
def _ref_grad(case, shape, seed=0):
    """The float64 reference gradient of a case's loss at _point(shape, seed): JAX's own where
    JAX differentiates the case, else central finite differences."""
    full, cplx, uv = case
    dt = np.dtype(DOUBLE[cplx])
    x = _point(SHAPES[shape], dt, seed)
    if _jax_supports(full, uv, *SHAPES[shape]):
        return np.asarray(_jitted(case, shape, dt, "jnp")(x))
    return fd_grad(_jitted(case, shape, dt, grad=False), x)


# --------------------------------------------------------------------------------------------
# jit(grad) in the eight cases at tall, wide and square shapes, in double and single precision


def _grad_params():
    out = []
    for case in CASES:
        full, cplx, uv = case
        if uv:  # square full is square thin under another name: tall and wide for full
            shapes = ["tall", "wide"] + ([] if full else ["square"])
            single = "wide" if cplx else "tall"
        else:  # full_matrices does not matter for the values; one shape each
            shapes = [
                {(0, 0): "tall", (0, 1): "wide", (1, 0): "square", (1, 1): "tall"}[full, cplx]
            ]
            single = shapes[0]
        out += [pytest.param(case, sh, "f64", id=f"{_case_id(*case)}-{sh}-f64") for sh in shapes]
        out.append(pytest.param(case, single, "f32", id=f"{_case_id(*case)}-{single}-f32"))
    return out


@pytest.mark.parametrize("case, shape, prec", _grad_params())
def test_jit_grad_matches_reference(case, shape, prec):
    full, cplx, uv = case
    m, n = SHAPES[shape]
    dtype = (DOUBLE if prec == "f64" else SINGLE)[cplx]
    x = _point((m, n), dtype)
    g = _jitted(case, shape, np.dtype(dtype))(x)
    assert g.dtype == x.dtype
    # float64 against finite differences where JAX has no derivative; float32 against the
    # float64 reference at the same matrix
    kind = "fd" if prec == "f64" and not _jax_supports(full, uv, m, n) else "ref"
    assert_close(g, _ref_grad(case, shape), dtype, kind, what="jit(grad)")


# --------------------------------------------------------------------------------------------
# forward mode (jvp, linearize, jacfwd) against reverse mode (grad, jacrev); second order


def _fd_jacobian(f, x, h=1e-6):
    """Central-difference Jacobian (out..., in...) of an array function of a real array."""
    x = np.asarray(x, np.float64)
    cols = []
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[idx] = h
        cols.append((np.asarray(f(x + e)) - np.asarray(f(x - e))) / (2 * h))
    out = np.stack(cols, axis=-1)
    return out.reshape(out.shape[:-1] + x.shape)


@pytest.mark.parametrize(
    "case, shape",
    [
        pytest.param((False, False, True), "tall", id="thin-real-usv-tall"),
        pytest.param((True, True, True), "wide", id="full-complex-usv-wide"),
    ],
)
def test_forward_modes_jacobians_and_hessian(case, shape):
    full, cplx, uv = case
    m, n = SHAPES[shape]
    dt = np.dtype(DOUBLE[cplx])
    x = _point((m, n), dt)
    v = np.random.default_rng(5).standard_normal(x.shape)
    F = _loss(case, m, n, dt)

    def G(x):  # two outputs, for the Jacobians
        y = F(x)
        return jnp.stack([y, jnp.sin(y)])

    def first_order(x, v):
        y, t = jax.jvp(F, (x,), (v,))
        return y, t, jax.linearize(F, x)[1](v), jax.jacfwd(G)(x), jax.jacrev(G)(x)

    y, t_jvp, t_lin, jf, jr = jax.jit(first_order)(x, v)
    g = _ref_grad(case, shape)
    kind = "ref" if _jax_supports(full, uv, m, n) else "fd"
    assert jf.shape == jr.shape == (2,) + x.shape
    assert_close(jf, np.stack([g, np.cos(float(y)) * g]), dt, kind, what="jacfwd")
    assert_close(jr, jf, dt, "exact", what="jacrev against jacfwd")
    expected = float(np.sum(np.asarray(jr[0]) * v))
    scale = float(np.sum(np.abs(np.asarray(jr[0]) * v)))
    assert_close(t_jvp, expected, dt, "exact", scale=scale, what="jvp against grad")
    assert_close(t_lin, expected, dt, "exact", scale=scale, what="linearize against grad")

    # second order: jacfwd of jacrev (what jax.hessian is) against finite differences of the
    # reference gradient (JAX's where it has one, else ours, checked above against FD)
    h = np.asarray(jax.jit(jax.jacfwd(jax.jacrev(F)))(x))
    ref_grad = _jitted(case, shape, dt, "jnp" if kind == "ref" else "svd")
    assert_close(h, _fd_jacobian(ref_grad, x), dt, "fd", what="jacfwd(jacrev)")
    hm = h.reshape(x.size, x.size)
    assert_close(hm, hm.T, dt, "exact", what="symmetry of the Hessian")


@pytest.mark.parametrize("cplx", [pytest.param(False, id="real"), pytest.param(True, id="complex")])
def test_hessian(cplx):
    """jax.hessian of the singular values' loss (thin, square) against JAX's own."""
    case, shape = (False, cplx, False), "square"
    dt = np.dtype(DOUBLE[cplx])
    x = _point(SHAPES[shape], dt)
    h = jax.jit(jax.hessian(_loss(case, *SHAPES[shape], dt)))(x)
    ref = jax.jit(jax.hessian(_loss(case, *SHAPES[shape], dt, jnp.linalg.svd)))(x)
    assert_close(h, ref, dt, "ref")


# --------------------------------------------------------------------------------------------
# vmap and its compositions; a stack given to svd itself


@pytest.mark.parametrize(
    "case, prec",
    [
        pytest.param((False, False, True), "f64", id="thin-real-usv-f64"),
        pytest.param((True, True, True), "f32", id="full-complex-usv-f32"),
        pytest.param((False, True, False), "f64", id="thin-complex-s-f64"),
    ],
)
def test_vmap_compositions(case, prec):
    full, cplx, uv = case
    shape = "wide" if cplx else "tall"
    m, n = SHAPES[shape]
    dtype = np.dtype((DOUBLE if prec == "f64" else SINGLE)[cplx])
    kind = "exact" if prec == "f64" else "ref"
    xs = np.stack([_point((m, n), dtype, seed=s) for s in range(3)])
    F = _loss(case, m, n, dtype)
    c = _consts(1, m, n, dtype)

    def F_stack(xs):  # svd of a stack: batch dimensions in the input, no vmap
        out = svd(jax.vmap(partial(_to_matrix, cplx=cplx))(xs), full_matrices=full, compute_uv=uv)
        return jnp.sum(jax.vmap(lambda o: _loss_of(o, c, full, uv))(out))

    def batched(xs):
        return (
            jax.vmap(jax.grad(F))(xs),  # vmap of grad
            jax.grad(lambda xs: jnp.sum(jax.vmap(F)(xs)))(xs),  # grad of vmap
            jax.grad(F_stack)(xs),
        )

    # jit of grad, one item at a time
    want = np.stack([np.asarray(_jitted(case, shape, dtype)(x)) for x in xs])
    for got, what in zip(jax.jit(batched)(xs), ["vmap(grad)", "grad(vmap)", "stack"], strict=True):
        assert_close(got, want, dtype, kind, what=what)


# --------------------------------------------------------------------------------------------
# traced tolerances


def _with_values(s, m, n, dtype, seed=21):
    """Q diag(s) W^H with random unitary Q (m x m), W (n x n), in dtype."""
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(randn(rng, (m, m), dtype))[0]
    W = np.linalg.qr(randn(rng, (n, n), dtype))[0]
    S = np.zeros((m, n))
    S[np.arange(len(s)), np.arange(len(s))] = s
    return (Q @ S @ np.conj(W.T)).astype(dtype)


def test_traced_tolerances_equal_concrete():
    """Singular values 3, 2.9, 1, 0.04: a close pair for degeneracy_tol, a small value for
    rank_tol; the tolerances as jit arguments give what the same numbers give as constants."""
    cplx = False
    dt = np.float64
    x = _to_real(_with_values([3.0, 2.9, 1.0, 0.04], 5, 4, dt))
    c = _consts(1, 5, 4, dt)

    def grad_with(x, eps, degeneracy_tol, rank_tol):
        def F(x):
            U, S, Vh = svd(
                _to_matrix(x, cplx),
                False,
                eps=eps,
                degeneracy_tol=degeneracy_tol,
                rank_tol=rank_tol,
            )
            return _loss_of((U, S, Vh), c, False, True)

        return jax.grad(F)(x)

    traced = jax.jit(grad_with)
    default = jax.jit(partial(grad_with, eps=0.0, degeneracy_tol=None, rank_tol=None))(x)
    # a negative traced value means the default
    assert_close(traced(x, 0.0, -1.0, -1.0), default, dt, "exact", what="traced defaults")
    tols = dict(eps=1e-3, degeneracy_tol=0.2, rank_tol=0.05)
    concrete = jax.jit(partial(grad_with, **tols))(x)
    assert_close(traced(x, *tols.values()), concrete, dt, "exact", what="traced tolerances")
    # the tolerances reach the rule
    assert np.max(np.abs(concrete - default)) > 1e-3 * np.max(np.abs(default))
    # a batch of tolerances under vmap
    eps = np.array([0.0, 1e-3])
    vm = jax.jit(jax.vmap(grad_with, in_axes=(None, 0, None, None)))(x, eps, 0.2, 0.05)
    assert_close(vm[1], concrete, dt, "exact", what="vmap over eps")
    assert_close(vm[0], traced(x, 0.0, 0.2, 0.05), dt, "exact", what="vmap over eps")


# --------------------------------------------------------------------------------------------
# jax.grad of complex A against finite differences of the real and imaginary parts


@pytest.mark.parametrize(
    "full, shape",
    [pytest.param(False, "tall", id="thin-tall"), pytest.param(True, "wide", id="full-wide")],
)
def test_complex_grad_matches_finite_differences(full, shape):
    """JAX's convention for a real loss of complex A: grad = dL/dRe A - i dL/dIm A."""
    m, n = SHAPES[shape]
    A = random_matrix(np.random.default_rng(7), (m, n), np.complex128)
    c = _consts(1, m, n, np.complex128)

    def L(A):
        return _loss_of(svd(A, full_matrices=full), c, full, True)

    g = np.asarray(jax.jit(jax.grad(L))(A))
    Lj = jax.jit(L)
    fd_re = fd_grad(lambda X: Lj(X + 1j * A.imag), A.real)
    fd_im = fd_grad(lambda Y: Lj(A.real + 1j * Y), A.imag)
    assert_close(g, fd_re - 1j * fd_im, np.complex128, "fd")


# --------------------------------------------------------------------------------------------
# Hessian-vector products of spectral losses


def _spectral(name):
    def f(A):
        S = svd(A, compute_uv=False)
        return jnp.sum({"nuclear": S, "sum_squares": S**2, "log_det": jnp.log(S)}[name])

    return f


# jax.jvp of jax.grad; one compilation per loss for the whole module (all at 4 x 4 float64)
HVP = {
    name: jax.jit(lambda A, V, f=_spectral(name): jax.jvp(jax.grad(f), (A,), (V,))[1])
    for name in ("nuclear", "sum_squares", "log_det")
}


def _np_grad(name, A):
    """Gradients from NumPy alone: U Vh (the polar factor), 2 A, A^-T."""
    if name == "nuclear":
        U, _, Vh = np.linalg.svd(A)
        return U @ Vh
    if name == "sum_squares":
        return 2 * A
    return np.linalg.inv(A).T


def _fd_hvp(name, A, V, h=1e-6):
    return (_np_grad(name, A + h * V) - _np_grad(name, A - h * V)) / (2 * h)


SIMPLE = [4.0, 3.0, 2.0, 1.0]
DEGENERATE = [3.0, 2.0, 2.0, 1.0]


def _hvp_point(s):
    A = _with_values(s, 4, 4, np.float64)
    V = np.random.default_rng(4).standard_normal(A.shape)
    return A, V


@pytest.mark.parametrize(
    "name, s",
    [
        pytest.param("nuclear", SIMPLE, id="nuclear-simple"),
        pytest.param("sum_squares", SIMPLE, id="sum_squares-simple"),
        pytest.param("log_det", SIMPLE, id="log_det-simple"),
        pytest.param("nuclear", DEGENERATE, id="nuclear-degenerate"),
    ],
)
def test_hvp_of_spectral_losses(name, s):
    A, V = _hvp_point(s)
    got = HVP[name](A, V)
    assert_close(got, _fd_hvp(name, A, V), np.float64, "fd", what=name)
    if name == "sum_squares":
        assert_close(got, 2 * V, np.float64, "exact", what="2 V")


@pytest.mark.parametrize("name", ["sum_squares", "log_det"])
def test_hvp_at_a_degenerate_spectrum_is_finite(name):
    """A rule linear in the tangent cannot be exact for these at exactly equal values (svd's
    docstring says so): what it gives is only required to be finite here."""
    A, V = _hvp_point(DEGENERATE)
    assert np.all(np.isfinite(np.asarray(HVP[name](A, V))))


@pytest.mark.parametrize("c", [pytest.param(1e-150, id="1e-150"), pytest.param(1e150, id="1e150")])
def test_hvp_at_extreme_scales(c):
    A, V = _hvp_point(SIMPLE)
    # the gradient U Vh of the nuclear norm is scale-invariant: HVP(c A) = HVP(A) / c
    assert_close(HVP["nuclear"](c * A, V), _fd_hvp("nuclear", A, V) / c, np.float64, "fd")
    assert_close(HVP["sum_squares"](c * A, V), 2 * V, np.float64, "exact")


# --------------------------------------------------------------------------------------------
# no NaN from the derivative of a derivative


def _tangent_size(A, dA, full, svd_fn):
    _, (dU, dS, dVh) = jax.jvp(lambda A: tuple(svd_fn(A, full_matrices=full)), (A,), (dA,))
    return jnp.sum(jnp.abs(dU) ** 2) + jnp.sum(dS**2) + jnp.sum(jnp.abs(dVh) ** 2)


GRAD_OF_JVP = jax.jit(
    jax.grad(partial(_tangent_size, svd_fn=partial(svd, eps=0.0))), static_argnames="full"
)


@pytest.mark.parametrize("spectrum", ["separated", "degenerate"])
@pytest.mark.parametrize("full", [pytest.param(False, id="thin"), pytest.param(True, id="full")])
@pytest.mark.parametrize("cplx", [pytest.param(False, id="real"), pytest.param(True, id="complex")])
def test_grad_of_a_jvp_is_finite(cplx, full, spectrum):
    dt = DOUBLE[cplx]
    A = _with_values([3.0, 2.0, 1.0] if spectrum == "separated" else [2.0, 2.0, 1.0], 5, 3, dt)
    dA = randn(np.random.default_rng(9), A.shape, dt)
    g = np.asarray(GRAD_OF_JVP(A, dA, full=full))
    assert np.all(np.isfinite(g))
    if spectrum == "separated" and not full and not cplx:
        # the same second derivative as through JAX's own rule
        ref = jax.jit(jax.grad(partial(_tangent_size, full=False, svd_fn=jnp.linalg.svd)))(A, dA)
        assert_close(g, ref, dt, "ref")


# --------------------------------------------------------------------------------------------
# svd_jvp and svd_vjp under jit, vmap and grad


def test_svd_jvp_under_jit():
    rng = np.random.default_rng(13)
    A, dA = random_matrix(rng, (5, 3), np.float64), randn(rng, (5, 3), np.float64)
    eager = svd_jvp(A, dA)
    primals, tangents, info = jax.jit(lambda A, dA: svd_jvp(A, dA, return_info=True))(A, dA)
    for a, b in zip(jax.tree.leaves((primals, tangents)), jax.tree.leaves(eager), strict=True):
        assert_close(a, b, np.float64, "exact", what="jit(svd_jvp)")
    assert not bool(info.basis_selected)  # separated values: nothing to select


def test_svd_vjp_under_vmap():
    """svd_vjp of gS alone is conj(U diag(gS) Vh) in JAX's convention."""
    rng = np.random.default_rng(14)
    As = random_matrix(rng, (4, 5, 3), np.complex128)
    gS = rng.standard_normal(3)
    gA = jax.vmap(lambda A: svd_vjp(A, gS=gS))(As)
    U, _, Vh = np.linalg.svd(As, full_matrices=False)
    assert_close(gA, np.conj((U * gS) @ Vh), np.complex128, "exact")


def test_grad_through_svd_jvp():
    """d/dA sum(dS), dS = Re diag(U^H dA V) from svd_jvp, against the same through JAX's rule."""
    dt = np.complex128
    rng = np.random.default_rng(15)
    A, dA = random_matrix(rng, (5, 3), dt), randn(rng, (5, 3), dt)
    g = jax.jit(jax.grad(lambda A: jnp.sum(svd_jvp(A, dA)[1][1])))(A)

    def ref(A):
        return jnp.sum(jax.jvp(lambda A: jnp.linalg.svd(A, compute_uv=False), (A,), (dA,))[1])

    assert_close(g, jax.jit(jax.grad(ref))(A), dt, "ref")


# --------------------------------------------------------------------------------------------
# importing the package leaves JAX's settings alone


def test_import_leaves_x64_off():
    code = (
        "import svdgrad_cli; from svdgrad_cli import svd; import jax; "
        "assert not jax.config.jax_enable_x64, 'importing svdgrad_cli turned x64 on'"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
