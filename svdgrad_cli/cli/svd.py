"""svdgrad svd: the factorisation itself, for the factors a loss is computed from."""

from __future__ import annotations

from typing import Annotated

import typer

from . import _common as c
from . import _stream
from .jvp import A_ARG

EPILOG = """\
[bold]Example[/bold]

  $ svdgrad svd A.npy -o f.npz

  $ svdgrad vjp A.npy --factors f.npz --gU gU.npy --gS gS.npy -o grad.npz

  $ svdgrad svd A.npy --rank 3 -o f3.npz

  $ svdgrad vjp A.npy --rank 3 --factors f3.npz --gU gU3.npy -o grad3.npz

"""
EPILOG += (
    "Writes U, S, Vh (S alone with --values-only), as jax.numpy.linalg.svd computes them: the "
    "factors that 'svdgrad vjp --factors' takes, with the signs and phases your cotangents pair"
    " with. With --rank R: the top R triplets and err, the truncation error."
)

ValuesOnlyOpt = Annotated[
    bool, typer.Option("--values-only", help="Singular values only: S (no U, no Vh).")
]


@c.guarded
def svd(
    a: A_ARG,
    full: c.FullOpt = False,
    values_only: ValuesOnlyOpt = False,
    complex_: c.ComplexOpt = False,
    device: c.DeviceOpt = c.Device.cpu,
    output: c.OutputOpt = None,
    only: c.OnlyOpt = None,
    chunk: c.ChunkOpt = None,
    rank: c.RankOpt = None,
    solver: c.SolverOpt = None,
    workers: c.WorkersOpt = None,
    scheduler: c.SchedulerOpt = None,
) -> None:
    """The singular value decomposition A = U diag(S) Vh.

    Thin by default (U is m x k, Vh is k x n, k = min(m, n)); --full for U m x m and Vh n x n.
    --rank R: the top R triplets and the truncation error err = ||A - U S Vh||_F.
    """
    solver_name = c.truncation_args(rank, solver, full)
    names = ["S"] if values_only else ["U", "S", "Vh"]
    if rank is not None:
        names.append("err")
    c.check_output_args(output, only, names)

    def prepare(arrays: dict) -> dict:
        return {k: c.as_complex(v) for k, v in arrays.items()} if complex_ else arrays

    def check(p) -> None:
        if rank is not None:
            c.check_rank(rank, p.A.shape)

    def compute(arrays: dict, dev):
        import jax

        from ..api import svd as _svd

        A = arrays["A"]
        if rank is not None:
            return truncated(A, dev)
        if dev is not None:
            A = jax.device_put(A, dev)
        out = _svd(A, full_matrices=full, compute_uv=not values_only)
        return dict(zip(names, out if not values_only else (out,), strict=True)), {}

    def truncated(A, dev):
        """The top R triplets and err; the Diagnostics of the cut come from svd_jvp along a
        zero tangent (truncated_svd returns none), which adds a solve with a zero right-hand
        side."""
        import numpy as np

        from ..api import svd_jvp

        primals, _, info = svd_jvp(
            A,
            np.zeros((1,) * (A.ndim - 2) + A.shape[-2:], A.dtype),
            rank=rank,
            solver=solver_name,
            compute_uv=not values_only,
            device=dev,
            return_info=True,
        )
        return dict(zip(names, primals, strict=True)), info._asdict()

    options: dict = dict(full_matrices=full, compute_uv=not values_only)
    if rank is not None:
        options.update(rank=rank, solver=solver_name)
    outcome = _stream.execute(
        {"A": (a, False)},
        compute,
        output=output,
        only=only,
        chunk=chunk,
        device=device,
        label="svd",
        check=check,
        prepare=prepare,
        complex_work=complex_,
        cluster=_stream.Cluster(workers, scheduler),
        job=lambda: _stream.job("svd", options, device, None, ("A",) if complex_ else ()),
    )
    if rank is not None:
        info = c.merge_truncation(outcome.infos)
        text = c.cut_text(info, rank)
        if text is not None:
            c.warn(
                f"{text}: they are written (any choice inside the pair is a top-{rank} SVD), "
                "but 'svdgrad jvp' and 'svdgrad vjp' refuse this --rank; choose another for "
                "derivatives"
            )
        c.solver_warnings(info, outcome.dtype)
