"""svdgrad jvp: forward mode."""

from __future__ import annotations

from typing import Annotated

import numpy as np
import typer

from . import _common as c
from . import _stream

EPILOG = """\
[bold]Example[/bold]

  $ svdgrad jvp A.npy dA.npy -o out.npz

  $ svdgrad jvp data.h5:/A - --values-only --only dS -o dS.npy < dA.npy

  $ svdgrad jvp A.npy dA.npy --rank 3 --solver iterative -o out.npz

Writes U, S, Vh, dU, dS, dVh (S and dS with --values-only); with --rank R the top R triplets,
err, their tangents and derr.
"""

A_ARG = Annotated[
    str,
    typer.Argument(
        metavar="A",
        show_default=False,
        help="The matrix (..., m, n): PATH.npy, PATH.npz:NAME, PATH.h5:/DATASET or -.",
    ),
]
DA_ARG = Annotated[
    str,
    typer.Argument(
        metavar="DA",
        show_default=False,
        help="The tangent (..., m, n), batch broadcast with A's; same forms as A.",
    ),
]


@c.guarded
def jvp(
    a: A_ARG,
    da: DA_ARG,
    full: c.FullOpt = False,
    values_only: c.ValuesOnlyOpt = False,
    complex_: c.ComplexOpt = False,
    device: c.DeviceOpt = c.Device.cpu,
    output: c.OutputOpt = None,
    only: c.OnlyOpt = None,
    eps: c.EpsOpt = 0.0,
    degeneracy_tol: c.DegTolOpt = None,
    rank_tol: c.RankTolOpt = None,
    chunk: c.ChunkOpt = None,
    rank: c.RankOpt = None,
    solver: c.SolverOpt = None,
) -> None:
    """Forward mode: the derivative of A = U diag(S) Vh along the tangent DA.

    Where DA splits a block of equal singular values, U and Vh come in the basis DA selects
    inside the block and dS holds the block's eigenvalues (degenerate perturbation theory), with
    a warning. --rank R: the top R triplets and the truncation error err, with their tangents
    (dU, dS, dVh, derr); a cut inside a degenerate pair (s_R = s_R+1) exits 1.
    """
    solver_name = c.truncation_args(rank, solver, full)
    primal_names = ["S"] if values_only else ["U", "S", "Vh"]
    if rank is not None:
        primal_names.append("err")
    names = primal_names + ["d" + name for name in primal_names]
    c.check_output_args(output, only, names)
    numerics = c.Numerics(eps, degeneracy_tol, rank_tol)
    kwargs = dict(full_matrices=full, compute_uv=not values_only, return_info=True)
    if rank is not None:
        kwargs.update(rank=rank, solver=solver_name)

    def on_info(info) -> None:
        if rank is not None:
            c.cut_check(info, rank)

    def report(info, dtype) -> None:
        if rank is not None:
            c.solver_warnings(info, dtype)

    def compute(arrays):
        from ..api import svd_jvp

        primals, tangents, info = svd_jvp(
            arrays["A"], arrays["DA"], device=dev, **kwargs, **numerics.kwargs()
        )
        return dict(zip(names, (*primals, *tangents), strict=True)), info._asdict()

    plan = _stream.open_plan(output, chunk, {"A": (a, False), "DA": (da, False)})
    if plan is not None:
        with plan:
            c.check_trailing_shape(plan.A, plan.get("DA"), "DA", plan.A.shape[-2:], "the tangent")
            if rank is not None:
                c.check_rank(rank, plan.A.shape)
            dev = c.resolve_device(device)
            infos = _stream.run(
                plan,
                chunk=chunk,
                output=output,
                only=only,
                inputs=[a, da],
                prepare=lambda x: {k: c.as_complex(v) for k, v in x.items()} if complex_ else x,
                compute=compute,
                on_info=on_info,
                label="jvp",
                complex_work=complex_,
            )
        merged = _stream.merge_infos(infos)
        c.tolerance_warnings(merged, numerics)
        degenerate_warning(merged, plan.A.dtype, plan.A.shape, values_only)
        report(c.merge_truncation(infos), plan.A.dtype)
        return
    arrays = c.read_inputs([("A", a, False), ("DA", da, False)])
    A, dA = arrays["A"], arrays["DA"]
    if complex_:
        A, dA = c.as_complex(A), c.as_complex(dA)
    c.check_trailing_shape(A, dA, "DA", A.shape[-2:], "the tangent")
    if rank is not None:
        c.check_rank(rank, A.shape)
    dev = c.resolve_device(device)
    results, info = compute({"A": A, "DA": dA})
    results = c.to_numpy(results)  # waits for the device: all computing is done here
    on_info(info)
    c.tolerance_warnings(info, numerics)
    degenerate_warning(info, results["S"].dtype, A.shape, values_only)
    report(info, results["S"].dtype)
    c.deliver(results, output, only, inputs=[a, da])


def degenerate_warning(info, dtype, shape, values_only: bool) -> None:
    """Warn when the tangent splits a block of equal singular values by more than rounding."""
    split = c.max_of(info, "degenerate_split")
    m, n = shape[-2:]
    if not split > 100 * max(m, n) * np.finfo(np.dtype(dtype)).eps:
        return
    what = f"the tangent splits a block of equal singular values (relative {split:.1e})"
    if bool(np.any(np.asarray(info.get("basis_selected", False)))):
        returned = (
            ""
            if values_only
            else (
                "U and Vh are returned in the basis the tangent selects inside the block "
                "(degenerate perturbation theory), and "
            )
        )
        c.warn(
            f"{what}: {returned}dS there holds the eigenvalues of the Hermitian part of the "
            "block of U^H dA V, in descending order"
        )
    else:
        c.warn(
            f"{what}, but the tangents share one SVD of A, so the basis inside the block cannot "
            "follow each tangent: dS there is the diagonal of U^H dA V in the SVD's own basis; "
            "repeat A along the batch of DA to select a basis per tangent"
        )
