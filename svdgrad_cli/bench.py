"""Benchmark harness: svdgrad's JVP and VJP against the SVD alone and against autodiff.

Everything runs in one process. For each shape and case the contenders are

    svd          a jitted jnp.linalg.svd(A, full_matrices=...) with U and Vh: the floor that any
                 derivative of the SVD pays (also for the values-only cases, whose derivative
                 needs the singular vectors)
    svdgrad-jvp  svdgrad_cli.svd_jvp
    svdgrad-vjp  svdgrad_cli.svd_vjp (SVD and pullback: what a gradient costs)
    jax-jvp      jax.jvp of jnp.linalg.svd, jitted
    jax-vjp      jax.vjp of jnp.linalg.svd and its pullback in one jitted function
    torch-jvp    torch.func.jvp of torch.linalg.svd      (only when ``import torch`` works)
    torch-vjp    torch.linalg.svd and autograd backward  (only when ``import torch`` works)

Each contender is called once (compilation and the first run: reported as compile_s), once
more to warm up, and then ``repeat`` times, interleaved: every repetition calls every contender
once, round-robin (the starting contender rotates), so that machine noise hits all alike. The
median of the repetitions is reported, with its ratio to the median of the SVD alone. Inputs are
placed on the device before any timing, and every call is waited for with block_until_ready.

A contender that cannot do a case (JAX's autodiff of a full SVD with m != n raises
NotImplementedError) is recorded with status "unsupported", not raised.

The many-tangents measurement times one svd_jvp call with a batch of T tangents, dA of shape
(T, m, n) for an A of shape (m, n), against T separate calls with one tangent each (each one
repeating the SVD).

Nothing here prints or depends on typer/rich: svdgrad_cli.cli.bench renders the result. JAX is
imported when a benchmark runs, not when this module is imported.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np

from .check import ALL_CASES, Case

DEFAULT_SHAPES: tuple[tuple[int, int], ...] = ((256, 256), (1024, 1024), (20000, 64))
DEFAULT_CASE = "thin-real-usv"
DEFAULT_TANGENTS_SHAPE = (256, 256)
DTYPES = ("float32", "float64", "complex64", "complex128")
CASE_NAMES = tuple(c.name for c in ALL_CASES)
DEVICES = ("cpu", "gpu")

#: Contenders in the order they are reported.
METHODS = (
    "svd",
    "svdgrad-jvp",
    "svdgrad-vjp",
    "jax-jvp",
    "jax-vjp",
    "torch-jvp",
    "torch-vjp",
)
#: The autodiff contender each svdgrad method is compared with (ratio_to_jax).
JAX_COUNTERPART = {"svdgrad-jvp": "jax-jvp", "svdgrad-vjp": "jax-vjp"}

SCHEMA = "svdgrad-bench/1"


# --------------------------------------------------------------------------------------------
# argument parsing (shared with the CLI; raises ValueError with a one-line message)


def parse_shape(text: str) -> tuple[int, int]:
    """'256x256' -> (256, 256)."""
    parts = text.strip().lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"shape must look like MxN (e.g. 256x256), got {text.strip()!r}")
    m, n = (int(p) for p in parts)
    if m < 1 or n < 1:
        raise ValueError(f"shape dimensions must be positive, got {text.strip()!r}")
    return m, n


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """'256x256,1024x1024' -> [(256, 256), (1024, 1024)]."""
    items = [t for t in text.split(",") if t.strip()]
    if not items:
        raise ValueError("no shapes given; use e.g. 256x256,1024x1024")
    return [parse_shape(t) for t in items]


def parse_cases(text: str | Sequence[str] | None, dtype: str = "float64") -> list[str]:
    """Case names from 'a,b' or a list; 'all' means all eight; None means the default case.

    The default is thin-real-usv, or thin-complex-usv when dtype is complex.
    """
    if text is None:
        return ["thin-complex-usv" if dtype.startswith("complex") else DEFAULT_CASE]
    items = [t.strip() for t in text.split(",")] if isinstance(text, str) else list(text)
    items = [t for t in items if t]
    if items == ["all"]:
        return list(CASE_NAMES)
    if not items:
        raise ValueError("no cases given; cases: " + ", ".join(CASE_NAMES))
    out = []
    for t in items:
        if t not in CASE_NAMES:
            raise ValueError(f"unknown case {t!r}; cases: {', '.join(CASE_NAMES)} (or all)")
        if t not in out:
            out.append(t)
    return out


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return dtype


def case_dtype(dtype: str, case: Case) -> str:
    """The dtype a case runs in: --dtype gives the precision, the case real or complex."""
    single = dtype in ("float32", "complex64")
    if case.complex:
        return "complex64" if single else "complex128"
    return "float32" if single else "float64"


# --------------------------------------------------------------------------------------------
# timing


def _median(xs):
    return float(statistics.median(xs)) if xs else None


def _classify(exc: BaseException) -> tuple[str, str]:
    msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    msg = f"{type(exc).__name__}: {msg}"[:300]
    if isinstance(exc, NotImplementedError):
        return "unsupported", msg
    if type(exc).__name__ == "RuntimeError" and "support" in msg.lower():
        return "unsupported", msg  # torch's way of saying the same
    return "error", msg


def _interleaved(
    contenders: dict[str, Callable[[], object]], repeat: int
) -> tuple[dict[str, float], dict[str, list[float]], dict[str, tuple[str, str]]]:
    """Compile (first call), warm up, then time round-robin. Returns compile times, samples,
    and {name: (status, note)} for contenders that failed."""
    compile_s: dict[str, float] = {}
    failed: dict[str, tuple[str, str]] = {}
    for name, fn in contenders.items():
        t0 = time.perf_counter()
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - recorded, not raised
            failed[name] = _classify(exc)
            continue
        compile_s[name] = time.perf_counter() - t0
    live = [name for name in contenders if name not in failed]
    for name in live:
        contenders[name]()  # warm-up
    samples: dict[str, list[float]] = {name: [] for name in live}
    for r in range(repeat):
        order = live[r % len(live) :] + live[: r % len(live)] if live else []
        for name in order:
            fn = contenders[name]
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
    return compile_s, samples, failed


# --------------------------------------------------------------------------------------------
# contenders


def _jax_contenders(A, dA, gU, gS, gVh, case: Case, dev):
    import jax
    import jax.numpy as jnp

    from .api import svd_jvp, svd_vjp

    fm, uv = case.full_matrices, case.compute_uv

    def svd_fn(X):
        out = jnp.linalg.svd(X, full_matrices=fm, compute_uv=uv)
        return tuple(out) if uv else out  # a plain tuple, to match the cotangent's structure

    floor = jax.jit(lambda X: jnp.linalg.svd(X, full_matrices=fm))
    jax_jvp = jax.jit(lambda X, dX: jax.jvp(svd_fn, (X,), (dX,)))

    cot = (gU, gS, gVh) if uv else gS

    @jax.jit
    def jax_vjp(X, g):
        _, pullback = jax.vjp(svd_fn, X)
        return pullback(g)[0]

    block = jax.block_until_ready

    def run_svd():
        return block(floor(A))

    def run_svdgrad_jvp():
        return block(svd_jvp(A, dA, full_matrices=fm, compute_uv=uv, device=dev))

    if uv:

        def run_svdgrad_vjp():
            return block(svd_vjp(A, gU, gS, gVh, full_matrices=fm, device=dev))

    else:

        def run_svdgrad_vjp():
            return block(svd_vjp(A, gS=gS, compute_uv=False, device=dev))

    def run_jax_jvp():
        return block(jax_jvp(A, dA))

    def run_jax_vjp():
        return block(jax_vjp(A, cot))

    return {
        "svd": run_svd,
        "svdgrad-jvp": run_svdgrad_jvp,
        "svdgrad-vjp": run_svdgrad_vjp,
        "jax-jvp": run_jax_jvp,
        "jax-vjp": run_jax_vjp,
    }


def _torch_module():
    try:
        import torch  # noqa: PLC0415 - optional, never a dependency
    except Exception:  # noqa: BLE001 - any failure to import means "no torch"
        return None
    return torch


def _torch_contenders(torch, arrays: dict, case: Case, device: str):
    """torch.func.jvp of torch.linalg.svd and autograd backward; None when torch lacks the
    device."""
    if device == "gpu":
        if not torch.cuda.is_available():
            return None
        tdev = torch.device("cuda")

        def sync():
            torch.cuda.synchronize()

    else:
        tdev = torch.device("cpu")

        def sync():
            return None

    t = {
        k: (None if v is None else torch.from_numpy(np.ascontiguousarray(v)).to(tdev))
        for k, v in arrays.items()
    }
    fm, uv = case.full_matrices, case.compute_uv

    if uv:

        def f(X):
            return torch.linalg.svd(X, full_matrices=fm)

        cots = (t["gU"], t["gS"], t["gVh"])
    else:

        def f(X):
            return torch.linalg.svdvals(X)

        cots = t["gS"]

    def run_jvp():
        out = torch.func.jvp(f, (t["A"],), (t["dA"],))
        sync()
        return out

    def run_vjp():
        X = t["A"].detach().requires_grad_(True)
        out = f(X)
        if uv:
            g = torch.autograd.grad(out, (X,), cots)
        else:
            g = torch.autograd.grad((out,), (X,), (cots,))
        sync()
        return g

    return {"torch-jvp": run_jvp, "torch-vjp": run_vjp}


def _random(rng, shape, dtype: str):
    x = rng.standard_normal(shape)
    if dtype.startswith("complex"):
        x = x + 1j * rng.standard_normal(shape)
    return x.astype(dtype)


# --------------------------------------------------------------------------------------------
# the benchmark


def machine_info(device: str = "cpu") -> dict:
    import jax

    from .api import resolve_device

    dev = resolve_device(device)
    torch = _torch_module()
    try:
        import jaxlib

        jaxlib_version = jaxlib.__version__
    except Exception:  # noqa: BLE001
        jaxlib_version = None
    return {
        "jax_version": jax.__version__,
        "jaxlib_version": jaxlib_version,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "device": str(dev),
        "device_platform": dev.platform,
        "device_kind": getattr(dev, "device_kind", None),
        "torch_version": None if torch is None else str(torch.__version__),
    }


def _ratio(x, ref):
    if x is None or ref is None or ref <= 0:
        return None
    return float(x / ref)


def run_benchmark(
    shapes: Sequence[tuple[int, int]] = DEFAULT_SHAPES,
    *,
    dtype: str = "float64",
    device: str = "cpu",
    repeat: int = 5,
    cases: Sequence[str] | None = None,
    use_torch: bool = True,
    tangents: int = 32,
    tangents_shape: tuple[int, int] = DEFAULT_TANGENTS_SHAPE,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Run the benchmark; returns a JSON-serialisable dict.

    Keys: schema, config, machine, results (one row per shape, case and method: shape, case,
    dtype, method, status "ok"/"unsupported"/"error", note, median_s, min_s, ratio_to_svd,
    ratio_to_jax (svdgrad rows), compile_s, times_s), many_tangents (None when tangents=0).
    """
    import jax

    from .api import resolve_device

    check_dtype(dtype)
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    if tangents < 0:
        raise ValueError(f"tangents must be >= 0, got {tangents}")
    case_names = parse_cases(cases, dtype)
    shapes = [tuple(int(d) for d in s) for s in shapes]
    dev = resolve_device(device)
    torch = _torch_module() if use_torch else None
    say = progress or (lambda msg: None)
    rng = np.random.default_rng(seed)

    results: list[dict] = []
    for m, n in shapes:
        k = min(m, n)
        for name in case_names:
            case = Case.parse(name)
            dt = case_dtype(dtype, case)
            ku, kv = (m, n) if case.full_matrices else (k, k)
            host = {
                "A": _random(rng, (m, n), dt),
                "dA": _random(rng, (m, n), dt),
                "gU": _random(rng, (m, ku), dt) if case.compute_uv else None,
                "gS": _random(
                    rng, (k,), "float32" if dt in ("float32", "complex64") else "float64"
                ),
                "gVh": _random(rng, (kv, n), dt) if case.compute_uv else None,
            }
            on_dev = {
                key: (None if v is None else jax.device_put(v, dev)) for key, v in host.items()
            }
            jax.block_until_ready([v for v in on_dev.values() if v is not None])
            contenders = _jax_contenders(
                on_dev["A"], on_dev["dA"], on_dev["gU"], on_dev["gS"], on_dev["gVh"], case, dev
            )
            if torch is not None:
                tc = _torch_contenders(torch, host, case, device)
                if tc:
                    contenders.update(tc)
            say(f"{m}x{n} {name} ({dt}): compiling and timing {len(contenders)} contenders")
            compile_s, samples, failed = _interleaved(contenders, repeat)
            medians = {key: _median(v) for key, v in samples.items()}
            for method in METHODS:
                if method not in contenders:
                    continue
                status, note = failed.get(method, ("ok", None))
                med = medians.get(method)
                row = {
                    "shape": [m, n],
                    "case": name,
                    "dtype": dt,
                    "method": method,
                    "status": status,
                    "note": note,
                    "median_s": med,
                    "min_s": min(samples[method]) if samples.get(method) else None,
                    "ratio_to_svd": _ratio(med, medians.get("svd")),
                    "ratio_to_jax": (
                        _ratio(med, medians.get(JAX_COUNTERPART[method]))
                        if method in JAX_COUNTERPART
                        else None
                    ),
                    "compile_s": compile_s.get(method),
                    "times_s": [float(x) for x in samples.get(method, [])],
                }
                results.append(row)

    many = None
    if tangents:
        say(f"many tangents: T={tangents} at {tangents_shape[0]}x{tangents_shape[1]}")
        many = _many_tangents(tangents, tuple(tangents_shape), dtype, dev, repeat, rng)

    return {
        "schema": SCHEMA,
        "config": {
            "shapes": [list(s) for s in shapes],
            "dtype": dtype,
            "device": device,
            "repeat": repeat,
            "cases": case_names,
            "torch": torch is not None,
            "tangents": tangents,
            "tangents_shape": list(tangents_shape),
            "seed": seed,
        },
        "machine": machine_info(device),
        "results": results,
        "many_tangents": many,
    }


