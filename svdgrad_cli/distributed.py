"""Streaming a stack of matrices through a dask.distributed cluster.

The embedded default (``svdgrad_cli.cli._stream``) reads a stack chunk by chunk in one process.
This module runs the same computation on Dask's scheduler instead: each chunk of the stack is one
task, computed on a worker by the same jitted rules (:func:`svdgrad_cli.api.svd`,
:func:`~svdgrad_cli.api.svd_jvp`, :func:`~svdgrad_cli.api.svd_vjp`), and the results go to

* an .h5 destination (``PATH.h5[:/GROUP]``): written by the client, chunk by chunk as the
  results arrive, into a temporary file beside the destination that replaces it at the end (the
  same writer and layout as the embedded default). HDF5 gets one writer: h5py's wheels are built
  without parallel HDF5, and ``dask.array.to_hdf5`` does not work under dask.distributed at all
  (live h5py objects cannot be pickled);
* a .zarr destination (``PATH.zarr[:/GROUP]``, a directory store): written by the workers in
  parallel, each task its own chunk-aligned rows, so no lock is needed (as
  ``dask.array.to_zarr`` does); into a temporary directory beside the destination, renamed into
  place at the end.

Inputs are read on the workers: an .h5 dataset or a .npy file is opened read-only inside the
task, by path (and dataset) and row range (.npy through a memory map), so a task pickles to a
few strings. Inputs that only the client can read (.npz members, standard input) are sliced by
the client and sent with their task. The files must be visible at the same path on every worker
(a shared file system on a cluster).

Entry points: :func:`run` takes a streaming plan (what ``svdgrad_cli.cli._stream.plan`` returns:
a batch size, the inputs cut along A's first axis, and the inputs read whole) and a :class:`Job`;
:func:`compute` opens the inputs itself, for use from Python. Both start a LocalCluster
(``workers=N``) or connect to a running scheduler (``scheduler="tcp://host:port"``), or use a
:class:`Cluster` the caller holds.

Nothing here imports dask or zarr at module level: they come with the ``dask`` extra
(``pip install 'svdgrad[dask]'``), and without it :class:`MissingExtra` says so.

Faults: a worker that dies has its tasks rerun by the scheduler (the output is the same as a run
without the fault). When no worker is left, when a chunk keeps killing its workers, or when the
scheduler goes away, :class:`ClusterError` is raised and no output is left behind; an address
where no scheduler answers raises :class:`SchedulerUnreachable` after ``connect_timeout``.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "EXTRA",
    "MissingExtra",
    "ClusterError",
    "SchedulerUnreachable",
    "Cluster",
    "connect",
    "Job",
    "RunResult",
    "Destination",
    "parse_destination",
    "output_names",
    "run",
    "compute",
    "require_extra",
]

#: The optional dependency group that brings dask.distributed and zarr.
EXTRA = "dask"
_INSTALL = f"pip install 'svdgrad[{EXTRA}]'"

OPS = ("svd", "jvp", "vjp")
#: Keyword arguments each operation passes through to the rule (svdgrad_cli.api).
OPTIONS = {
    "svd": ("full_matrices", "compute_uv", "rank", "solver", "device"),
    "jvp": (
        "full_matrices",
        "compute_uv",
        "rank",
        "solver",
        "device",
        "eps",
        "degeneracy_tol",
        "rank_tol",
    ),
    "vjp": (
        "full_matrices",
        "compute_uv",
        "rank",
        "solver",
        "device",
        "eps",
        "degeneracy_tol",
        "rank_tol",
        "convention",
    ),
}
#: The array arguments of each operation (U, S, Vh of vjp are its factors=).
ARGS = {
    "svd": ("A",),
    "jvp": ("A", "dA"),
    "vjp": ("A", "gU", "gS", "gVh", "gerr", "U", "S", "Vh"),
}
#: Trailing (core) dimensions of each array argument: matrices 2, vectors 1, gerr 0.
_CORE = {"gS": 1, "S": 1, "gerr": 0}

_WORK_FACTOR = 24  # as in cli._stream: one matrix in a chunk costs this many (m, n) matrices
_INLINE_BYTES = 1 << 20  # arrays read whole are sent with each task up to this size
_ZARR_CHUNK_BYTES = 8 << 20  # a zarr chunk of the largest output holds about this much
_MARKER = ".svdgrad-open"  # present in a .zarr temporary directory while tasks may write
_WRITING = ".svdgrad-writing-"  # one such file per write under way
_TMP_SUFFIX = ".tmp"
_POLL = 0.05  # seconds between looks at the futures when none is ready


# --------------------------------------------------------------------------- errors


class MissingExtra(ImportError):
    """dask.distributed or zarr is not installed: ``pip install 'svdgrad[dask]'``."""


class ClusterError(RuntimeError):
    """The cluster failed the run: no worker left, a chunk that kills its workers, the scheduler
    gone. No output was written."""


class SchedulerUnreachable(ClusterError):
    """No dask scheduler answered at the address within the connect timeout."""


def _one_line(text: object, limit: int = 300) -> str:
    line = " ".join(str(text).split()) or "no details"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _require(module: str, purpose: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(
            f"{purpose} needs the '{EXTRA}' extra ({module} cannot be imported: "
            f"{_one_line(exc, 120)}); install it with: {_INSTALL}"
        ) from None


def _distributed() -> Any:
    return _require("distributed", "running on a dask cluster")


def require_extra() -> None:
    """Raise MissingExtra (naming the extra to install) unless dask.distributed is there."""
    _distributed()


def _zarr() -> Any:
    return _require("zarr", "writing a .zarr output")


def _io(name: str) -> Any:
    """InputError, OutputError, H5StreamWriter, ... from the CLI's I/O layer."""
    from . import io as io_module

    return getattr(io_module, name)


def _input_error(message: str) -> Exception:
    return _io("InputError")(message)


def _output_error(message: str) -> Exception:
    return _io("OutputError")(message)


# --------------------------------------------------------------------------- the cluster


def _normalise_address(address: str) -> str:
    address = address.strip()
    if not address:
        raise ValueError("scheduler: empty address; give tcp://HOST:PORT")
    if "://" not in address:
        address = "tcp://" + address
    scheme, _, rest = address.partition("://")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"scheduler: '{address}' is not an address of the form {scheme}://HOST:PORT "
            "(the one 'dask scheduler' prints)"
        )
    return address


