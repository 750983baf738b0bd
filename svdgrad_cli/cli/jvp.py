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

  $ svdgrad jvp stack.h5:/A stack.h5:/dA -o out.zarr --workers 4

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
    workers: c.WorkersOpt = None,
    scheduler: c.SchedulerOpt = None,
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

    def check(p) -> None:
        c.check_trailing_shape(p.A, p.get("DA"), "DA", p.A.shape[-2:], "the tangent")
        if rank is not None:
            c.check_rank(rank, p.A.shape)

    def prepare(arrays: dict) -> dict:
        return {k: c.as_complex(v) for k, v in arrays.items()} if complex_ else arrays

    def on_info(info) -> None:
        if rank is not None:
            c.cut_check(info, rank)

    def compute(arrays: dict, dev):
        from ..api import svd_jvp

        primals, tangents, info = svd_jvp(
            arrays["A"], arrays["DA"], device=dev, **kwargs, **numerics.kwargs()
        )
        return dict(zip(names, (*primals, *tangents), strict=True)), info._asdict()

    options = dict(full_matrices=full, compute_uv=not values_only, **numerics.kwargs())
    if rank is not None:
        options.update(rank=rank, solver=solver_name)
    outcome = _stream.execute(
        {"A": (a, False), "DA": (da, False)},
        compute,
        output=output,
        only=only,
        chunk=chunk,
        device=device,
        label="jvp",
        check=check,
        prepare=prepare,
        on_info=on_info,
        complex_work=complex_,
        cluster=_stream.Cluster(workers, scheduler),
        job=lambda: _stream.job(
            "jvp", options, device, {"dA": "DA"}, ("A", "dA") if complex_ else ()
        ),
    )
    merged = outcome.info
    c.tolerance_warnings(merged, numerics)
    degenerate_warning(merged, outcome.dtype, outcome.shape, values_only)
    if rank is not None:
        c.solver_warnings(c.merge_truncation(outcome.infos), outcome.dtype)


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