def _many_tangents(T: int, shape: tuple[int, int], dtype: str, dev, repeat: int, rng) -> dict:
    import jax

    from .api import svd_jvp

    m, n = shape
    dt = dtype  # the thin case in the precision and kind that --dtype names
    A = jax.device_put(_random(rng, (m, n), dt), dev)
    dAs = jax.device_put(_random(rng, (T, m, n), dt), dev)
    singles = [dAs[i] for i in range(T)]  # sliced beforehand: the loop times svd_jvp only
    jax.block_until_ready((A, dAs, singles))

    def batched():
        return jax.block_until_ready(svd_jvp(A, dAs, device=dev))

    def separate():
        # each call is waited for at the end only, which lets them pipeline where they can
        return jax.block_until_ready([svd_jvp(A, d, device=dev) for d in singles])

    compile_s, samples, failed = _interleaved({"batched": batched, "separate": separate}, repeat)
    if failed:
        status, note = next(iter(failed.values()))
        return {"shape": [m, n], "tangents": T, "dtype": dt, "status": status, "note": note}
    b, s = _median(samples["batched"]), _median(samples["separate"])
    return {
        "shape": [m, n],
        "tangents": T,
        "dtype": dt,
        "status": "ok",
        "note": None,
        "batched_median_s": b,
        "separate_median_s": s,
        "ratio": _ratio(b, s),
        "batched_per_tangent_s": b / T,
        "separate_per_tangent_s": s / T,
        "compile_s": {"batched": compile_s["batched"], "separate": compile_s["separate"]},
        "times_s": {k: [float(x) for x in v] for k, v in samples.items()},
    }


__all__ = [
    "CASE_NAMES",
    "DEFAULT_SHAPES",
    "DTYPES",
    "METHODS",
    "case_dtype",
    "check_dtype",
    "machine_info",
    "parse_cases",
    "parse_shape",
    "parse_shapes",
    "run_benchmark",
]