class Cluster:
    """A dask.distributed client: on a LocalCluster of ``workers`` processes on this machine
    (loopback only, no dashboard unless ``dashboard`` is an address such as ":8787"), or
    connected to the scheduler at ``scheduler`` (``tcp://host:port``).

    Use it as a context manager, or call :meth:`start` and :meth:`close`. ``connect_timeout``
    bounds the wait for a remote scheduler (SchedulerUnreachable after it).
    """

    def __init__(
        self,
        workers: int | None = None,
        scheduler: str | None = None,
        *,
        threads_per_worker: int = 1,
        memory_limit: str | int | None = "auto",
        dashboard: str | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        if (workers is None) == (scheduler is None):
            raise ValueError(
                "workers and scheduler: give one, the number of local workers to start or the "
                "address of a running scheduler"
            )
        if workers is not None and (isinstance(workers, bool) or int(workers) < 1):
            raise ValueError(f"workers: must be at least 1, not {workers}")
        if int(threads_per_worker) < 1:
            raise ValueError(f"threads_per_worker: must be at least 1, not {threads_per_worker}")
        self.workers = None if workers is None else int(workers)
        self.scheduler = None if scheduler is None else _normalise_address(scheduler)
        self.threads_per_worker = int(threads_per_worker)
        self.memory_limit = memory_limit
        self.dashboard = dashboard
        self.connect_timeout = float(connect_timeout)
        self.client: Any = None
        self.local: Any = None

    @property
    def address(self) -> str | None:
        """The scheduler's address (once started)."""
        if self.client is None:
            return self.scheduler
        return self.client.scheduler.address

    def start(self) -> Cluster:
        if self.client is not None:
            return self
        distributed = _distributed()
        if self.scheduler is not None:
            try:
                self.client = distributed.Client(
                    self.scheduler,
                    timeout=f"{self.connect_timeout}s",
                    set_as_default=False,
                )
            except (OSError, TimeoutError) as exc:
                raise SchedulerUnreachable(
                    f"no dask scheduler answered at {self.scheduler} within "
                    f"{self.connect_timeout:g} s ({_one_line(exc, 160)}); start one with "
                    "'dask scheduler' and pass the address it prints"
                ) from None
            return self
        self.local = distributed.LocalCluster(
            n_workers=self.workers,
            threads_per_worker=self.threads_per_worker,
            processes=True,
            host="127.0.0.1",
            dashboard_address=self.dashboard,
            # without a dashboard the scheduler still serves its health routes over HTTP: on
            # a free loopback port, not on 8787
            scheduler_kwargs=None if self.dashboard else {"dashboard_address": "127.0.0.1:0"},
            memory_limit=self.memory_limit,
            silence_logs=logging.ERROR,
        )
        try:
            self.client = distributed.Client(self.local, set_as_default=False)
        except BaseException:
            self.local.close()
            self.local = None
            raise
        return self

    def close(self) -> None:
        client, local = self.client, self.local
        self.client = self.local = None
        with _quiet_logs(True):
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close(timeout=5)
            if local is not None:
                with contextlib.suppress(Exception):
                    local.close(timeout=10)

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def workers_info(self, timeout: float = 3.0) -> dict[str, Any] | None:
        """{address: info} of the workers the scheduler knows now; None when it does not
        answer within ``timeout`` seconds."""
        client = self.client
        if client is None or client.status not in ("running", "connecting"):
            return None
        try:
            identity = client.sync(
                client.scheduler.identity, n_workers=-1, callback_timeout=timeout
            )
        except Exception:
            return None
        return dict(identity.get("workers", {}))

    def n_workers(self) -> int:
        """Workers the scheduler knows now (0 when it cannot be asked)."""
        return len(self.workers_info() or {})

    def __repr__(self) -> str:
        where = f"workers={self.workers}" if self.workers else f"scheduler={self.scheduler!r}"
        return f"Cluster({where})"


def connect(
    workers: int | None = None, scheduler: str | None = None, **kwargs: Any
) -> Cluster | None:
    """The Cluster for ``--workers N`` or ``--scheduler ADDRESS``; None for neither (the
    embedded default). Not started: use it in a ``with`` block, or pass it to :func:`run`."""
    if workers is None and scheduler is None:
        return None
    if workers is not None and scheduler is not None:
        raise ValueError(
            "--workers and --scheduler: give one, the number of local workers to start or the "
            "address of a running scheduler"
        )
    return Cluster(workers, scheduler, **kwargs)


# --------------------------------------------------------------------------- what to compute


def output_names(op: str, options: Mapping[str, Any]) -> tuple[str, ...]:
    """The outputs of an operation, in the order the command line writes them."""
    compute_uv = bool(options.get("compute_uv", True))
    rank = options.get("rank")
    if op == "vjp":
        return ("gA", "S")
    primal = ["U", "S", "Vh"] if compute_uv else ["S"]
    if rank is not None:
        primal.append("err")
    if op == "svd":
        return tuple(primal)
    return tuple(primal + ["d" + name for name in primal])


@dataclass(frozen=True)
class Job:
    """What every task computes: ``op`` ("svd", "jvp" or "vjp") with ``options``, the keyword
    arguments of the rule (full_matrices, compute_uv, rank, solver, device as a name, eps,
    degeneracy_tol, rank_tol, convention; full_matrices defaults to False, thin, as on the
    command line; an option given as None takes the rule's default).

    args maps the rule's array arguments to the plan's keys (A, dA; A, gU, gS, gVh, gerr and the
    factors U, S, Vh for vjp); by default each argument is read from the key of its own name.
    complex_args: the arguments cast to complex before computing (``--complex``; A for complex
    factors). cache_dir: JAX's persistent compilation cache on the workers; "auto" is the one
    the command line uses (svdgrad_cli.cli._common.cache_dir(), unless caching is off), None
    none.
    """

    op: str
    options: Mapping[str, Any] = field(default_factory=dict)
    args: Mapping[str, str] | None = None
    complex_args: tuple[str, ...] = ()
    cache_dir: str | None = "auto"

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"op: must be one of {', '.join(OPS)}, not {self.op!r}")
        unknown = sorted(set(self.options) - set(OPTIONS[self.op]))
        if unknown:
            raise ValueError(
                f"options: {', '.join(unknown)} not accepted by {self.op}; accepted: "
                f"{', '.join(OPTIONS[self.op])}"
            )
        device = self.options.get("device")
        if device is not None and not isinstance(device, str):
            raise ValueError(
                "options: device must be a name (cpu, gpu, auto): each worker picks its own"
            )
        bad = sorted(set(self.args or {}) - set(ARGS[self.op]))
        if bad:
            raise ValueError(
                f"args: {', '.join(bad)} not arguments of {self.op}; "
                f"accepted: {', '.join(ARGS[self.op])}"
            )
        # None means the rule's default for every option: leave it to the rule
        opts = {"full_matrices": False, **{k: v for k, v in self.options.items() if v is not None}}
        object.__setattr__(self, "options", opts)
        if self.cache_dir == "auto":
            object.__setattr__(self, "cache_dir", _cli_cache_dir())

    @property
    def names(self) -> tuple[str, ...]:
        return output_names(self.op, self.options)

    def key(self, arg: str) -> str:
        return arg if self.args is None else self.args.get(arg, arg)


