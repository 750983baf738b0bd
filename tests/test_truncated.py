"""Truncated SVD (rank=R): both solvers against independent references.

References: central finite differences (float64) of gauge-invariant functions of A computed with
numpy's full SVD (the projectors U U^H and V V^H onto the top R singular subspaces, the best
rank-R approximation U S Vh, S and the truncation error), the adjoint identity between the two
modes, and the naive thin rule applied to truncated factors, which must disagree.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svdgrad_cli import svd, svd_jvp, svd_vjp, truncated_svd

FD_RTOL = 1e-7  # central differences, h = 1e-6: truncation ~h^2, rounding ~1e-16/h
EXACT = 1e-12
SOLVERS = ["dense", "iterative"]


def _randn(rng, shape, cplx=False):
    x = rng.standard_normal(shape)
    return x + 1j * rng.standard_normal(shape) if cplx else x


def _H(x):
    return np.conj(np.swapaxes(x, -1, -2))


def _with_values(rng, values, m, n, cplx=False):
    def orth(k):
        return np.linalg.qr(_randn(rng, (k, k), cplx))[0]

    S = np.zeros((m, n))
    S[np.arange(len(values)), np.arange(len(values))] = values
    return orth(m) @ S @ _H(orth(n))


def _invariants(X, R):
    u, s, vh = np.linalg.svd(X, full_matrices=False)
    U, V = u[..., :, :R], _H(vh[..., :R, :])
    return {
        "UU": U @ _H(U),
        "VV": V @ _H(V),
        "A_R": (U * s[..., None, :R]) @ _H(V),
        "S": s[..., :R],
        "err": np.sqrt(np.sum(s[..., R:] ** 2, axis=-1)),
    }


def _fd(X, dX, R, h=1e-6):
    plus, minus = _invariants(X + h * dX, R), _invariants(X - h * dX, R)
    return {k: (plus[k] - minus[k]) / (2 * h) for k in plus}


def _ours(U, S, Vh, dU, dS, dVh, derr):
    U, S, Vh, dU, dS, dVh = map(np.asarray, (U, S, Vh, dU, dS, dVh))
    dUU = dU @ _H(U) + U @ _H(dU)
    dVV = _H(dVh) @ Vh + _H(Vh) @ dVh
    s = S[..., None, :]
    dAR = (dU * s) @ Vh + (U * dS[..., None, :]) @ Vh + (U * s) @ dVh
    return {"UU": dUU, "VV": dVV, "A_R": dAR, "S": dS, "err": np.asarray(derr)}


def _rel(x, ref):
    return float(np.max(np.abs(np.asarray(x) - ref)) / max(np.max(np.abs(ref)), 1e-12))


SHAPES = [
    pytest.param((9, 6), 3, id="tall"),
    pytest.param((6, 9), 2, id="wide"),
    pytest.param((7, 7), 4, id="square"),
    pytest.param((2, 8, 5), 2, id="batched"),
]


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("cplx", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("shape, R", SHAPES)
def test_jvp_matches_finite_differences_and_vjp_is_its_adjoint(shape, R, cplx, solver):
    rng = np.random.default_rng(sum(shape) + 7 * R + cplx)
    A, dA = _randn(rng, shape, cplx), _randn(rng, shape, cplx)
    (U, S, Vh, err), (dU, dS, dVh, derr), info = svd_jvp(
        A, dA, rank=R, solver=solver, return_info=True
    )
    assert U.shape == shape[:-1] + (R,) and Vh.shape == shape[:-2] + (R, shape[-1])
    assert _rel(err, _invariants(A, R)["err"]) < EXACT
    ours, ref = _ours(U, S, Vh, dU, dS, dVh, derr), _fd(A, dA, R)
    for key in ref:
        assert _rel(ours[key], ref[key]) < FD_RTOL, key
    assert not bool(info.cut_degenerate) and float(info.cut_gap) > 0.01

    gU, gVh = _randn(rng, U.shape, cplx), _randn(rng, Vh.shape, cplx)
    gS, gerr = rng.standard_normal(S.shape), rng.standard_normal(err.shape)
    gA = np.asarray(svd_vjp(A, gU, gS, gVh, rank=R, solver=solver, gerr=gerr))
    lhs = np.real(np.sum(gA * dA))
    rhs = np.real(np.sum(gU * np.asarray(dU))) + np.sum(gS * np.asarray(dS))
    rhs += np.real(np.sum(gVh * np.asarray(dVh))) + np.sum(gerr * np.asarray(derr))
    assert abs(lhs - rhs) < EXACT * (abs(lhs) + 1)


def test_solvers_agree_and_jax_jvp_of_truncated_svd_is_the_same_rule():
    rng = np.random.default_rng(1)
    A, dA = _randn(rng, (20, 12)), _randn(rng, (20, 12))
    dense = svd_jvp(A, dA, rank=4, solver="dense")
    it = svd_jvp(A, dA, rank=4, solver="iterative")
    # the triplets' signs may differ between solvers: compare gauge-invariant products
    for out in (dense, it):
        (U, S, Vh, err), (dU, dS, dVh, derr) = out
        assert _rel(_ours(U, S, Vh, dU, dS, dVh, derr)["A_R"], _fd(A, dA, 4)["A_R"]) < FD_RTOL
    p, t = jax.jvp(lambda a: truncated_svd(a, 4, solver="dense"), (A,), (dA,))
    assert _rel(t.err, dense[1][3]) < EXACT and _rel(t.S, dense[1][1]) < EXACT


@pytest.mark.parametrize("solver", SOLVERS)
def test_degenerate_discarded_values_are_fine(solver):
    """diag(5, 4, 3, 1, 1, 1) rotated, R = 3: the top subspace is smooth although the
    discarded values are equal (where slicing JAX's thin JVP gives NaN)."""
    rng = np.random.default_rng(2)
    A = _with_values(rng, [5.0, 4.0, 3.0, 1.0, 1.0, 1.0], 8, 6)
    dA = _randn(rng, (8, 6))
    (U, S, Vh, err), (dU, dS, dVh, derr) = svd_jvp(A, dA, rank=3, solver=solver)
    ours, ref = _ours(U, S, Vh, dU, dS, dVh, derr), _fd(A, dA, 3)
    for key in ref:
        assert np.all(np.isfinite(ours[key]))
        assert _rel(ours[key], ref[key]) < FD_RTOL, key


@pytest.mark.parametrize("solver", SOLVERS)
def test_a_cut_inside_a_degenerate_pair_is_reported(solver):
    rng = np.random.default_rng(3)
    A = _with_values(rng, [5.0, 4.0, 3.0, 3.0, 1.0], 7, 5)
    out = svd_jvp(A, _randn(rng, (7, 5)), rank=3, solver=solver, return_info=True)
    info = out[2]
    assert bool(info.cut_degenerate)
    assert abs(float(info.cut_gap)) < 1e-6
    for leaf in jax.tree.leaves(out[:2]):
        assert np.all(np.isfinite(np.asarray(leaf)))
    _, info = svd_vjp(A, gS=np.ones(3), rank=3, solver=solver, return_info=True)
    assert bool(info.cut_degenerate)


@pytest.mark.parametrize("solver", SOLVERS)
def test_grad_under_jit_matches_finite_differences_and_the_naive_rule_does_not(solver):
    """A projector loss on a 9 x 6 matrix, R = 3 (the coupling to the discarded values is what
    the thin rule applied to truncated factors misses)."""
    rng = np.random.default_rng(4)
    A = _randn(rng, (9, 6))
    B = _randn(rng, (9, 9))
    B = B + B.T

    def loss(a):
        U = svd(a, full_matrices=False, rank=3, solver=solver).U
        return jnp.sum(B * (U @ U.T))

    def loss_np(X):
        U = np.linalg.svd(X)[0][:, :3]
        return np.sum(B * (U @ U.T))

    g = np.asarray(jax.jit(jax.grad(loss))(A))
    dA = _randn(rng, (9, 6))
    ref = (loss_np(A + 1e-6 * dA) - loss_np(A - 1e-6 * dA)) / 2e-6
    assert abs(np.sum(g * dA) - ref) < FD_RTOL * max(1.0, abs(ref))
    # the naive rule: the thin rule on the truncated factors (as if A_perp were zero)
    U, S, Vh = np.linalg.svd(A, full_matrices=False)
    A_R = (U[:, :3] * S[:3]) @ Vh[:3]
    gU = 2 * B @ U[:, :3]
    naive = np.asarray(svd_vjp(A_R, gU, rank=3, factors=(U[:, :3], S[:3], Vh[:3])))
    assert abs(np.sum(naive * dA) - ref) > 1e-2 * abs(ref)


def test_second_order_through_the_truncated_rule():
    """The Hessian-vector product of the truncation error squared: err^2 = ||A||^2 - sum_R s_i^2,
    so its gradient is 2 A_perp and the HVP is 2 (dA - d(U S Vh)): compared with FD."""
    rng = np.random.default_rng(5)
    A, V = _randn(rng, (8, 6)), _randn(rng, (8, 6))

    def f(a):
        return truncated_svd(a, 2, solver="dense").err ** 2

    grad = jax.grad(f)
    hvp = np.asarray(jax.jvp(grad, (A,), (V,))[1])
    fd = (np.asarray(grad(A + 1e-6 * V)) - np.asarray(grad(A - 1e-6 * V))) / 2e-6
    assert _rel(hvp, fd) < 1e-6
    assert _rel(np.asarray(grad(A)), 2 * (A - _invariants(A, 2)["A_R"])) < EXACT


def test_bad_ranks_and_options():
    A = np.ones((4, 3))
    for bad in (0, 4, -1, 2.5, True):
        with pytest.raises(ValueError, match="rank must"):
            svd(A, full_matrices=False, rank=bad)
    with pytest.raises(ValueError, match="full_matrices=False"):
        svd(A, rank=2)
    with pytest.raises(ValueError, match="solver must be one of"):
        svd(A, full_matrices=False, rank=2, solver="magic")
    with pytest.raises(ValueError, match="gerr"):
        svd_vjp(A, gS=np.ones(3), gerr=1.0)


def test_iterative_never_forms_a_large_square_matrix():
    """A 200000 x 40 matrix, R = 4: XLA's accounting of the compiled JVP and VJP stays far below
    one m x m matrix (320 GB) and below a few copies of A (64 MB each)."""
    A = jax.ShapeDtypeStruct((200000, 40), jnp.float64)
    gS = jax.ShapeDtypeStruct((4,), jnp.float64)
    for f, args in (
        (lambda a: svd_jvp(a, a, rank=4, solver="iterative"), (A,)),
        (lambda a, g: svd_vjp(a, gS=g, gerr=1.0, rank=4, solver="iterative"), (A, gS)),
    ):
        mem = jax.jit(f).lower(*args).compile().memory_analysis()
        total = mem.temp_size_in_bytes + mem.output_size_in_bytes + mem.argument_size_in_bytes
        assert total < 8 * 200000 * 40 * 8, total


@pytest.mark.parametrize("cplx", [False, True], ids=["real", "complex"])
def test_a_matrix_known_only_by_its_products(cplx):
    """A LinearOperator (two product functions): the same derivatives as the dense solver, and
    a gradient returned as a low-rank factorisation (never an m x n array)."""
    from svdgrad_cli import LinearOperator, operator_jvp, operator_vjp

    rng = np.random.default_rng(6)
    A = jnp.asarray(_randn(rng, (30, 20), cplx))
    dA = _randn(rng, (30, 20), cplx)
    op = LinearOperator(lambda X: A @ X, lambda Y: A.conj().T @ Y, (30, 20), A.dtype)
    (U, S, Vh), (dU, dS, dVh), info = operator_jvp(op, dA, 4)
    ref = _fd(np.asarray(A), dA, 4)
    ours = _ours(U, S, Vh, dU, dS, dVh, 0.0)
    for key in ("UU", "VV", "A_R", "S"):
        assert _rel(ours[key], ref[key]) < FD_RTOL, key
    assert float(info["solver_residual"]) < 1e-12 and not bool(info["cut_degenerate"])
    gU, gS = _randn(rng, (30, 4), cplx), rng.standard_normal(4)
    gA, _ = operator_vjp(op, gU, gS, None, rank=4, factors=(U, S, Vh))
    assert gA.left.shape == (30, 8) and gA.right.shape == (8, 20)
    dense = svd_vjp(A, gU, gS, rank=4, solver="dense", factors=(U, S, Vh), convention="torch")
    assert _rel(gA.todense(), np.asarray(dense)) < EXACT


# --------------------------------------------------------------------------- gauge in reverse mode


def _kept_loss_cotangents(A, R, solver, loss):
    """(gU, gVh) of loss(U, S, Vh) at the top R triplets svd(..., rank=R) returns (JAX's
    pairing)."""
    U, S, Vh = svd(jnp.asarray(A), full_matrices=False, rank=R, solver=solver)
    return jax.grad(lambda u, vh: loss(u, S, vh), argnums=(0, 1))(U, Vh)


@pytest.mark.parametrize("solver", SOLVERS)
def test_vjp_reports_cotangents_that_depend_on_the_phase_of_kept_vectors(solver):
    """Complex A, R = 3: Re U[0, 0] depends on the arbitrary phase of u_1 and is flagged as the
    thin rule flags it; the projector U U^H and U S Vh are gauge-invariant and are not."""
    rng = np.random.default_rng(11)
    A = _randn(rng, (9, 6), True)
    B = _randn(rng, (9, 9), True)
    B = B + _H(B)
    C = _randn(rng, (9, 6), True)
    losses = {
        "phase": (lambda U, S, Vh: jnp.real(U[0, 0]), True),
        "projector": (lambda U, S, Vh: jnp.real(jnp.sum(jnp.conj(B) * (U @ U.conj().T))), False),
        "U S Vh": (
            lambda U, S, Vh: jnp.real(
                jnp.sum(jnp.conj(C) * ((U * S[None, :].astype(U.dtype)) @ Vh))
            ),
            False,
        ),
    }
    for name, (loss, dependent) in losses.items():
        gU, gVh = _kept_loss_cotangents(A, 3, solver, loss)
        _, info = svd_vjp(A, gU, None, gVh, rank=3, solver=solver, return_info=True)
        if dependent:
            assert float(info.gauge_relative) > 0.1, name
            assert float(info.rotation_relative) == float(info.gauge_relative), name
        else:
            assert float(info.gauge_relative) < 1e-12, name
        assert float(info.spectrum_relative) == 0 and float(info.null_space_relative) == 0
    # with rank = min(m, n) nothing is discarded: the same sizes as the thin rule's
    gU, gVh = _kept_loss_cotangents(A, 6, solver, losses["phase"][0])
    _, thin = svd_vjp(A, gU, None, gVh, full_matrices=False, return_info=True)
    _, full = svd_vjp(A, gU, None, gVh, rank=6, solver=solver, return_info=True)
    assert abs(float(thin.gauge_relative) - float(full.gauge_relative)) < 1e-12


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("cplx", [False, True], ids=["real", "complex"])
def test_vjp_reports_a_rotation_inside_a_degenerate_kept_block(solver, cplx):
    """diag(5, 3, 3, 1, 0.5) rotated, R = 3: the kept pair s_2 = s_3 has no preferred basis.
    A cotangent that sees the basis (Re U[0, 1]) is flagged; one of the projector onto the
    whole block is not; gS that splits the pair is flagged as spectrum."""
    rng = np.random.default_rng(12)
    A = _with_values(rng, [5.0, 3.0, 3.0, 1.0, 0.5], 7, 5, cplx)
    B = _randn(rng, (7, 7), cplx)
    B = B + _H(B)
    gU, _ = _kept_loss_cotangents(A, 3, solver, lambda U, S, Vh: jnp.real(U[0, 1]))
    _, info = svd_vjp(A, gU, rank=3, solver=solver, return_info=True)
    assert float(info.rotation_relative) > 0.1 and float(info.gauge_relative) > 0.1
    proj = lambda U, S, Vh: jnp.real(jnp.sum(jnp.conj(B) * (U @ U.conj().T)))  # noqa: E731
    gU, _ = _kept_loss_cotangents(A, 3, solver, proj)
    _, info = svd_vjp(A, gU, rank=3, solver=solver, return_info=True)
    assert float(info.gauge_relative) < 1e-10
    _, info = svd_vjp(A, gS=np.array([1.0, 2.0, 0.0]), rank=3, solver=solver, return_info=True)
    assert float(info.spectrum_relative) > 0.1 and float(info.rotation_relative) == 0
    _, info = svd_vjp(A, gS=np.array([1.0, 2.0, 2.0]), rank=3, solver=solver, return_info=True)
    assert float(info.gauge_relative) == 0


# --------------------------------------------------------------------------- iterative solver


def _solver_fields(info):
    return (
        bool(info.solver_converged),
        float(info.range_residual),
        float(info.solver_residual),
        int(info.range_iterations),
        int(info.solver_iterations),
    )


@pytest.mark.parametrize("cplx", [False, True], ids=["real", "complex"])
def test_iterative_solver_converges_on_a_random_matrix_and_agrees_with_dense(cplx):
    """40 x 30, R = 4 (s_4 / s_5 = 1.05): both loops reach full precision in fewer than maxiter
    steps, and the conjugate gradients do not run away once a column has converged (they did,
    to residuals of 1e95, when the residual kept its rounding component in the kept frames)."""
    rng = np.random.default_rng(21)
    A, dA = _randn(rng, (40, 30), cplx), _randn(rng, (40, 30), cplx)
    out = svd_jvp(A, dA, rank=4, solver="iterative", return_info=True)
    ok, range_res, cg_res, range_it, cg_it = _solver_fields(out[2])
    assert ok and range_res < 1e-13 and cg_res < 1e-13 and range_it < 200 and cg_it < 200
    ours, ref = _ours(*out[0][:3], *out[1]), _fd(A, dA, 4)
    for key in ref:
        assert _rel(ours[key], ref[key]) < FD_RTOL, key
    gU = _randn(rng, (40, 4), cplx)
    gA, info = svd_vjp(A, gU, np.ones(4), rank=4, solver="iterative", return_info=True)
    dense = svd_vjp(A, gU, np.ones(4), rank=4, solver="dense", factors=out[0][:3])
    it_given = svd_vjp(A, gU, np.ones(4), rank=4, solver="iterative", factors=out[0][:3])
    assert bool(info.solver_converged) and _rel(it_given, np.asarray(dense)) < 1e-10


@pytest.mark.parametrize("maxiter", [1, 3])
def test_an_iteration_limit_is_never_silent(maxiter):
    """maxiter far too small: svd_jvp and svd_vjp report solver_converged False with the
    residuals that say how far they got; truncated_svd (no diagnostics) issues a SolverWarning
    from the primal and from the derivative, under jit too. The default limit is not flagged."""
    from svdgrad_cli.truncated import SolverWarning

    rng = np.random.default_rng(22)
    A, dA = _randn(rng, (40, 30)), _randn(rng, (40, 30))
    kw = dict(rank=4, solver="iterative", return_info=True)
    info = svd_jvp(A, dA, maxiter=maxiter, **kw)[2]
    ok, range_res, cg_res, range_it, cg_it = _solver_fields(info)
    assert not ok and max(range_res, cg_res) > 1e-6 and range_it <= maxiter and cg_it <= maxiter
    _, info = svd_vjp(A, gS=np.ones(4), gVh=_randn(rng, (4, 30)), maxiter=maxiter, **kw)
    assert not bool(info.solver_converged)
    for kwargs in ({}, {"maxiter": 200}):
        assert bool(svd_jvp(A, dA, **kw, **kwargs)[2].solver_converged)
    assert bool(svd_vjp(A, gS=np.ones(4), **kw)[1].solver_converged)
    dense = svd_jvp(A, dA, rank=4, solver="dense", maxiter=1, return_info=True)[2]
    assert bool(dense.solver_converged)

    def loss(a, maxiter):
        U = truncated_svd(a, 4, solver="iterative", maxiter=maxiter).U
        return jnp.sum(U[:5] ** 2)

    grad = jax.jit(jax.grad(loss), static_argnums=1)
    with pytest.warns(SolverWarning, match="stopped short of its tolerance") as record:
        jax.block_until_ready(grad(A, maxiter))
    messages = " ".join(str(w.message) for w in record)
    assert "top-triplet iteration" in messages and "conjugate gradients" in messages
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", SolverWarning)
        jax.block_until_ready(grad(A, 200))


def test_a_tiny_gap_at_the_cut_is_flagged_by_the_iterative_solver_only():
    """s_4 - s_5 = 1e-7 s_4: the conjugate gradients stall at a residual far above tol (the
    system's condition number is 4e7), which solver_converged reports; the dense closed form
    is exact there and is not flagged."""
    rng = np.random.default_rng(23)
    values = np.r_[np.linspace(3.0, 2.0, 4), 2.0 - 2e-7, np.linspace(1.5, 0.1, 20)]
    A = _with_values(rng, values, 40, 30)
    dA = _randn(rng, (40, 30))
    info = svd_jvp(A, dA, rank=4, solver="iterative", return_info=True)[2]
    assert not bool(info.cut_degenerate) and not bool(info.solver_converged)
    assert float(info.solver_residual) > 1e-12
    info = svd_jvp(A, dA, rank=4, solver="dense", return_info=True)[2]
    assert bool(info.solver_converged)


def test_a_cut_inside_a_degenerate_pair_warns_when_differentiated():
    from svdgrad_cli.truncated import SolverWarning

    rng = np.random.default_rng(24)
    A = _with_values(rng, [5.0, 4.0, 3.0, 3.0, 1.0], 7, 5)
    with pytest.warns(SolverWarning, match="inside a degenerate pair"):
        g = jax.grad(lambda a: jnp.sum(svd(a, False, rank=3, solver="dense").S))(A)
    assert np.all(np.isfinite(np.asarray(g)))


def test_tol_and_maxiter_are_checked():
    A = np.ones((6, 4))
    for bad in (0, -3, 2.5, True, "10"):
        with pytest.raises(ValueError, match="maxiter must be a positive integer"):
            svd_jvp(A, A, rank=2, maxiter=bad)
        with pytest.raises(ValueError, match="maxiter must be a positive integer"):
            svd_vjp(A, gS=np.ones(2), rank=2, maxiter=bad)
        with pytest.raises(ValueError, match="maxiter must be a positive integer"):
            truncated_svd(A, 2, maxiter=bad)
    for bad in (0.0, -1e-8, float("nan"), float("inf"), True, "1e-8"):
        with pytest.raises(ValueError, match="tol must be a positive finite number"):
            svd_jvp(A, A, rank=2, tol=bad)
        with pytest.raises(ValueError, match="tol must be a positive finite number"):
            truncated_svd(A, 2, tol=bad)
    with pytest.raises(ValueError, match="need rank="):
        svd_jvp(A, A, maxiter=10)
    with pytest.raises(ValueError, match="need rank="):
        svd_vjp(A, gS=np.ones(4), tol=1e-8)


def test_truncated_svd_outside_jit_compiles_once():
    """A plain call reuses one compiled function per shape, rank, solver and options (it used
    to dispatch op by op and trace the iterative solver's loops anew on every call: 5x slower
    than jax.jit(truncated_svd) on a 400 x 300 matrix with R = 5); new tolerances or values of
    A do not recompile."""
    from svdgrad_cli import truncated

    compiled = truncated._truncated_jit
    if not hasattr(compiled, "_cache_size"):
        pytest.skip("this JAX does not expose the size of a jit cache")
    rng = np.random.default_rng(25)
    A = _randn(rng, (13, 11))
    first = truncated_svd(A, 3, solver="iterative")
    size = compiled._cache_size()
    again = truncated_svd(A + 1e-3, 3, solver="iterative", degeneracy_tol=1e-9)
    svd(2 * A, full_matrices=False, rank=3, solver="iterative")
    assert compiled._cache_size() == size
    assert _rel(again.err, _invariants(A + 1e-3, 3)["err"]) < EXACT
    assert _rel(first.S, _invariants(A, 3)["S"]) < EXACT


# --------------------------------------------------------------------------- the cut with factors


def _given_factors_case(cplx, R):
    """A = Q1 diag(5, 4, 3, 3, 1) Q2^H (7 x 5), its exact top R factors, a LinearOperator of it
    and cotangents (gU, gS)."""
    from svdgrad_cli import LinearOperator

    rng = np.random.default_rng(31)
    A = _with_values(rng, [5.0, 4.0, 3.0, 3.0, 1.0], 7, 5, cplx)
    u, s, vh = np.linalg.svd(A, full_matrices=False)
    Aj = jnp.asarray(A)
    op = LinearOperator(lambda X: Aj @ X, lambda Y: Aj.conj().T @ Y, A.shape, Aj.dtype)
    return A, op, (u[:, :R], s[:R], vh[:R]), _randn(rng, (7, R), cplx), rng.standard_normal(R)


@pytest.mark.parametrize("cplx", [False, True], ids=["real", "complex"])
def test_given_factors_report_a_cut_inside_a_degenerate_pair(cplx):
    """R = 3 cuts the pair s_3 = s_4 = 3: with the factors given, s_4 is not known and is
    estimated by subspace iteration on A - U S Vh (it used to be taken as 0, so the cut was never
    reported): operator_vjp and the iterative svd_vjp both report it, with a finite residual."""
    from svdgrad_cli import operator_vjp

    A, op, factors, gU, gS = _given_factors_case(cplx, 3)
    _, info = operator_vjp(op, gU, gS, rank=3, factors=factors)
    assert bool(info["cut_degenerate"]) and abs(float(info["cut_gap"])) < 1e-10
    assert float(info["range_residual"]) < 1e-12
    kw = dict(rank=3, factors=factors, solver="iterative", return_info=True)
    _, info = svd_vjp(A, gU, gS, **kw)
    assert bool(info.cut_degenerate) and abs(float(info.cut_gap)) < 1e-10
    assert float(info.range_residual) < 1e-12


@pytest.mark.parametrize("cplx", [False, True], ids=["real", "complex"])
def test_given_factors_at_a_proper_cut_give_the_gap_and_the_dense_gradient(cplx):
    """R = 2 (s_2 = 4 > s_3 = 3, the equal pair discarded): cut_gap (4 - 3) / 4 from the
    estimate of s_3, which converged; the gradients agree with the dense solver's."""
    from svdgrad_cli import operator_vjp

    A, op, factors, gU, gS = _given_factors_case(cplx, 2)
    dense = np.asarray(
        svd_vjp(A, gU, gS, rank=2, solver="dense", factors=factors, convention="torch")
    )
    gA, info = operator_vjp(op, gU, gS, rank=2, factors=factors)
    assert not bool(info["cut_degenerate"]) and bool(info["solver_converged"])
    assert abs(float(info["cut_gap"]) - 0.25) < 0.25 * 1e-8
    assert np.isfinite(float(info["range_residual"])) and float(info["range_residual"]) < 1e-12
    assert _rel(gA.todense(), dense) < 1e-10
    kw = dict(rank=2, factors=factors, solver="iterative", convention="torch", return_info=True)
    g, info = svd_vjp(A, gU, gS, **kw)
    assert not bool(info.cut_degenerate) and bool(info.solver_converged)
    assert abs(float(info.cut_gap) - 0.25) < 0.25 * 1e-8
    assert np.isfinite(float(info.range_residual)) and float(info.range_residual) < 1e-12
    assert _rel(g, dense) < 1e-10
    # the same batched (one estimate per matrix)
    rng = np.random.default_rng(32)
    B = np.stack([A, _with_values(rng, [6.0, 2.0, 1.0, 0.5, 0.1], 7, 5, cplx)])
    u, s, vh = np.linalg.svd(B, full_matrices=False)
    fb = (u[..., :2], s[..., :2], vh[..., :2, :])
    _, info = svd_vjp(B, gS=np.ones(2), rank=2, factors=fb, solver="iterative", return_info=True)
    assert bool(info.solver_converged) and abs(float(info.cut_gap) - 0.25) < 0.25 * 1e-8


def test_an_iteration_limit_on_the_estimate_of_the_next_value_is_never_silent():
    """40 x 30, R = 4, exact factors and gS alone (the conjugate gradients have nothing to
    solve): with maxiter 1 or 3 the estimate of s_5, from below, has not converged, which
    solver_converged reports with its residual (the cut_gap it gives is too large); the
    default limit converges to the true gap."""
    from svdgrad_cli import LinearOperator, operator_vjp
    from svdgrad_cli.rules.truncated import next_value

    rng = np.random.default_rng(22)
    A = _randn(rng, (40, 30))
    u, s, vh = np.linalg.svd(A, full_matrices=False)
    factors = (u[:, :4], s[:4], vh[:4])
    true_gap = (s[3] - s[4]) / s[3]
    Aj = jnp.asarray(A)
    op = LinearOperator(lambda X: Aj @ X, lambda Y: Aj.T @ Y, A.shape, Aj.dtype)
    kw = dict(rank=4, factors=factors, solver="iterative", return_info=True)
    for maxiter in (1, 3):
        _, info = svd_vjp(A, gS=np.ones(4), maxiter=maxiter, **kw)
        assert not bool(info.solver_converged) and float(info.solver_residual) == 0
        assert float(info.range_residual) > 1e-6 and int(info.range_iterations) <= maxiter
        assert float(info.cut_gap) > true_gap
        _, info = operator_vjp(op, gS=np.ones(4), rank=4, factors=factors, maxiter=maxiter)
        assert not bool(info["solver_converged"]) and float(info["range_residual"]) > 1e-6
    _, info = svd_vjp(A, gS=np.ones(4), **kw)
    assert bool(info.solver_converged) and float(info.range_residual) < 1e-12
    assert abs(float(info.cut_gap) - true_gap) < 1e-8 * true_gap
    # the internal estimate itself
    omega = jnp.asarray(_randn(rng, (30, 3)))
    U, V = jnp.asarray(u[:, :4]), jnp.asarray(vh[:4].T)
    out = next_value(op.matvec, op.rmatvec, U, V, omega, jnp.asarray(s[0]), tol=1e-14, maxiter=2)
    value, it, rel, ok = out
    assert not bool(ok) and int(it) == 2 and float(rel) > 1e-6 and float(value) < s[4]
