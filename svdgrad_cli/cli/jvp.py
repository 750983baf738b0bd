"""svdgrad jvp: forward mode."""

from __future__ import annotations

from typing import Annotated

import typer

from . import _common as c
from . import _stream

EPILOG = """\
[bold]Example[/bold]

  $ svdgrad jvp A.npy dA.npy -o out.npz

  $ svdgrad jvp data.h5:/A - --values-only --only dS -o dS.npy < dA.npy

Writes U, S, Vh, dU, dS, dVh (S and dS with --values-only).
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
    convention: c.ConventionOpt = c.Convention.jax,
    output: c.OutputOpt = None,
    only: c.OnlyOpt = None,
    eps: c.EpsOpt = 0.0,
    degeneracy_tol: c.DegTolOpt = None,
    rank_tol: c.RankTolOpt = None,
    allow_gauge_dependence: c.AllowGaugeOpt = False,
    chunk: c.ChunkOpt = None,
) -> None:
    """Forward mode: the derivative of A = U diag(S) Vh along the tangent DA.

    Tangents carry no pairing: --convention and --allow-gauge-dependence have no effect here.
    """
    names = ["S", "dS"] if values_only else ["U", "S", "Vh", "dU", "dS", "dVh"]
    c.check_output_args(output, only, names)
    numerics = c.Numerics(eps, degeneracy_tol, rank_tol)
    kwargs = dict(full_matrices=full, compute_uv=not values_only, return_info=True)

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
            dev = c.resolve_device(device)
            infos = _stream.run(
                plan,
                chunk=chunk,
                output=output,
                only=only,
                inputs=[a, da],
                prepare=lambda x: {k: c.as_complex(v) for k, v in x.items()} if complex_ else x,
                compute=compute,
                on_info=lambda info: None,
                label="jvp",
                complex_work=complex_,
            )
        c.tolerance_warnings(_stream.merge_infos(infos), numerics)
        return
    arrays = c.read_inputs([("A", a, False), ("DA", da, False)])
    A, dA = arrays["A"], arrays["DA"]
    if complex_:
        A, dA = c.as_complex(A), c.as_complex(dA)
    c.check_trailing_shape(A, dA, "DA", A.shape[-2:], "the tangent")
    dev = c.resolve_device(device)
    results, info = compute({"A": A, "DA": dA})
    results = c.to_numpy(results)  # waits for the device: all computing is done here
    c.tolerance_warnings(info, numerics)
    c.deliver(results, output, only, inputs=[a, da])
