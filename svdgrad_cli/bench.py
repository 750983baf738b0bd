"""Benchmark harness: svdgrad's JVP and VJP against the SVD alone and against autodiff.

Three suites (``suite=``): "derivatives" (the default, below), "transforms" (svdgrad as JAX
code inside other code: jit(grad) through svdgrad's svd against jnp.linalg.svd, and the
per-call overhead of svd_jvp/svd_vjp on a small matrix; see :func:`run_transforms`) and
"startup" (the command line as whole processes, as a user meets them: ``svdgrad --help`` and
``svdgrad jvp`` against Python importing what they need, and against a plain JAX script; see
:func:`run_startup`); "all" runs the three.

The derivatives and transforms suites run in one process. For each shape and case of the
derivatives suite the contenders are

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

float64 and complex128 need jax_enable_x64, which the harness checks but does not set (the
command line sets it); an input JAX would narrow is an error, never a float32 measurement.

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

#: What a run measures: the derivatives suite (the table above), the transforms suite (svdgrad's
#: svd under jit(grad), and the per-call overhead of svd_jvp/svd_vjp on a small matrix), the
#: startup suite (whole processes of the command line), or all three.
SUITES = ("derivatives", "transforms", "startup", "all")
DEFAULT_SUITE = "derivatives"
DEFAULT_GRAD_SHAPES: tuple[tuple[int, ...], ...] = ((256, 32, 32), (384, 384))
DEFAULT_OVERHEAD_SHAPE = (32, 32)
#: The losses differentiated by the transforms suite, B a fixed random array of A's shape.
LOSSES = {
    "usv": "sum(Re(U diag(S^2) Vh * B)) of the thin SVD: uses U, S and Vh, gauge-invariant",
    "s": "sum(S) with compute_uv=False: the nuclear norm",
}
#: Goals for svdgrad over JAX (ratio of medians): jit(grad) through svd, and one svd_jvp or
#: svd_vjp call against a jitted jax.jvp / jax.vjp of jnp.linalg.svd.
TARGETS = {"grad": 1.10, "overhead": 1.25}
#: The transforms suite times back-to-back calls in samples of about this many seconds.
SAMPLE_S = 0.02
MAX_CALLS_PER_SAMPLE = 1000
#: The startup suite: the size of the end-to-end jvp, the size of the warm-cache jvp, the rounds
#: timed when the caller names none, and the goals for svdgrad over each baseline (ratio of
#: medians).
DEFAULT_STARTUP_SIZE = 1536
STARTUP_SMALL_SIZE = 64
DEFAULT_STARTUP_REPEAT = 7
STARTUP_GOALS = {"help": 1.5, "jvp-small": 1.3, "jvp-large": 1.0}


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


def parse_batch_shape(text: str) -> tuple[int, ...]:
    """'256x32x32' -> (256, 32, 32): a matrix shape MxN with optional leading batch sizes."""
    parts = text.strip().lower().split("x")
    if len(parts) < 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(
            f"shape must look like MxN or BxMxN (e.g. 384x384, 256x32x32), got {text.strip()!r}"
        )
    dims = tuple(int(p) for p in parts)
    if min(dims) < 1:
        raise ValueError(f"shape dimensions must be positive, got {text.strip()!r}")
    return dims


def parse_batch_shapes(text: str) -> list[tuple[int, ...]]:
    """'256x32x32,384x384' -> [(256, 32, 32), (384, 384)]."""
    items = [t for t in text.split(",") if t.strip()]
    if not items:
        raise ValueError("no shapes given; use e.g. 256x32x32,384x384")
    return [parse_batch_shape(t) for t in items]


def check_suite(suite: str) -> str:
    if suite not in SUITES:
        raise ValueError(f"suite must be one of {', '.join(SUITES)}, got {suite!r}")
    return suite


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


def _calls_per_sample(seconds: float, sample_s: float | None) -> int:
    """How many calls make one sample of about sample_s seconds (1 when sample_s is None)."""
    if not sample_s or seconds <= 0:
        return 1
    return max(1, min(MAX_CALLS_PER_SAMPLE, round(sample_s / seconds)))


def _interleaved(
    contenders: dict[str, Callable[[], object]],
    repeat: int,
    sample_s: float | None = None,
    calls: dict[str, int] | None = None,
) -> tuple[dict[str, float], dict[str, list[float]], dict[str, tuple[str, str]]]:
    """Compile (first call), warm up, then time round-robin. Returns compile times, samples
    (seconds per call), and {name: (status, note)} for contenders that failed.

    With sample_s, one sample is the mean of as many back-to-back calls as fill about sample_s
    seconds (from the fastest of three calibration calls; each call is still waited for),
    which resolves calls of tens of microseconds; the counts go into ``calls`` when given."""
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
    number: dict[str, int] = {}
    for name in live:
        contenders[name]()  # warm-up
        if sample_s:  # calibration: the fastest of three calls
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                contenders[name]()
                times.append(time.perf_counter() - t0)
            number[name] = _calls_per_sample(min(times), sample_s)
        else:
            number[name] = 1
    if calls is not None:
        calls.update(number)
    samples: dict[str, list[float]] = {name: [] for name in live}
    for r in range(repeat):
        order = live[r % len(live) :] + live[: r % len(live)] if live else []
        for name in order:
            fn, count = contenders[name], number[name]
            t0 = time.perf_counter()
            for _ in range(count):
                fn()
            samples[name].append((time.perf_counter() - t0) / count)
    return compile_s, samples, failed


# --------------------------------------------------------------------------------------------
# contenders


def _jax_contenders(A, dA, gU, gS, gVh, case: Case, dev, pass_device: bool = True):
    """The JAX contenders; pass_device=False calls svd_jvp/svd_vjp without device= (the data
    is in place already: the plain call whose overhead the transforms suite measures)."""
    import jax
    import jax.numpy as jnp

    from .api import svd_jvp, svd_vjp

    fm, uv = case.full_matrices, case.compute_uv
    if not pass_device:
        dev = None

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


def _grad_contenders(A, B):
    """jit(grad(loss)) through svdgrad's svd and through jnp.linalg.svd, for each loss, and
    the thin SVD alone. Keys: "svd" and "METHOD:LOSS"."""
    import jax
    import jax.numpy as jnp

    from .api import svd

    def usv(svd_fn):
        def loss(X, W):
            U, S, Vh = svd_fn(X, full_matrices=False)
            Y = (U * (S * S)[..., None, :].astype(U.dtype)) @ Vh
            return jnp.sum(jnp.real(Y * W))

        return loss

    def s_only(svd_fn):
        def loss(X, W):
            del W  # the same signature as usv's
            return jnp.sum(svd_fn(X, compute_uv=False))

        return loss

    block = jax.block_until_ready
    floor = jax.jit(lambda X: jnp.linalg.svd(X, full_matrices=False))
    out = {"svd": lambda: block(floor(A))}
    for loss_name, make in (("usv", usv), ("s", s_only)):
        for method, svd_fn in (("svdgrad", svd), ("jax", jnp.linalg.svd)):
            g = jax.jit(jax.grad(make(svd_fn)))
            out[f"{method}:{loss_name}"] = lambda g=g: block(g(A, B))
    return out


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
        "load_average": _load_average(),
    }


def _load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, where the system reports them."""
    try:
        return [round(float(x), 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


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
    suite: str = DEFAULT_SUITE,
    grad_shapes: Sequence[tuple[int, ...]] = DEFAULT_GRAD_SHAPES,
    overhead_shape: tuple[int, int] = DEFAULT_OVERHEAD_SHAPE,
    startup_size: int = DEFAULT_STARTUP_SIZE,
    startup_repeat: int | None = None,
    startup_cache_dir: str | None = None,
) -> dict:
    """Run the benchmark; returns a JSON-serialisable dict.

    Keys: schema, config, machine, results (the derivatives suite, one row per shape, case and
    method: shape, case, dtype, method, status "ok"/"unsupported"/"error", note, median_s,
    min_s, ratio_to_svd, ratio_to_jax (svdgrad rows), compile_s, times_s; empty when the suite
    did not run), many_tangents (None when tangents=0 or the suite did not run), transforms
    (None unless suite is "transforms" or "all"; see :func:`run_transforms`), startup (None
    unless suite is "startup" or "all"; see :func:`run_startup`: startup_repeat rounds, else
    ``repeat``, at startup_size, with startup_cache_dir).

    float64 and complex128 need JAX's 64-bit mode (jax_enable_x64), which this function does
    not switch on (the command line does); without it, RuntimeError.
    """
    from .api import resolve_device

    check_dtype(dtype)
    check_suite(suite)
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    if tangents < 0:
        raise ValueError(f"tangents must be >= 0, got {tangents}")
    if startup_repeat is not None and startup_repeat < 1:
        raise ValueError(f"startup_repeat must be >= 1, got {startup_repeat}")
    if startup_size < 1:
        raise ValueError(f"startup_size must be >= 1, got {startup_size}")
    _check_precision(dtype)
    case_names = parse_cases(cases, dtype)
    shapes = [tuple(int(d) for d in s) for s in shapes]
    grad_shapes = [tuple(int(d) for d in s) for s in grad_shapes]
    overhead_shape = tuple(int(d) for d in overhead_shape)
    dev = resolve_device(device)
    derivatives = suite in ("derivatives", "all")
    torch = _torch_module() if use_torch and derivatives else None
    say = progress or (lambda msg: None)
    rng = np.random.default_rng(seed)

    results: list[dict] = []
    for m, n in shapes if derivatives else ():
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
            on_dev = {key: (None if v is None else _put(v, dev)) for key, v in host.items()}
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
    if tangents and derivatives:
        say(f"many tangents: T={tangents} at {tangents_shape[0]}x{tangents_shape[1]}")
        many = _many_tangents(tangents, tuple(tangents_shape), dtype, dev, repeat, rng)

    transforms = None
    if suite in ("transforms", "all"):
        transforms = run_transforms(
            grad_shapes,
            overhead_shape,
            dtype=dtype,
            dev=dev,
            repeat=repeat,
            rng=rng,
            say=say,
        )

    startup = None
    if suite in ("startup", "all"):
        startup = run_startup(
            startup_size,
            repeat=repeat if startup_repeat is None else startup_repeat,
            cache_dir=startup_cache_dir,
            say=say,
        )

    return {
        "schema": SCHEMA,
        "config": {
            "suite": suite,
            "shapes": [list(s) for s in shapes],
            "dtype": dtype,
            "device": device,
            "repeat": repeat,
            "cases": case_names,
            "torch": torch is not None,
            "tangents": tangents,
            "tangents_shape": list(tangents_shape),
            "grad_shapes": [list(s) for s in grad_shapes],
            "overhead_shape": list(overhead_shape),
            "startup_size": int(startup_size),
            "startup_repeat": None if startup is None else startup["repeat"],
            "seed": seed,
        },
        "machine": machine_info(device),
        "results": results,
        "many_tangents": many,
        "transforms": transforms,
        "startup": startup,
    }


def _check_precision(dtype: str) -> None:
    import jax

    if dtype in ("float64", "complex128") and not jax.config.jax_enable_x64:
        raise RuntimeError(
            f"{dtype} needs JAX's 64-bit mode: jax.config.update('jax_enable_x64', True) "
            "before the benchmark (svdgrad bench does this)"
        )


def _put(x, dev):
    """x on dev, waited for; an array whose dtype JAX would change is an error, never a
    silent float32 measurement."""
    import jax

    y = jax.block_until_ready(jax.device_put(x, dev))
    if y.dtype != x.dtype:
        raise RuntimeError(f"JAX turned {x.dtype} into {y.dtype}; enable jax_enable_x64")
    return y


# --------------------------------------------------------------------------------------------
# the transforms suite


def _transform_row(measure, shape, dtype, variant, method, **fields) -> dict:
    row = {
        "measure": measure,
        "shape": list(shape),
        "dtype": dtype,
        "variant": variant,
        "method": method,
        "status": "ok",
        "note": None,
        "median_s": None,
        "min_s": None,
        "ratio_to_svd": None,
        "ratio_to_jax": None,
        "min_ratio_to_jax": None,
        "target": None,
        "within_target": None,
        "calls_per_sample": None,
        "compile_s": None,
        "times_s": [],
    }
    row.update(fields)
    return row


def _rows(measure, shape, dtype, keys, contenders, repeat) -> list[dict]:
    """Time contenders (interleaved) and turn them into rows; keys maps a contender's name to
    its (variant, method), variant None for the SVD alone."""
    calls: dict[str, int] = {}
    compile_s, samples, failed = _interleaved(contenders, repeat, sample_s=SAMPLE_S, calls=calls)
    medians = {name: _median(v) for name, v in samples.items()}
    mins = {name: min(v) if v else None for name, v in samples.items()}
    by_key = {keys[name]: medians.get(name) for name in contenders}
    min_by_key = {keys[name]: mins.get(name) for name in contenders}
    svd_median = by_key.get((None, "svd"))
    rows = []
    for name in contenders:
        variant, method = keys[name]
        status, note = failed.get(name, ("ok", None))
        med = medians.get(name)
        fields = {
            "status": status,
            "note": note,
            "median_s": med,
            "min_s": mins.get(name),
            "ratio_to_svd": _ratio(med, svd_median),
            "calls_per_sample": calls.get(name),
            "compile_s": compile_s.get(name),
            "times_s": [float(x) for x in samples.get(name, [])],
        }
        if method == "svdgrad":
            ratio = _ratio(med, by_key.get((variant, "jax")))
            fields["ratio_to_jax"] = ratio
            fields["min_ratio_to_jax"] = _ratio(mins.get(name), min_by_key.get((variant, "jax")))
            fields["target"] = TARGETS[measure]
            fields["within_target"] = None if ratio is None else bool(ratio <= TARGETS[measure])
        rows.append(_transform_row(measure, shape, dtype, variant, method, **fields))
    return rows


def run_transforms(
    grad_shapes: Sequence[tuple[int, ...]] = DEFAULT_GRAD_SHAPES,
    overhead_shape: tuple[int, int] = DEFAULT_OVERHEAD_SHAPE,
    *,
    dtype: str = "float64",
    dev=None,
    repeat: int = 5,
    rng=None,
    say: Callable[[str], None] | None = None,
) -> dict:
    """The transforms suite: svdgrad as JAX code inside other code.

    grad: for each shape (leading dimensions are a batch), jit(grad(loss)) through svdgrad's
    svd against the same loss through jnp.linalg.svd (LOSSES; thin SVD), beside the thin SVD
    alone. overhead: one svd_jvp(A, dA) and one svd_vjp(A, gU, gS, gVh) call, as a user makes
    them on arrays already in place, against a jitted jax.jvp (SVD and tangents) and a jitted
    jax.vjp (SVD and the pullback applied to the same cotangents) of jnp.linalg.svd with
    full_matrices=False, beside the jitted SVD alone: at a small shape this is the cost of the
    Python wrapper and its dispatch. Interleaved, each sample the mean of back-to-back calls
    (about SAMPLE_S seconds), medians, compile times (the first call) apart.

    Returns {dtype, grad_shapes, overhead_shape, losses, targets, sample_s, rows}; a row has
    measure ("grad" or "overhead"), shape, dtype, variant (the loss, or "jvp"/"vjp"; None for
    the SVD alone), method ("svd", "svdgrad", "jax"), status, note, median_s, min_s (seconds
    per call), ratio_to_svd, ratio_to_jax (of the medians; the target applies to it),
    min_ratio_to_jax (of the fastest samples, steadier on a busy machine), target and
    within_target (svdgrad rows), calls_per_sample, compile_s, times_s.
    """
    from .api import resolve_device

    check_dtype(dtype)
    _check_precision(dtype)
    dev = resolve_device("cpu") if dev is None else resolve_device(dev)
    rng = np.random.default_rng(0) if rng is None else rng
    say = say or (lambda msg: None)
    real = "float32" if dtype in ("float32", "complex64") else "float64"

    rows: list[dict] = []
    for shape in grad_shapes:
        shape = tuple(shape)
        A = _put(_random(rng, shape, dtype), dev)
        B = _put(_random(rng, shape, dtype), dev)
        contenders = _grad_contenders(A, B)
        keys = {name: (None, "svd") for name in contenders if name == "svd"}
        for name in contenders:
            if name != "svd":
                method, loss = name.split(":")
                keys[name] = (loss, method)
        say(f"transforms: jit(grad) at {'x'.join(map(str, shape))} ({dtype})")
        rows += _rows("grad", shape, dtype, keys, contenders, repeat)

    m, n = overhead_shape
    k = min(m, n)
    case = Case(False, dtype.startswith("complex"), True)
    arrays = [
        _random(rng, (m, n), dtype),
        _random(rng, (m, n), dtype),
        _random(rng, (m, k), dtype),
        _random(rng, (k,), real),
        _random(rng, (k, n), dtype),
    ]
    contenders = _jax_contenders(*[_put(x, dev) for x in arrays], case, dev, pass_device=False)
    keys = {
        "svd": (None, "svd"),
        "svdgrad-jvp": ("jvp", "svdgrad"),
        "jax-jvp": ("jvp", "jax"),
        "svdgrad-vjp": ("vjp", "svdgrad"),
        "jax-vjp": ("vjp", "jax"),
    }
    contenders = {name: contenders[name] for name in keys}
    say(f"transforms: per-call overhead at {m}x{n} ({dtype})")
    rows += _rows("overhead", (m, n), dtype, keys, contenders, repeat)

    return {
        "dtype": dtype,
        "grad_shapes": [list(s) for s in grad_shapes],
        "overhead_shape": [m, n],
        "losses": dict(LOSSES),
        "targets": dict(TARGETS),
        "sample_s": SAMPLE_S,
        "rows": rows,
    }


def _many_tangents(T: int, shape: tuple[int, int], dtype: str, dev, repeat: int, rng) -> dict:
    import jax

    from .api import svd_jvp

    m, n = shape
    dt = dtype  # the thin case in the precision and kind that --dtype names
    A = _put(_random(rng, (m, n), dt), dev)
    dAs = _put(_random(rng, (T, m, n), dt), dev)
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


# --------------------------------------------------------------------------------------------
# the startup suite

#: The plain script the end-to-end jvp is measured against: what a user of JAX would write
#: (argv: A.npy dA.npy OUT.npz). It compiles at every run: no persistent compilation cache.
PLAIN_SCRIPT = """\
import sys

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp

cpu = jax.devices("cpu")[0]
a = jax.device_put(np.load(sys.argv[1]), cpu)
da = jax.device_put(np.load(sys.argv[2]), cpu)
f = jax.jit(
    lambda a, da: jax.jvp(lambda x: jnp.linalg.svd(x, full_matrices=False), (a,), (da,))
)
(u, s, vh), (du, ds, dvh) = f(a, da)
np.savez(sys.argv[3], U=u, S=s, Vh=vh, dU=du, dS=ds, dVh=dvh)
"""

#: Environment variables taken out of every process the startup suite runs: a cache chosen by
#: the caller's environment would make the results depend on it (SVDGRAD_CACHE_DIR is set to
#: the suite's own), and the plain script must compile every time.
_STARTUP_UNSET = ("JAX_COMPILATION_CACHE_DIR", "SVDGRAD_NO_CACHE")


def svdgrad_command() -> list[str]:
    """How to run the command line from this Python: the ``svdgrad`` console script beside
    sys.executable, else ``python -m svdgrad_cli``."""
    import sys
    from pathlib import Path

    script = Path(sys.executable).parent / "svdgrad"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "svdgrad_cli"]


