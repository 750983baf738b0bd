"""svdgrad vjp: reverse mode."""

from __future__ import annotations

from typing import Annotated

import numpy as np
import typer

from . import _common as c
from . import _stream
from .jvp import A_ARG

EPILOG = """\
[bold]Example[/bold]

  $ svdgrad vjp A.npy --gS gS.npy --gU gU.npy -o grad.h5:/step1

  $ svdgrad vjp A.npy --gS - --values-only --only gA -o gA.npy < gS.npy

Writes gA (the cotangent of A) and S. A missing cotangent is zero.
"""


def _cot(name: str, shape: str) -> object:
    return Annotated[
        str | None,
        typer.Option(
            f"--{name}",
            metavar="SOURCE",
            show_default=False,
            help=f"Cotangent of {name[1:]}, shape {shape}; same forms as A.",
        ),
    ]


GU_OPT = _cot("gU", "(..., m, k), or (..., m, m) with --full")
GS_OPT = _cot("gS", "(..., k)")
GVH_OPT = _cot("gVh", "(..., k, n), or (..., n, n) with --full")

GAUGE_HELP = (
    "phase of complex singular pairs, basis inside a degenerate block or the extra columns of a "
    "full SVD"
)


@c.guarded
def vjp(
    a: A_ARG,
    gu: GU_OPT = None,  # type: ignore[valid-type]
    gs: GS_OPT = None,  # type: ignore[valid-type]
    gvh: GVH_OPT = None,  # type: ignore[valid-type]
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
    """Reverse mode: the cotangent gA of A from cotangents of U, S and Vh.

    At least one of --gU, --gS, --gVh is required; with --values-only only --gS.
    """
    if values_only and (gu is not None or gvh is not None):
        given = " and ".join(n for n, v in (("--gU", gu), ("--gVh", gvh)) if v is not None)
        raise c.UsageProblem(
            f"{given}: --values-only computes S alone, so only --gS is accepted; "
            "drop --values-only or the U/Vh cotangents"
        )
    if gu is None and gs is None and gvh is None:
        raise c.UsageProblem(
            "no cotangent given; pass at least one of --gU, --gS, --gVh "
            "(a missing one counts as zero)"
        )
    names = ["gA", "S"]
    c.check_output_args(output, only, names)
    numerics = c.Numerics(eps, degeneracy_tol, rank_tol)
    cots = ("--gU", "--gS", "--gVh")

    def prepare(arrays: dict) -> dict:
        if complex_:
            arrays = dict(arrays, A=c.as_complex(arrays["A"]))
        if "--gS" in arrays and np.iscomplexobj(arrays["--gS"]):
            raise c.UsageProblem("--gS: is complex, but S is real; pass a real cotangent")
        return arrays

    def check_shapes(A, get) -> None:
        m, n = A.shape[-2:]
        k = min(m, n)
        ku, kv = (m, n) if full else (k, k)
        expected = {"--gU": (m, ku), "--gS": (k,), "--gVh": (kv, n)}
        for name in cots:
            if get(name) is not None:
                c.check_trailing_shape(A, get(name), name, expected[name], f"the {name[3:]}")

    def compute(arrays: dict):
        from ..api import svd_vjp

        gA, info = svd_vjp(
            arrays["A"],
            gU=arrays.get("--gU"),
            gS=arrays.get("--gS"),
            gVh=arrays.get("--gVh"),
            full_matrices=full,
            compute_uv=not values_only,
            convention=convention.value,
            device=dev,
            return_info=True,
            **numerics.kwargs(),
        )
        return {"gA": gA, "S": info.S}, info._asdict()

    limit = None

    def gauge_check(info) -> None:
        gauge = float(np.asarray(info.get("gauge_relative", 0.0)))
        if gauge > limit and not allow_gauge_dependence:
            raise c.ComputeProblem(
                "the cotangents make the result depend on the arbitrary gauge of the singular "
                f"vectors (relative size {gauge:.1e}): {GAUGE_HELP}. Use a gauge-invariant "
                "loss, or pass --allow-gauge-dependence to get the transpose of the JVP's "
                "gauge choice."
            )

    def gauge_warning(info) -> None:
        gauge = float(np.asarray(info.get("gauge_relative", 0.0)))
        if gauge > limit:
            c.warn(
                f"the result depends on the arbitrary gauge of the singular vectors (relative "
                f"size {gauge:.1e}); it is the transpose of the JVP's gauge choice"
            )

    sources = {"A": (a, False), "--gU": (gu, False), "--gS": (gs, True), "--gVh": (gvh, False)}
    plan = _stream.open_plan(output, chunk, sources)
    if plan is not None:
        with plan:
            check_shapes(plan.A, plan.get)
            dtype = np.result_type(plan.A.dtype, np.complex64) if complex_ else plan.A.dtype
            limit = c.gauge_tolerance(np.finfo(dtype).dtype)
            dev = c.resolve_device(device)
            infos = _stream.run(
                plan,
                chunk=chunk,
                output=output,
                only=only,
                inputs=[a, gu, gs, gvh],
                prepare=prepare,
                compute=compute,
                on_info=gauge_check,
                label="vjp",
                complex_work=complex_,
            )
        merged = _stream.merge_infos(infos)
        c.tolerance_warnings(merged, numerics)
        gauge_warning(merged)
        return

    arrays = prepare(c.read_inputs([(name, spec, vec) for name, (spec, vec) in sources.items()]))
    check_shapes(arrays["A"], arrays.get)
    dev = c.resolve_device(device)
    results, info = compute(arrays)
    results = c.to_numpy(results)  # all computing is done here
    c.tolerance_warnings(info, numerics)
    limit = c.gauge_tolerance(np.real(results["gA"]).dtype)
    gauge_check(info)
    gauge_warning(info)
    c.deliver(results, output, only, inputs=[a, gu, gs, gvh])