def _cli_cache_dir() -> str | None:
    try:
        from .cli import _common
    except Exception:  # pragma: no cover - the command line's modules are not there
        return None
    if not getattr(_common, "USE_CACHE", True):
        return None
    if os.environ.get("SVDGRAD_NO_CACHE", "") not in ("", "0"):
        return None
    return os.path.abspath(str(_common.cache_dir()))


# --------------------------------------------------------------------------- on a worker

_CONFIGURED: set[str | None] = set()


def _setup_worker(cache_dir: str | None) -> None:
    """x64 on, and JAX's persistent compilation cache in ``cache_dir``, once per process."""
    if cache_dir in _CONFIGURED:
        return
    import jax

    jax.config.update("jax_enable_x64", True)
    if cache_dir and not jax.config.jax_compilation_cache_dir:
        try:
            os.makedirs(cache_dir, exist_ok=True)
            writable = os.access(cache_dir, os.W_OK)
        except OSError:
            writable = False
        if writable:
            jax.config.update("jax_compilation_cache_dir", cache_dir)
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
            jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _CONFIGURED.add(cache_dir)


def _as_complex(arr: np.ndarray) -> np.ndarray:
    if np.iscomplexobj(arr):
        return arr
    return arr.astype(np.complex64 if arr.dtype == np.float32 else np.complex128)


