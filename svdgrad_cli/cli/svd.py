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

"""
EPILOG += (
    "Writes U, S, Vh (S alone with --values-only), as jax.numpy.linalg.svd computes them: the "
    "factors that 'svdgrad vjp --factors' takes, with the signs and phases your cotangents pair"
    " with."
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
) -> None:
    """The singular value decomposition A = U diag(S) Vh.

    Thin by default (U is m x k, Vh is k x n, k = min(m, n)); --full for U m x m and Vh n x n.
    """
    names = ["S"] if values_only else ["U", "S", "Vh"]
    c.check_output_args(output, only, names)

    def prepare(arrays: dict) -> dict:
        return {k: c.as_complex(v) for k, v in arrays.items()} if complex_ else arrays

    def compute(arrays: dict):
        import jax

        from ..api import svd as _svd

        A = arrays["A"]
        if dev is not None:
            A = jax.device_put(A, dev)
        out = _svd(A, full_matrices=full, compute_uv=not values_only)
        return dict(zip(names, out if not values_only else (out,), strict=True)), {}

    plan = _stream.open_plan(output, chunk, {"A": (a, False)})
    if plan is not None:
        with plan:
            dev = c.resolve_device(device)
            _stream.run(
                plan,
                chunk=chunk,
                output=output,
                only=only,
                inputs=[a],
                prepare=prepare,
                compute=compute,
                on_info=lambda info: None,
                label="svd",
                complex_work=complex_,
            )
        return
    arrays = prepare(c.read_inputs([("A", a, False)]))
    dev = c.resolve_device(device)
    results, _ = compute(arrays)
    results = c.to_numpy(results)  # waits for the device: all computing is done here
    c.deliver(results, output, only, inputs=[a])
