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

  $ svdgrad svd A.npy -o f.npz

  $ svdgrad vjp A.npy --factors f.npz --gU gU.npy --gS gS.npy -o grad.npz

  $ svdgrad svd A.npy --rank 3 -o f3.npz

  $ svdgrad vjp A.npy --rank 3 --factors f3.npz --gU gU3.npy --gerr 1 -o g3.npz

"""
EPILOG += (
    "Writes gA (the cotangent of A) and S. A missing cotangent is zero. With --factors the "
    "cotangents pair with the given U, S, Vh (their signs and phases), whose shapes decide thin"
    " or full. With --rank R the cotangents are those of the top R triplets and of the "
    "truncation error (--gerr)."
)


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


GU_OPT = _cot("gU", "(..., m, k), (..., m, m) with --full, (..., m, R) with --rank R")
GS_OPT = _cot("gS", "(..., k), or (..., R) with --rank R")
GVH_OPT = _cot("gVh", "(..., k, n), (..., n, n) with --full, (..., R, n) with --rank R")
GERR_OPT = Annotated[
    str | None,
    typer.Option(
        "--gerr",
        metavar="G",
        show_default=False,
        rich_help_panel=c._TRUNC,
        help="With --rank: cotangent of the truncation error err = ||A - U S Vh||_F, one real "
        "value per matrix: a number, or a SOURCE of A's batch shape (...).",
    ),
]

FACTORS_OPT = Annotated[
    str | None,
    typer.Option(
        "--factors",
        metavar="F",
        show_default=False,
        help="The U, S, Vh the cotangents were computed from: PATH.npz or PATH.h5[:/GROUP] "
        "holding datasets U, S and Vh, as 'svdgrad svd' and 'svdgrad jvp' write them (or "
        "numpy's, torch's: any signs or phases). They must factor A; no SVD is computed. Thin "
        "or full follows their shapes; with --rank R, the top R triplets.",
    ),
]
FULL_OPT = Annotated[
    bool | None,
    typer.Option(
        "--full/--thin",
        show_default=False,
        help="Full SVD (U is m x m, Vh is n x n) or thin SVD (k = min(m, n) columns). "
        "Default: thin, or as the --factors are.",
    ),
]


@c.guarded
def vjp(
    a: A_ARG,
    gu: GU_OPT = None,  # type: ignore[valid-type]
    gs: GS_OPT = None,  # type: ignore[valid-type]
    gvh: GVH_OPT = None,  # type: ignore[valid-type]
    factors: FACTORS_OPT = None,
    full: FULL_OPT = None,
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
    rank: c.RankOpt = None,
    solver: c.SolverOpt = None,
    gerr: GERR_OPT = None,  # type: ignore[valid-type]
    workers: c.WorkersOpt = None,
    scheduler: c.SchedulerOpt = None,
) -> None:
    """Reverse mode: the cotangent gA of A from cotangents of U, S and Vh.

    At least one of --gU, --gS, --gVh is required (or --gerr with --rank); with --values-only
    only --gS (and --gerr). --rank R: the cotangents are those of the top R triplets and of the
    truncation error; a cut inside a degenerate pair (s_R = s_R+1) exits 1.
    """
    solver_name = c.truncation_args(rank, solver, full)
    if gerr is not None and rank is None:
        raise c.UsageProblem(
            "--gerr: is the cotangent of the truncation error err, which only the truncated SVD "
            "has; add --rank R (or drop --gerr)"
        )
    if values_only and (gu is not None or gvh is not None):
        given = " and ".join(n for n, v in (("--gU", gu), ("--gVh", gvh)) if v is not None)
        raise c.UsageProblem(
            f"{given}: --values-only computes S alone, so only --gS is accepted; "
            "drop --values-only or the U/Vh cotangents"
        )
    if gu is None and gs is None and gvh is None and gerr is None:
        raise c.UsageProblem(
            "no cotangent given; pass at least one of --gU, --gS, --gVh "
            + ("or --gerr " if rank is not None else "")
            + "(a missing one counts as zero)"
        )
    names = ["gA", "S"]
    c.check_output_args(output, only, names)
    numerics = c.Numerics(eps, degeneracy_tol, rank_tol)
    cots = ("--gU", "--gS", "--gVh")
    fkeys = [f"--factors {name}" for name in c.FACTOR_NAMES]
    fsources = c.factor_sources(factors) if factors is not None else {}
    state: dict = {"full": bool(full), "limit": None, "complex": False, "cast": False}

    def prepare(arrays: dict) -> dict:
        if state["cast"]:  # complex factors of a real A: compute in complex
            arrays = dict(arrays, A=c.as_complex(arrays["A"]))
        return arrays

    def check_dtypes(get) -> None:
        """Real S and gS; complex work when asked or when the factors are complex; the gauge
        limit of the least precise of the working dtype and the factors' (float32 factors of a
        float64 A are only that accurate)."""
        gS, fS = get("--gS"), get("--factors S")
        if gS is not None and np.dtype(gS.dtype).kind == "c":
            raise c.UsageProblem("--gS: is complex, but S is real; pass a real cotangent")
        if fS is not None and np.dtype(fS.dtype).kind == "c":
            raise c.UsageProblem(
                f"--factors '{factors}': S is complex, but singular values are real; pass the "
                "factors of an SVD"
            )
        fdtypes = [np.dtype(get(k).dtype) for k in fkeys if get(k) is not None]
        state["cast"] = complex_ or any(d.kind == "c" for d in fdtypes)
        work = np.result_type(
            *[np.dtype(get(k).dtype) for k in ("A", *cots) if get(k) is not None], np.float32
        )
        if state["cast"]:
            work = np.result_type(work, np.complex64)
        dtypes = [work, *fdtypes]
        state["complex"] = any(d.kind == "c" for d in dtypes)
        state["limit"] = max(c.gauge_tolerance(np.finfo(d).dtype) for d in dtypes)

    def check_rank_factor_shapes(A, U, S, Vh, label) -> None:
        """Factors of the top --rank triplets: U (..., m, R), S (..., R), Vh (..., R, n)."""
        m, n = A.shape[-2:]
        for name, X, core in (("S", S, (rank,)), ("U", U, (m, rank)), ("Vh", Vh, (rank, n))):
            if len(X.shape) < len(core) or tuple(X.shape[len(X.shape) - len(core) :]) != core:
                want = "(..., " + ", ".join(map(str, core)) + ")"
                raise c.UsageProblem(
                    f"{label}: {name} has shape {tuple(X.shape)}, but the top {rank} triplets of "
                    f"A of shape {tuple(A.shape)} need {want}; pass the factors 'svdgrad svd "
                    f"--rank {rank}' writes for this A"
                )
            c.check_trailing_shape(A, X, f"--factors {name}", core, f"the {name}")
        state["full"] = False

    def check_factor_shapes(A, get) -> None:
        """The factors' shapes against A's; sets state["full"] from them."""
        m, n = A.shape[-2:]
        k = min(m, n)
        U, S, Vh = (get(key) for key in fkeys)
        label = f"--factors '{factors}'"
        if rank is not None:
            check_rank_factor_shapes(A, U, S, Vh, label)
            return
        for name, X, rows, cols, want in (
            ("S", S, (), (k,), f"(..., {k})"),
            ("U", U, (m,), (k, m), f"(..., {m}, {k}) or (..., {m}, {m})"),
            ("Vh", Vh, (k, n), (n,), f"(..., {k}, {n}) or (..., {n}, {n})"),
        ):
            core = len(X.shape) - (2 if rows else 1)
            if core < 0 or (rows and X.shape[-2] not in rows) or X.shape[-1] not in cols:
                r = S.shape[-1] if len(S.shape) else 0
                hint = (
                    f" (or add --rank {r} for the top {r} triplets 'svdgrad svd --rank {r}' writes)"
                    if 1 <= r < k and U.shape[-1:] == (r,) and Vh.shape[-2:-1] == (r,)
                    else ""
                )
                raise c.UsageProblem(
                    f"{label}: {name} has shape {tuple(X.shape)}, but A of shape {tuple(A.shape)} "
                    f"needs {want}; pass the factors of this A{hint}"
                )
            c.check_trailing_shape(A, X, f"--factors {name}", X.shape[core:], f"the {name}")
        if m > n:
            given_full = U.shape[-1] == m
        elif n > m:
            given_full = Vh.shape[-2] == n
        else:
            given_full = bool(full)  # square: full and thin are the same
        if full is not None and bool(full) != given_full and not values_only:
            flag, kind = ("--full", "thin") if full else ("--thin", "full")
            raise c.UsageProblem(
                f"{flag}: the --factors are {kind} (U {tuple(U.shape)}, Vh {tuple(Vh.shape)}); "
                "drop --full/--thin, the factors' shapes decide"
            )
        state["full"] = given_full

    def check_shapes(A, get) -> None:
        check_dtypes(get)
        if factors is not None:
            check_factor_shapes(A, get)
        m, n = A.shape[-2:]
        if rank is not None:
            c.check_rank(rank, A.shape)
        k = min(m, n) if rank is None else rank
        ku, kv = (m, n) if state["full"] else (k, k)
        expected = {"--gU": (m, ku), "--gS": (k,), "--gVh": (kv, n)}
        for name in cots:
            if get(name) is not None:
                what = f"the {name[3:]}"
                if rank is not None:
                    what += f" of the top {rank} triplets"
                elif factors is not None and name != "--gS":
                    what += f" of the {'full' if state['full'] else 'thin'} --factors"
                c.check_trailing_shape(A, get(name), name, expected[name], what)
        if gerr_value is not None:
            try:
                np.broadcast_shapes(A.shape[:-2], gerr_value.shape)
            except ValueError:
                raise c.UsageProblem(
                    f"--gerr: has shape {gerr_value.shape}, but err has one value per matrix of "
                    f"A's batch {tuple(A.shape[:-2])}; pass an array of that shape (or a number)"
                ) from None

    def compute(arrays: dict, dev):
        from ..api import svd_vjp

        given = tuple(arrays[key] for key in fkeys) if factors is not None else None
        truncation = {}
        if rank is not None:
            truncation = dict(rank=rank, solver=solver_name, gerr=arrays.get("--gerr"))
        try:
            gA, info = svd_vjp(
                arrays["A"],
                gU=arrays.get("--gU"),
                gS=arrays.get("--gS"),
                gVh=arrays.get("--gVh"),
                factors=given,
                full_matrices=state["full"],
                compute_uv=not values_only,
                convention=convention.value,
                device=dev,
                return_info=True,
                **numerics.kwargs(),
                **truncation,
            )
        except ValueError as exc:
            if given is not None and str(exc).startswith("factors"):
                raise c.UsageProblem(f"--factors '{factors}': {exc}") from None
            raise
        return {"gA": gA, "S": info.S}, info._asdict()

    def gauge_problem(info) -> str | None:
        limit = state["limit"]
        gauge = c.max_of(info, "gauge_relative")
        if not gauge > limit:
            return None
        reasons = c.gauge_reasons(info, limit, state["complex"], state["full"]) or [
            f"the result depends on the arbitrary gauge of the singular vectors (relative "
            f"{gauge:.1e})"
        ]
        return "the cotangents do not determine the gradient: " + "; ".join(reasons)

    def gauge_check(info) -> None:
        problem = None if allow_gauge_dependence else gauge_problem(info)
        if problem is not None:
            raise c.ComputeProblem(
                f"{problem}. Use a gauge-invariant loss, or pass --allow-gauge-dependence to get "
                "the transpose of the JVP's gauge choice."
            )

    def gauge_warning(info) -> None:
        problem = gauge_problem(info)
        if problem is not None:
            c.warn(f"{problem}; the result is the transpose of the JVP's gauge choice")

    def on_info(info) -> None:
        if rank is not None:
            c.cut_check(info, rank)
        gauge_check(info)

    sources = {"A": (a, False), "--gU": (gu, False), "--gS": (gs, True), "--gVh": (gvh, False)}
    sources.update({key: (fsources[key[10:]], key == "--factors S") for key in fkeys if fsources})
    inputs = [a, gu, gs, gvh, *fsources.values(), gerr]
    c.check_single_stdin([spec for spec, _ in sources.values()] + [gerr], [*sources, "--gerr"])
    gerr_value = read_gerr(gerr) if gerr is not None else None
    extra = {"--gerr": (gerr_value, 0)} if gerr_value is not None else None

    options: dict = dict(
        compute_uv=not values_only, convention=convention.value, **numerics.kwargs()
    )
    if rank is not None:
        options.update(rank=rank, solver=solver_name)
    args = {"gU": "--gU", "gS": "--gS", "gVh": "--gVh", "gerr": "--gerr"}
    args.update({name: f"--factors {name}" for name in c.FACTOR_NAMES})
    outcome = _stream.execute(
        sources,
        compute,
        output=output,
        only=only,
        chunk=chunk,
        device=device,
        label="vjp",
        check=lambda p: check_shapes(p.A, p.get),
        prepare=prepare,
        on_info=on_info,
        complex_work=complex_,
        inputs=inputs,
        extra=extra,
        cluster=_stream.Cluster(workers, scheduler),
        job=lambda: _stream.job(
            "vjp",
            {**options, "full_matrices": state["full"]},
            device,
            args,
            ("A",) if state["cast"] else (),
        ),
    )
    merged = outcome.info
    c.tolerance_warnings(merged, numerics)
    gauge_warning(merged)
    if rank is not None:
        c.solver_warnings(c.merge_truncation(outcome.infos), outcome.dtype)


def read_gerr(spec: str) -> np.ndarray:
    """--gerr: a number, or a SOURCE of real values, one per matrix (A's batch shape)."""
    try:
        value = float(spec)
    except ValueError:
        pass
    else:
        if not np.isfinite(value):
            raise c.UsageProblem(f"--gerr {spec}: must be a finite number")
        return np.asarray(value)
    try:
        arr = c.read_inputs([("--gerr", spec, True)])["--gerr"]
    except c.InputError as exc:
        if "scalar (0-D)" not in str(exc):
            raise
        raise c.UsageProblem(
            f"--gerr '{spec}': holds a single number; pass the number itself (--gerr 0.5), or a "
            "file of one value per matrix of A's batch"
        ) from None
    if np.iscomplexobj(arr):
        raise c.UsageProblem(f"--gerr '{spec}': is complex, but err is real; pass real values")
    return arr