def _startup_commands(size: int) -> tuple[dict[str, dict], list[dict]]:
    """The processes (name -> argv and what it is) and the comparisons (svdgrad's process,
    its baseline, the goal). Paths are relative to the suite's directory."""
    import sys

    py = sys.executable
    sg = svdgrad_command()
    small, n = STARTUP_SMALL_SIZE, size
    commands = {
        "help": {
            "argv": [*sg, "--help"],
            "about": "svdgrad --help, its page from the help cache",
        },
        "import-typer-rich": {
            "argv": [py, "-c", "import typer, rich"],
            "about": "Python importing typer and rich",
        },
        "jvp-small": {
            "argv": [*sg, "jvp", f"A{small}.npy", f"dA{small}.npy", "-o", f"out{small}.npz"],
            "about": f"svdgrad jvp at {small}x{small}, compilation cache warm",
        },
        "import-jax": {
            "argv": [py, "-c", "import jax.numpy"],
            "about": "Python importing jax.numpy",
        },
        "jvp-large": {
            "argv": [*sg, "jvp", f"A{n}.npy", f"dA{n}.npy", "-o", f"out{n}.npz"],
            "about": f"svdgrad jvp at {n}x{n}, end to end",
        },
        "script-large": {
            "argv": [py, "plain_jvp.py", f"A{n}.npy", f"dA{n}.npy", f"plain{n}.npz"],
            "about": f"a plain JAX script at {n}x{n}, compiling every time",
        },
    }
    comparisons = [
        {"name": "help", "command": "help", "baseline": "import-typer-rich"},
        {"name": "jvp-small", "command": "jvp-small", "baseline": "import-jax"},
        {"name": "jvp-large", "command": "jvp-large", "baseline": "script-large"},
    ]
    for comp in comparisons:
        comp["goal"] = STARTUP_GOALS[comp["name"]]
    return commands, comparisons