def _compute(job: Job, arrays: dict[str, np.ndarray]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The rule on one chunk, as the command line calls it: (results by name, Diagnostics)."""
    from . import api

    opts = dict(job.options)
    names = job.names
    for arg in job.complex_args:
        if arg in arrays:
            arrays[arg] = _as_complex(arrays[arg])
    A = arrays["A"]
    info: Any = None
    if job.op == "svd":
        rank = opts.get("rank")
        dev = api.resolve_device(opts.get("device"))
        if rank is None:
            import jax

            if dev is not None:
                A = jax.device_put(A, dev)
            out = api.svd(
                A,
                full_matrices=bool(opts.get("full_matrices", False)),
                compute_uv=bool(opts.get("compute_uv", True)),
            )
            values = tuple(out) if opts.get("compute_uv", True) else (out,)
        else:  # the Diagnostics of the cut come from a zero tangent, as in 'svdgrad svd'
            zero = np.zeros((1,) * (A.ndim - 2) + A.shape[-2:], A.dtype)
            values, _, info = api.svd_jvp(
                A,
                zero,
                rank=rank,
                solver=opts.get("solver", "auto"),
                compute_uv=bool(opts.get("compute_uv", True)),
                device=dev,
                return_info=True,
            )
    elif job.op == "jvp":
        primals, tangents, info = api.svd_jvp(A, arrays["dA"], return_info=True, **opts)
        values = (*primals, *tangents)
    else:
        factors = None
        if any(k in arrays for k in ("U", "S", "Vh")):
            factors = (arrays.get("U"), arrays.get("S"), arrays.get("Vh"))
        gA, info = api.svd_vjp(
            A,
            gU=arrays.get("gU"),
            gS=arrays.get("gS"),
            gVh=arrays.get("gVh"),
            gerr=arrays.get("gerr"),
            factors=factors,
            return_info=True,
            **opts,
        )
        values = (gA, info.S)
    results = dict(zip(names, values, strict=True))
    info_dict = {} if info is None else info._asdict()
    info_dict.pop("S", None)  # the singular values are a result, not a diagnostic
    return results, info_dict


def _run_chunk(
    job: Job,
    start: int,
    stop: int,
    readers: Mapping[str, Any],
    whole: Mapping[str, np.ndarray],
    only: str | None,
    sink: Any,
) -> dict[str, Any]:
    """One task: read rows [start:stop] of the chunked inputs, compute, and return the results
    (sink None) or write them (a _ZarrSink). Returns {"results" or None, "info", "rows"}."""
    _setup_worker(job.cache_dir)
    arrays = {arg: reader.read(start, stop) for arg, reader in readers.items()}
    arrays.update(whole)
    results, info = _compute(job, arrays)
    host = {k: np.asarray(v) for k, v in results.items() if only is None or k == only}
    info = {k: np.asarray(v) for k, v in info.items()}
    if sink is not None:
        sink.write(start, host)
        return {"results": None, "info": info, "rows": stop - start}
    return {"results": host, "info": info, "rows": stop - start}


def _probe(
    job: Job,
    shapes: Mapping[str, tuple[tuple[int, ...], str]],
    whole: Mapping[str, np.ndarray],
    only: str | None,
) -> dict[str, tuple[tuple[int, ...], str]]:
    """The shape after the first axis and the dtype of each output, for chunked inputs of
    these (shape, dtype) with a first axis of one: traced (jax.eval_shape, nothing compiled)."""
    _setup_worker(job.cache_dir)
    import jax

    specs = {
        arg: jax.ShapeDtypeStruct((1, *shape[1:]), np.dtype(dt))
        for arg, (shape, dt) in shapes.items()
    }

    def outputs(arrays: dict[str, Any]) -> dict[str, Any]:
        results, _ = _compute(job, {**arrays, **whole})
        return {k: v for k, v in results.items() if only is None or k == only}

    out = jax.eval_shape(outputs, specs)
    return {k: (tuple(v.shape[1:]), np.dtype(v.dtype).str) for k, v in out.items()}


def _peak_rss() -> int:
    """This process's peak resident memory in bytes."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


# --------------------------------------------------------------------------- readers


def _target_dtype(dtype: Any, label: str) -> np.dtype:
    """The dtype an input is computed in, as the command line reads it: bool and integers
    become float64, float16 float32; other floats and complex stay (native byte order)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "biu":
        return np.dtype(np.float64)
    if dtype.kind == "f" and dtype.itemsize == 2:
        return np.dtype(np.float32)
    if (dtype.kind == "f" and dtype.itemsize in (4, 8)) or (
        dtype.kind == "c" and dtype.itemsize in (8, 16)
    ):
        return dtype.newbyteorder("=")
    raise _input_error(
        f"{label}: has dtype {dtype}; only bool, integer, float and complex arrays are accepted"
    )


def _finish(raw: np.ndarray, dtype: np.dtype, label: str, start: int, stop: int) -> np.ndarray:
    arr = np.asarray(raw)
    if arr.dtype != dtype or not arr.flags.writeable:
        arr = arr.astype(dtype)
    if arr.dtype.kind in "fc" and arr.size and not np.isfinite(arr).all():
        nan = int(np.count_nonzero(np.isnan(arr)))
        inf = int(arr.size - np.count_nonzero(np.isfinite(arr))) - nan
        parts = [f"{nan} NaN"] * bool(nan) + [f"{inf} Inf"] * bool(inf)
        raise _input_error(
            f"{label}: rows [{start}:{stop}] contains {' and '.join(parts)} value(s) (of "
            f"{arr.size}); all entries must be finite"
        )
    return arr


@dataclass(frozen=True)
class H5Rows:
    """Rows of an HDF5 dataset, opened read-only by path inside each read (picklable)."""

    path: str
    dataset: str
    dtype: str
    label: str

    def read(self, start: int, stop: int) -> np.ndarray:
        import h5py

        try:
            with h5py.File(self.path, "r") as f:
                raw = f[self.dataset][start:stop]
        except Exception as exc:
            raise _input_error(
                f"{self.label}: cannot read rows [{start}:{stop}] on this worker "
                f"({_one_line(exc, 160)}); every worker must see the file at this path"
            ) from None
        return _finish(raw, np.dtype(self.dtype), self.label, start, stop)

    def read_all(self) -> np.ndarray:
        import h5py

        with h5py.File(self.path, "r") as f:
            raw = f[self.dataset][()]
        return _finish(raw, np.dtype(self.dtype), self.label, 0, len(np.atleast_1d(raw)))


@dataclass(frozen=True)
class NpyRows:
    """Rows of a .npy file through a read-only memory map opened inside each read."""

    path: str
    dtype: str
    label: str

    def read(self, start: int, stop: int) -> np.ndarray:
        try:
            mm = np.load(self.path, mmap_mode="r", allow_pickle=False)
            raw = np.array(mm[start:stop])
            del mm
        except Exception as exc:
            raise _input_error(
                f"{self.label}: cannot read rows [{start}:{stop}] on this worker "
                f"({_one_line(exc, 160)}); every worker must see the file at this path"
            ) from None
        return _finish(raw, np.dtype(self.dtype), self.label, start, stop)

    def read_all(self) -> np.ndarray:
        raw = np.load(self.path, allow_pickle=False)
        return _finish(raw, np.dtype(self.dtype), self.label, 0, len(np.atleast_1d(raw)))


@dataclass(frozen=True)
class Inline:
    """Rows the client read and sent with the task (``offset`` is their first row)."""

    data: np.ndarray
    offset: int = 0

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.data[start - self.offset : stop - self.offset]


_EXTS = (".h5", ".hdf5", ".npy", ".npz")


def _split(spec: str) -> tuple[str, str, str | None] | None:
    """(path, ext, inner) of ``PATH.ext[:INNER]``; a split whose path is a file wins."""
    low = spec.lower()
    found: list[tuple[int, str]] = []
    for ext in _EXTS:
        if low.endswith(ext):
            found.append((len(spec), ext))
        start = 0
        while (i := low.find(ext + ":", start)) != -1:
            found.append((i + len(ext), ext))
            start = i + 1
    found.sort(key=lambda p: (not os.path.isfile(spec[: p[0]]), p[0]))
    if not found:
        return None
    pos, ext = found[0]
    inner = spec[pos + 1 :] if pos < len(spec) else None
    return spec[:pos], ext, inner or None


def _h5_single_dataset(path: str) -> str | None:
    import h5py

    names: list[str] = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: names.append("/" + n) if isinstance(o, h5py.Dataset) else None)
    return names[0] if len(names) == 1 else None


def _worker_reader(spec: str, arg: str, dtype: Any) -> H5Rows | NpyRows | None:
    """A reader the workers can open themselves, or None when only the client can read it."""
    if not isinstance(spec, str) or spec in ("", "-"):
        return None
    parts = _split(spec)
    if parts is None:
        return None
    path, ext, inner = parts
    if not os.path.isfile(path):
        return None
    path = os.path.abspath(path)
    label = f"{arg}: '{spec}'"
    dt = np.dtype(dtype).str
    if ext == ".npy":
        return NpyRows(path, dt, label) if inner is None else None
    if ext in (".h5", ".hdf5"):
        dataset = ("/" + inner.strip("/")) if inner else _h5_single_dataset(path)
        return None if dataset is None else H5Rows(path, dataset, dt, label)
    return None


class _ClientRows:
    """A source only the client reads (an .npz member, standard input, an array)."""

    def __init__(self, source: Any) -> None:
        self.source = source

    def inline(self, start: int, stop: int) -> Inline:
        return Inline(np.asarray(self.source.read(start, stop)), start)


# --------------------------------------------------------------------------- destinations


@dataclass(frozen=True)
class Destination:
    """Where results go: kind "h5" or "zarr", the path, the group (None for the root)."""

    kind: str
    path: str
    group: str | None
    spec: str


def parse_destination(output: str | None) -> Destination | None:
    """``PATH.h5[:/GROUP]`` (or .hdf5) and ``PATH.zarr[:/GROUP]``; None for anything else."""
    if not output or output == "-":
        return None
    low = output.lower()
    for kind, exts in (("zarr", (".zarr",)), ("h5", (".h5", ".hdf5"))):
        for ext in exts:
            stripped = output.rstrip("/")
            if stripped.lower().endswith(ext) and len(stripped) > len(ext):
                return Destination(kind, stripped, None, output)
            i = low.find(ext + ":")
            if i > 0:
                group = output[i + len(ext) + 1 :].strip("/")
                return Destination(
                    kind, output[: i + len(ext)], "/" + group if group else None, output
                )
    return None


def _is_zarr_store(path: str) -> bool:
    return any(
        os.path.exists(os.path.join(path, name)) for name in ("zarr.json", ".zgroup", ".zarray")
    )


def _zarr_rows(size: int, row_bytes: int) -> int:
    """Rows per zarr chunk: a divisor of the task's rows (so a task writes whole chunks only),
    about _ZARR_CHUNK_BYTES of the largest output, or the task's rows themselves."""
    target = max(1, _ZARR_CHUNK_BYTES // max(1, row_bytes))
    if size <= target:
        return size
    best = max((d for d in range(1, target + 1) if size % d == 0), default=size)
    return best if best * 4 >= target else size


def _create_array(group: Any, name: str, shape: tuple, chunks: tuple, dtype: np.dtype) -> None:
    if name in group:
        del group[name]
    if hasattr(group, "create_array"):  # zarr 3
        group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, overwrite=True)
    else:  # zarr 2
        group.create_dataset(name, shape=shape, chunks=chunks, dtype=dtype, overwrite=True)


@dataclass(frozen=True)
class _ZarrSink:
    """Where a task writes its rows of each output: arrays of the store at ``root``, a temporary
    directory that holds the marker file while the run wants the writes.

    A write announces itself with a file of its own beside the marker, and looks at the marker
    only after that: a run that is abandoned (marker gone) waits for the announced writes to end
    before it removes the directory, and a write that finds the marker gone writes nothing."""

    root: str
    group: str | None

    def _path(self, name: str) -> str:
        return f"{self.group.strip('/')}/{name}" if self.group else name

    def write(self, start: int, host: Mapping[str, np.ndarray]) -> None:
        import zarr

        marker = os.path.join(self.root, _MARKER)
        busy = os.path.join(self.root, f"{_WRITING}{uuid.uuid4().hex}")
        try:
            os.close(os.open(busy, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except OSError:
            return  # the directory is gone: the run was abandoned
        try:
            if not os.path.exists(marker):
                return
            name = ""
            try:
                for name, arr in host.items():
                    z = zarr.open_array(store=self.root, path=self._path(name), mode="r+")
                    z[start : start + arr.shape[0]] = arr
            except OSError as exc:
                if not os.path.exists(marker):
                    return
                raise _output_error(
                    f"output: cannot write the rows from {start} of '{name}' into {self.root} "
                    f"on this worker ({_one_line(exc, 160)})"
                ) from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(busy)


def _exchange(a: str, b: str) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
    renameat2.restype = ctypes.c_int
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


class _ZarrTarget:
    """A .zarr destination written through a temporary directory beside it.

    open() checks the destination, copies an existing store (its other groups and arrays are
    kept, as an existing .h5 file is updated) and creates the arrays; commit() moves the
    directory into place; discard() removes it."""

    def __init__(self, dest: Destination, inputs: Iterable[str | None]) -> None:
        self.dest = dest
        self.label = f"output '{dest.spec}'"
        self.path = os.path.abspath(dest.path)
        self.tmp: str | None = None
        directory = os.path.dirname(self.path)
        if not os.path.isdir(directory):
            raise _output_error(
                f"{self.label}: directory '{directory}' does not exist; create it or choose "
                "another path"
            )
        if not os.access(directory, os.W_OK | os.X_OK):
            raise _output_error(
                f"{self.label}: directory '{directory}' is not writable; choose another path"
            )
        if os.path.lexists(self.path) and not (
            os.path.isdir(self.path) and _is_zarr_store(self.path)
        ):
            if os.path.isdir(self.path) and not os.listdir(self.path):
                pass  # an empty directory becomes the store
            else:
                raise _output_error(
                    f"{self.label}: exists and is not a zarr store; delete it or choose "
                    "another path"
                )
        for spec in inputs:
            parts = _split(spec) if spec else None
            if parts is not None and os.path.abspath(parts[0]).startswith(self.path + os.sep):
                raise _output_error(
                    f"{self.label}: the input '{spec}' is inside it; choose another output"
                )

    def open(self, specs: Mapping[str, tuple[tuple[int, ...], np.dtype]], rows: int) -> None:
        zarr = _zarr()
        parent, name = os.path.split(self.path)
        try:
            self.tmp = tempfile.mkdtemp(prefix=f".{name}.", suffix=_TMP_SUFFIX, dir=parent)
            if os.path.isdir(self.path) and _is_zarr_store(self.path):
                shutil.copytree(self.path, self.tmp, dirs_exist_ok=True)
            root = zarr.open_group(store=self.tmp, mode="a")
            group = root.require_group(self.dest.group.strip("/")) if self.dest.group else root
            for out, (shape, dtype) in specs.items():
                chunks = (min(rows, shape[0]), *shape[1:])
                _create_array(group, out, shape, chunks, np.dtype(dtype))
            with open(os.path.join(self.tmp, _MARKER), "w"):
                pass
        except BaseException as exc:
            self.discard()
            if isinstance(exc, OSError):
                raise _output_error(f"{self.label}: cannot write ({_one_line(exc, 160)})") from None
            raise

    @property
    def sink(self) -> _ZarrSink:
        assert self.tmp is not None
        return _ZarrSink(self.tmp, self.dest.group)

    def commit(self) -> None:
        assert self.tmp is not None
        tmp, self.tmp = self.tmp, None
        try:
            os.unlink(os.path.join(tmp, _MARKER))
            for name in os.listdir(tmp):  # left by workers that died while writing
                if name.startswith(_WRITING):
                    os.unlink(os.path.join(tmp, name))
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o777 & ~umask)
            if not os.path.lexists(self.path):
                os.rename(tmp, self.path)
            elif _exchange(tmp, self.path):
                shutil.rmtree(tmp, ignore_errors=True)  # the old store, now at tmp
            else:
                old = tmp + ".old"
                os.rename(self.path, old)
                try:
                    os.rename(tmp, self.path)
                except BaseException:
                    os.rename(old, self.path)
                    raise
                shutil.rmtree(old, ignore_errors=True)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, OSError):
                raise _output_error(f"{self.label}: cannot write ({_one_line(exc, 160)})") from None
            raise

    def discard(self, wait: float = 60.0) -> None:
        """Remove the temporary directory, once the writes already under way have ended (at most
        ``wait`` seconds: a worker that died while writing never ends its own)."""
        tmp, self.tmp = self.tmp, None
        if tmp is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(tmp, _MARKER))  # writes that start now write nothing
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                if not any(n.startswith(_WRITING) for n in os.listdir(tmp)):
                    break
            except OSError:
                break
            time.sleep(_POLL)
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- progress


class _Progress:
    """A rich progress bar on standard error (after the first second): matrices done, their
    rate, the time left and the number of workers."""

    def __init__(self, total: int, label: str, console: Any, enabled: bool) -> None:
        self.total, self.label, self.console, self.enabled = total, label, console, enabled
        self.start = time.monotonic()
        self.bar: Any = None
        self.task: Any = None
        self.done = 0
        self.workers = 0

    def update(self, done: int | None = None, workers: int | None = None) -> None:
        if done is not None:
            self.done = done
        if workers is not None:
            self.workers = workers
        if not self.enabled:
            return
        if self.bar is None:
            if time.monotonic() - self.start < 1.0 or self.done >= self.total:
                return
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn(self.label),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[workers]}"),
                console=self.console or Console(stderr=True),
                transient=False,
            )
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=self.total, rate="", workers="")
        elapsed = max(time.monotonic() - self.start, 1e-9)
        self.bar.update(
            self.task,
            completed=self.done,
            rate=f"{self.done / elapsed:,.0f} matrices/s",
            workers=f"{self.workers} worker{'s' * (self.workers != 1)}",
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


@contextlib.contextmanager
def _quiet_logs(enabled: bool) -> Any:
    """dask's own logging (and asyncio's, for the tasks a closing client drops) off while a run
    reports through its exceptions."""
    if not enabled:
        yield
        return
    names = ["distributed", "asyncio"] + [
        name for name in list(logging.root.manager.loggerDict) if name.startswith("distributed.")
    ]
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


# --------------------------------------------------------------------------- the run


@dataclass
class RunResult:
    """infos: each chunk's Diagnostics (without S), in the order of the rows; chunk: matrices
    per task; tasks; workers: the most workers seen; seconds; peak_memory: each live worker
    process's peak resident memory in bytes, by worker address."""

    infos: list[dict[str, Any]]
    chunk: int
    tasks: int
    workers: int
    seconds: float
    peak_memory: dict[str, int]


def _default_chunk(cluster: Cluster, batch: int, m: int, n: int, itemsize: int) -> int:
    """Matrices per task: a quarter of a worker thread's memory, with room for temporaries, and
    at least four tasks per thread, so that a lost worker costs little and all stay busy."""
    workers = (cluster.workers_info() or {}).values()
    threads = sum(int(w.get("nthreads", 1)) for w in workers) or 1
    per_thread = []
    for w in workers:
        limit = int(w.get("memory_limit") or 0)
        if limit > 0:
            per_thread.append(limit // max(1, int(w.get("nthreads", 1))))
    if per_thread:
        memory = min(per_thread)
    else:
        from .cli._stream import available_memory

        memory = available_memory() // threads
    per_matrix = max(1, m * n * itemsize * _WORK_FACTOR)
    by_memory = max(1, memory // 4 // per_matrix)
    balance = max(1, math.ceil(batch / (4 * threads)))
    return int(max(1, min(batch, by_memory, balance)))


def _wait_for_workers(cluster: Cluster, timeout: float) -> None:
    try:
        cluster.client.wait_for_workers(1, timeout=timeout)
    except (TimeoutError, OSError) as exc:
        if cluster.client.status not in ("running", "connecting", "newly-created"):
            raise ClusterError(
                f"lost the dask scheduler at {cluster.address} ({_one_line(exc, 120)})"
            ) from None
        raise ClusterError(
            f"no dask worker joined the scheduler at {cluster.address} within {timeout:g} s; "
            f"start workers with 'dask worker {cluster.address}'"
        ) from None


def _task_failure(exc: BaseException, rows: tuple[int, int], address: str) -> Exception:
    """The error to raise for a failed task: cluster faults become ClusterError, the task's
    own exceptions (bad input, bad factors) go through unchanged."""
    name = type(exc).__name__
    start, stop = rows
    if name == "KilledWorker":
        return ClusterError(
            f"rows [{start}:{stop}] were lost with every worker that ran them (their process "
            "died each time: out of memory? try a smaller chunk)"
        )
    comm = type(exc).__module__.startswith("distributed.") and isinstance(exc, OSError)
    if comm or name in ("CancelledError", "FutureCancelledError", "CommClosedError"):
        detail = _one_line(exc, 120) if str(exc) else name
        return ClusterError(
            f"lost contact with the dask scheduler at {address} ({detail}); no output was written"
        )
    return exc if isinstance(exc, Exception) else ClusterError(_one_line(exc))


def run(
    plan: Any,
    job: Job,
    output: str,
    *,
    cluster: Cluster | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    chunk: int | None = None,
    only: str | None = None,
    inputs: Iterable[str | None] = (),
    on_info: Callable[[Mapping[str, Any]], None] | None = None,
    label: str = "",
    progress: bool = True,
    console: Any = None,
    window: int = 2,
    start_timeout: float = 120.0,
    lost_timeout: float = 20.0,
    quiet: bool = True,
) -> RunResult:
    """Compute ``job`` on every chunk of ``plan`` on a dask cluster and write ``output``.

    plan: ``.batch`` (the length of A's first axis), ``.chunked`` ({key: source} cut along that
    axis: an object with ``spec`` and ``dtype``, read by the workers when the spec is an .h5
    dataset or a .npy file, else with ``read(start, stop)``, called by the client) and
    ``.whole`` ({key: array} broadcast against every chunk), as svdgrad_cli.cli._stream.plan
    returns it. The keys are those ``job.args`` names.
    output: ``PATH.h5[:/GROUP]`` (written by the client) or ``PATH.zarr[:/GROUP]`` (written by
    the workers); ``only`` writes one output. ``inputs``: the source specs of the run, which
    the output must not overwrite.
    cluster, or workers / scheduler: where to run (a Cluster the caller holds is left open).
    chunk: matrices per task (default: by the workers' memory, at least 4 tasks a thread).
    on_info: called on the client with each chunk's Diagnostics as it arrives; an exception
    there stops the run (nothing is written).
    window: tasks in flight per worker thread (results waiting for the client stay bounded).
    start_timeout: seconds to wait for a first worker; lost_timeout: seconds with no worker at
    all before the run fails.

    Returns a RunResult. Raises MissingExtra, ClusterError (SchedulerUnreachable), the task's
    own exceptions (InputError, ValueError from the rules), OutputError for the destination.
    """
    dest = parse_destination(output)
    if dest is None:
        raise _output_error(
            f"output '{output}': a dask run writes PATH.h5[:/GROUP] (or .hdf5) or "
            "PATH.zarr[:/GROUP]; choose one of those"
        )
    if chunk is not None and int(chunk) < 1:
        raise ValueError(f"chunk: must be at least 1, not {chunk}")
    names = job.names
    if only is not None and only not in names:
        raise ValueError(f"only: unknown output '{only}'; choose one of: {', '.join(names)}")
    inputs = [s for s in inputs if s]
    if dest.kind == "h5":  # the writer checks the rest when the first chunk arrives
        directory = os.path.dirname(os.path.abspath(dest.path))
        if not os.path.isdir(directory):
            raise _output_error(
                f"output '{output}': directory '{directory}' does not exist; create it or "
                "choose another path"
            )
    zarr_target = _ZarrTarget(dest, inputs) if dest.kind == "zarr" else None
    if zarr_target is not None:
        _zarr()  # before starting anything
    own = cluster is None
    if own:
        cluster = connect(workers, scheduler)
        if cluster is None:
            raise ValueError("give workers=N or scheduler=ADDRESS (or a Cluster)")
    assert cluster is not None
    with _quiet_logs(quiet):
        try:
            if own:
                cluster.start()
            elif cluster.client is None:
                cluster.start()
            return _run(
                cluster,
                plan,
                job,
                dest,
                zarr_target,
                chunk=chunk,
                only=only,
                inputs=inputs,
                on_info=on_info,
                label=label or job.op,
                progress=progress,
                console=console,
                window=window,
                start_timeout=start_timeout,
                lost_timeout=lost_timeout,
            )
        finally:
            if own:
                cluster.close()


def _run(
    cluster: Cluster,
    plan: Any,
    job: Job,
    dest: Destination,
    zarr_target: _ZarrTarget | None,
    *,
    chunk: int | None,
    only: str | None,
    inputs: list[str],
    on_info: Callable[[Mapping[str, Any]], None] | None,
    label: str,
    progress: bool,
    console: Any,
    window: int,
    start_timeout: float,
    lost_timeout: float,
) -> RunResult:
    distributed = _distributed()
    client = cluster.client
    began = time.monotonic()
    B = int(plan.batch)
    if B < 1:
        raise ValueError("plan: the stack holds no matrices")
    keys = {arg: job.key(arg) for arg in ARGS[job.op]}
    by_key = {v: k for k, v in keys.items()}
    unknown = [k for k in (*plan.chunked, *plan.whole) if k not in by_key]
    if unknown:
        raise ValueError(
            f"plan: inputs {', '.join(unknown)} are not arguments of {job.op} (map them with "
            "Job.args)"
        )
    if "A" not in {by_key[k] for k in plan.chunked}:
        raise ValueError("plan: A must be cut along its first axis (a stack of matrices)")
    worker_readers: dict[str, Any] = {}
    client_readers: dict[str, _ClientRows] = {}
    for key, src in plan.chunked.items():
        arg = by_key[key]
        reader = _worker_reader(getattr(src, "spec", None), key, src.dtype)
        if reader is not None:
            worker_readers[arg] = reader
        else:
            client_readers[arg] = _ClientRows(src)
    A = plan.chunked[keys["A"]]
    m, n = A.shape[-2:]
    work = np.dtype(A.dtype)
    if "A" in job.complex_args:
        work = np.result_type(work, np.complex64)
    itemsize = work.itemsize

    _wait_for_workers(cluster, start_timeout)
    watch = _Watch(cluster, lost_timeout)
    watch.poll(force=True)
    size = chunk if chunk is not None else _default_chunk(cluster, B, m, n, itemsize)
    size = max(1, min(int(size), B))
    whole: dict[str, Any] = {}
    for key, arr in plan.whole.items():
        arr = np.asarray(arr)
        if arr.nbytes > _INLINE_BYTES:
            whole[by_key[key]] = client.scatter(arr, broadcast=True, hash=False)
        else:
            whole[by_key[key]] = arr

    def readers_for(start: int, stop: int) -> dict[str, Any]:
        out: dict[str, Any] = dict(worker_readers)
        for arg, cr in client_readers.items():
            out[arg] = cr.inline(start, stop)
        return out

    token = uuid.uuid4().hex[:12]
    sink = None
    if zarr_target is not None:
        inputs_meta = {
            by_key[key]: (tuple(src.shape), np.dtype(src.dtype).str)
            for key, src in plan.chunked.items()
        }
        shapes = client.submit(
            _probe, job, inputs_meta, whole, only, pure=False, key=f"svdgrad-probe-{token}"
        )
        try:
            shapes_out = _result(shapes, watch, (0, 1))
        finally:
            shapes.release()
        specs = {k: ((B, *shape), np.dtype(dt)) for k, (shape, dt) in shapes_out.items()}
        row_bytes = max(math.prod(s[1:]) * d.itemsize for s, d in specs.values())
        rows = _zarr_rows(size, row_bytes)
        zarr_target.open(specs, rows)
        sink = zarr_target.sink

    bounds = [(s, min(B, s + size)) for s in range(0, B, size)]
    infos: dict[int, dict[str, Any]] = {}
    pending: dict[Any, int] = {}
    ac = distributed.as_completed(loop=client.loop)
    bar = _Progress(B, label, console, progress)
    writer: Any = None
    done_rows = 0
    next_index = 0
    try:
        while next_index < len(bounds) or pending:
            watch.poll()
            while next_index < len(bounds) and len(pending) < max(1, window * watch.threads):
                start, stop = bounds[next_index]
                fut = client.submit(
                    _run_chunk,
                    job,
                    start,
                    stop,
                    readers_for(start, stop),
                    whole,
                    only,
                    sink,
                    key=f"svdgrad-{job.op}-{token}-{next_index}",
                    pure=False,
                )
                pending[fut] = next_index
                ac.add(fut)
                next_index += 1
            batch = ac.next_batch(block=False)
            if not batch:
                watch.check()
                bar.update(workers=watch.n)
                time.sleep(_POLL)
                continue
            for fut in batch:
                index = pending.pop(fut)
                rows = bounds[index]
                out = _result(fut, watch, rows)
                fut.release()
                info = out["info"]
                if on_info is not None:
                    on_info(info)
                infos[index] = info
                if out["results"] is not None:
                    host = out["results"]
                    if writer is None:
                        H5StreamWriter = _io("H5StreamWriter")
                        specs = {k: ((B, *v.shape[1:]), v.dtype) for k, v in host.items()}
                        writer = H5StreamWriter(output_spec(dest), specs, inputs=inputs)
                        writer.__enter__()
                    for name in writer.specs:
                        writer.write(name, rows[0], host[name][: rows[1] - rows[0]])
                done_rows += rows[1] - rows[0]
                bar.update(done=done_rows, workers=watch.n)
        bar.close()
        peak = _peak_memory(client)
        if writer is not None:
            w, writer = writer, None
            w.__exit__(None, None, None)
        if zarr_target is not None:
            zarr_target.commit()
    except BaseException as exc:
        bar.close()
        if pending:
            with contextlib.suppress(Exception):
                client.sync(client._cancel, list(pending), force=True, callback_timeout=3)
        if writer is not None:
            writer.__exit__(type(exc), exc, exc.__traceback__)
        if zarr_target is not None:
            zarr_target.discard()
        raise
    finally:
        for value in whole.values():
            if hasattr(value, "release"):
                with contextlib.suppress(Exception):
                    value.release()
    return RunResult(
        infos=[infos[i] for i in sorted(infos)],
        chunk=size,
        tasks=len(bounds),
        workers=watch.most,
        seconds=time.monotonic() - began,
        peak_memory=peak,
    )


def output_spec(dest: Destination) -> str:
    """The destination spec as the .h5 writer takes it."""
    return dest.path if dest.group is None else f"{dest.path}:{dest.group}"


class _Watch:
    """What the scheduler says about its workers, asked at most every ``every`` seconds, and
    the faults that end a run: the client closed, the scheduler silent or no worker at all for
    ``lost_timeout`` seconds."""

    def __init__(self, cluster: Cluster, lost_timeout: float, every: float = 0.5) -> None:
        self.cluster = cluster
        self.lost_timeout = float(lost_timeout)
        self.every = every
        now = time.monotonic()
        self.asked = -math.inf
        self.answered = self.with_workers = now
        self.n = self.threads = self.most = 0

    def poll(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.asked < self.every:
            return
        self.asked = now
        info = self.cluster.workers_info()
        if info is None:
            return
        self.answered = time.monotonic()
        self.n = len(info)
        self.threads = sum(int(w.get("nthreads", 1)) for w in info.values())
        self.most = max(self.most, self.n)
        if self.n:
            self.with_workers = self.answered

    def check(self) -> None:
        self.poll()
        address = self.cluster.address
        client = self.cluster.client
        now = time.monotonic()
        if client.status in ("closing", "closed") or now - self.answered > self.lost_timeout:
            raise ClusterError(
                f"lost the connection to the dask scheduler at {address}; no output was written"
            )
        if now - self.with_workers > self.lost_timeout:
            raise ClusterError(
                f"no dask worker left at {address} for {now - self.with_workers:.0f} s (every "
                "worker died or left); no output was written"
            )


def _result(fut: Any, watch: _Watch, rows: tuple[int, int]) -> Any:
    """A task's result; while it is not there (its worker died with it, and it is computed
    again), the cluster is watched. Cluster faults become ClusterError."""
    address = str(watch.cluster.address)
    while True:
        try:
            return fut.result(timeout=1.0)
        except TimeoutError:
            watch.check()
        except Exception as exc:
            failure = _task_failure(exc, rows, address)
            if failure is exc:
                raise
            raise failure from None


def _peak_memory(client: Any) -> dict[str, int]:
    try:
        return {k: int(v) for k, v in client.run(_peak_rss).items()}
    except Exception:
        return {}


# --------------------------------------------------------------------------- from Python


@dataclass
class _Source:
    """An input opened by compute(): its shape, its dtype, a spec for the workers (.h5, .npy)
    or an array for the client."""

    arg: str
    spec: str | None
    shape: tuple[int, ...]
    dtype: np.dtype
    array: np.ndarray | None = None

    def _reader(self) -> H5Rows | NpyRows:
        reader = _worker_reader(self.spec, self.arg, self.dtype)
        assert reader is not None
        return reader

    def read(self, start: int, stop: int) -> np.ndarray:
        if self.array is not None:
            return self.array[start:stop]
        return self._reader().read(start, stop)

    def read_all(self) -> np.ndarray:
        if self.array is not None:
            return self.array
        return self._reader().read_all()


@dataclass
class _Plan:
    batch: int
    chunked: dict[str, Any]
    whole: dict[str, np.ndarray]


def _open(arg: str, source: Any) -> _Source:
    vector = _CORE.get(arg, 2) < 2
    if not isinstance(source, str):
        arr = np.asarray(source)
        target = _target_dtype(arr.dtype, arg)
        return _Source(arg, None, arr.shape, target, arr.astype(target, copy=False))
    label = f"{arg}: '{source}'"
    parts = _split(source) if source != "-" else None
    if parts is not None and parts[1] in (".h5", ".hdf5", ".npy"):
        path, ext, inner = parts
        if not os.path.isfile(path):
            raise _input_error(f"{label}: file not found; check the path")
        if ext == ".npy":
            mm = np.load(path, mmap_mode="r", allow_pickle=False)
            shape, dtype = mm.shape, mm.dtype
            del mm
        else:
            import h5py

            dataset = ("/" + inner.strip("/")) if inner else _h5_single_dataset(path)
            if dataset is None:
                raise _input_error(f"{label}: name the dataset as '{path}:/DATASET'")
            with h5py.File(path, "r") as f:
                if dataset not in f or not hasattr(f[dataset], "shape"):
                    raise _input_error(f"{label}: no dataset '{dataset}' in {path}")
                shape, dtype = f[dataset].shape, f[dataset].dtype
            source = f"{path}:{dataset}"
        return _Source(arg, source, tuple(shape), _target_dtype(dtype, label))
    arr = _io("read_source")(source, arg=arg, vector=vector)
    return _Source(arg, None, arr.shape, np.dtype(arr.dtype), arr)


def open_plan(sources: Mapping[str, Any]) -> _Plan:
    """A plan for compute(): {argument: spec or array}, A first; the inputs whose first axis
    is A's are cut with it, those that broadcast against a chunk are read whole."""
    opened = {arg: _open(arg, src) for arg, src in sources.items() if src is not None}
    A = opened.get("A")
    if A is None:
        raise ValueError("A: required")
    if len(A.shape) < 3:
        raise ValueError(
            f"A: has shape {A.shape}; a dask run cuts a stack (B, ..., m, n) along its first axis"
        )
    B = A.shape[0]
    if B < 1 or 0 in A.shape:
        raise ValueError(f"A: has shape {A.shape}; it holds no matrices")
    plan = _Plan(B, {"A": A}, {})
    for arg, src in opened.items():
        if arg == "A":
            continue
        batch_nd = len(src.shape) - _CORE.get(arg, 2)
        if batch_nd == len(A.shape) - 2 and src.shape[0] == B and B != 1:
            plan.chunked[arg] = src
        elif batch_nd < len(A.shape) - 2 or (batch_nd == len(A.shape) - 2 and src.shape[0] == 1):
            plan.whole[arg] = src.read_all()
        else:
            raise ValueError(
                f"{arg}: shape {src.shape} cannot be cut along A's first axis ({B}) nor "
                "broadcast against it"
            )
    return plan


def compute(
    op: str,
    output: str,
    *,
    A: Any,
    dA: Any = None,
    gU: Any = None,
    gS: Any = None,
    gVh: Any = None,
    gerr: Any = None,
    factors: Any = None,
    workers: int | None = None,
    scheduler: str | None = None,
    cluster: Cluster | None = None,
    chunk: int | None = None,
    only: str | None = None,
    complex_: bool = False,
    progress: bool = False,
    console: Any = None,
    on_info: Callable[[Mapping[str, Any]], None] | None = None,
    window: int = 2,
    start_timeout: float = 120.0,
    lost_timeout: float = 20.0,
    **options: Any,
) -> RunResult:
    """Run ``op`` ("svd", "jvp", "vjp") on a stack on a dask cluster, from Python.

    Inputs are specs (``PATH.h5:/DATASET``, ``PATH.npy``, ``PATH.npz:NAME``) or arrays; factors
    is (U, S, Vh), or an .h5 group spec holding them. options: the rule's keyword arguments
    (full_matrices, compute_uv, rank, solver, eps, degeneracy_tol, rank_tol, convention,
    device). Example::

        compute("vjp", "grad.zarr", A="stack.h5:/A", gS="stack.h5:/gS", workers=2)
    """
    sources: dict[str, Any] = {"A": A, "dA": dA, "gU": gU, "gS": gS, "gVh": gVh, "gerr": gerr}
    if factors is not None:
        if isinstance(factors, str):
            path, _, group = factors.partition(":")
            group = "/" + group.strip("/") if group.strip("/") else ""
            factors = tuple(f"{path}:{group}/{name}" for name in ("U", "S", "Vh"))
        sources.update(zip(("U", "S", "Vh"), factors, strict=True))
    allowed = set(ARGS[op]) if op in ARGS else set()
    given = {k: v for k, v in sources.items() if v is not None}
    extra = sorted(set(given) - allowed)
    if extra:
        raise ValueError(f"{', '.join(extra)}: not inputs of {op}")
    plan = open_plan(given)
    complex_args = ()
    factor_complex = any(
        np.dtype(src.dtype).kind == "c" for k, src in plan.chunked.items() if k in "U S Vh".split()
    ) or any(np.iscomplexobj(v) for k, v in plan.whole.items() if k in ("U", "S", "Vh"))
    if complex_:
        complex_args = tuple(plan.chunked) + tuple(plan.whole) if op != "vjp" else ("A",)
    elif op == "vjp" and factor_complex:
        complex_args = ("A",)
    job = Job(op, options, complex_args=complex_args)
    return run(
        plan,
        job,
        output,
        cluster=cluster,
        workers=workers,
        scheduler=scheduler,
        chunk=chunk,
        only=only,
        inputs=[v for v in given.values() if isinstance(v, str)],
        on_info=on_info,
        progress=progress,
        console=console,
        window=window,
        start_timeout=start_timeout,
        lost_timeout=lost_timeout,
    )