def _run_process(argv: list[str], cwd: str, env: dict[str, str]) -> float:
    """Wall time of one process (output discarded); a failing process is an error."""
    import subprocess

    t0 = time.perf_counter()
    proc = subprocess.run(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        again = subprocess.run(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True
        )
        lines = (again.stderr or again.stdout or "").strip().splitlines()
        why = lines[-1] if lines else "no output"
        raise RuntimeError(
            f"startup suite: {' '.join(argv)} exited with status {proc.returncode}: {why}"
        )
    return elapsed


def run_startup(
    size: int = DEFAULT_STARTUP_SIZE,
    *,
    repeat: int = DEFAULT_STARTUP_REPEAT,
    cache_dir: str | None = None,
    seed: int = 0,
    say: Callable[[str], None] | None = None,
) -> dict:
    """The startup suite: the command line as whole processes, as a user meets them.

    Each process is timed as the wall time of subprocess.run (output discarded, exit status
    checked), in rounds that run every process once, interleaved (the first process rotates);
    the first round is a warm-up and is not counted, then ``repeat`` rounds are. Compared
    (ratio of the medians, against a goal in STARTUP_GOALS):

    help        ``svdgrad --help`` (served from the help cache, which the warm-up fills)
                against ``python -c "import typer, rich"``
    jvp-small   ``svdgrad jvp`` on a 64x64 float64 matrix, its compilation cache warm (the
                warm-up fills it), against ``python -c "import jax.numpy"``
    jvp-large   ``svdgrad jvp`` at size x size float64, end to end, against PLAIN_SCRIPT
                (load, jit(jvp(svd)) compiled every time, save U, S, Vh, dU, dS, dVh)

    Python is sys.executable, svdgrad the console script beside it (:func:`svdgrad_command`).
    Inputs and outputs live in a temporary directory, removed afterwards. svdgrad's cache
    (SVDGRAD_CACHE_DIR: compiled programs and help pages) is a fresh directory inside it
    unless cache_dir names one, so that the results do not depend on the user's cache;
    JAX_COMPILATION_CACHE_DIR and SVDGRAD_NO_CACHE are taken out of every process's
    environment.

    Returns {size, small_size, dtype, repeat, warmup_rounds, svdgrad, cache_dir (None for the
    private one), script, load_average_before, load_average_after, commands, comparisons};
    commands maps a name to {argv, command (one shell line, relative to the suite's
    directory), about, warmup_s, times_s, median_s, min_s}; a comparison is {name, command,
    baseline, goal, ratio, within_goal}.
    """
    import shlex
    import tempfile

    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    say = say or (lambda msg: None)
    commands, comparisons = _startup_commands(size)
    names = list(commands)
    samples: dict[str, list[float]] = {name: [] for name in names}
    warmup: dict[str, float] = {}
    load_before = _load_average()
    with tempfile.TemporaryDirectory(prefix="svdgrad-startup-") as tmp:
        rng = np.random.default_rng(seed)
        for n in sorted({STARTUP_SMALL_SIZE, size}):
            np.save(os.path.join(tmp, f"A{n}.npy"), rng.standard_normal((n, n)))
            np.save(os.path.join(tmp, f"dA{n}.npy"), rng.standard_normal((n, n)))
        with open(os.path.join(tmp, "plain_jvp.py"), "w", encoding="utf-8") as fh:
            fh.write(PLAIN_SCRIPT)
        env = {k: v for k, v in os.environ.items() if k not in _STARTUP_UNSET}
        cache = os.path.join(tmp, "cache") if cache_dir is None else cache_dir
        env["SVDGRAD_CACHE_DIR"] = os.path.expanduser(cache)
        for r in range(repeat + 1):
            say(
                "startup: warm-up round (fills the caches)"
                if r == 0
                else f"startup: round {r} of {repeat}"
            )
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                t = _run_process(commands[name]["argv"], tmp, env)
                if r == 0:
                    warmup[name] = t
                else:
                    samples[name].append(t)
    load_after = _load_average()

    out_commands = {}
    for name, spec in commands.items():
        times = [float(x) for x in samples[name]]
        out_commands[name] = {
            "argv": list(spec["argv"]),
            "command": shlex.join(spec["argv"]),
            "about": spec["about"],
            "warmup_s": float(warmup[name]),
            "times_s": times,
            "median_s": _median(times),
            "min_s": min(times),
        }
    for comp in comparisons:
        ratio = _ratio(
            out_commands[comp["command"]]["median_s"],
            out_commands[comp["baseline"]]["median_s"],
        )
        comp["ratio"] = ratio
        comp["within_goal"] = None if ratio is None else bool(ratio <= comp["goal"])
    return {
        "size": int(size),
        "small_size": STARTUP_SMALL_SIZE,
        "dtype": "float64",
        "repeat": int(repeat),
        "warmup_rounds": 1,
        "svdgrad": svdgrad_command(),
        "cache_dir": cache_dir,
        "script": PLAIN_SCRIPT,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "commands": out_commands,
        "comparisons": comparisons,
    }


__all__ = [
    "CASE_NAMES",
    "DEFAULT_GRAD_SHAPES",
    "DEFAULT_OVERHEAD_SHAPE",
    "DEFAULT_SHAPES",
    "DEFAULT_STARTUP_REPEAT",
    "DEFAULT_STARTUP_SIZE",
    "DTYPES",
    "LOSSES",
    "METHODS",
    "PLAIN_SCRIPT",
    "STARTUP_GOALS",
    "SUITES",
    "TARGETS",
    "case_dtype",
    "check_dtype",
    "check_suite",
    "machine_info",
    "parse_batch_shape",
    "parse_batch_shapes",
    "parse_cases",
    "parse_shape",
    "parse_shapes",
    "run_benchmark",
    "run_startup",
    "run_transforms",
    "svdgrad_command",
]
