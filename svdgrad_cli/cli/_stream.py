"""One code path for svd, jvp and vjp: the inputs are a stream of chunks along A's first axis;
each chunk is computed as one jitted batch and its results written before the next.

:func:`execute` is what a command calls. It chooses between

* streaming proper, when the output is an .h5 file and A is a stack (ndim >= 3): the stack is
  cut along its first axis, every input with the same first axis is read chunk by chunk (.h5
  datasets are sliced, .npy files memory-mapped), the other inputs, which broadcast, are read
  once, and the results go straight into the output .h5 datasets. Peak memory is bounded by the
  chunk size, not by the stack size. The output file appears only when every chunk is written
  (io.H5StreamWriter writes to a temporary file and renames);
* and the in-memory case (any other output, or inputs that cannot be cut): the inputs are read
  whole and are a stream of one chunk, whose results are delivered as ``deliver`` does.

Both run the same loop with the same callbacks, so a command has one code path.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..io import (
    H5StreamWriter,
    array_source,
    check_single_stdin,
    is_h5_dest,
    open_source_lazy,
    parse_source,
    read_source,
    read_sources,
)
from ..io.spec import NPZ, STD
from . import _common as c
from . import _kept

__all__ = [
    "Cluster",
    "Outcome",
    "Plan",
    "available_memory",
    "default_chunk",
    "execute",
    "is_h5_dest",
    "job",
    "memory_plan",
    "merge_infos",
    "plan",
]

H5_SUFFIXES = (".h5", ".hdf5")

# per matrix in a chunk: inputs, outputs and the temporaries of the rules, in units of one
# (m, n) matrix of the working dtype
_WORK_FACTOR = 24

Arrays = dict[str, np.ndarray]
Sources = Mapping[str, tuple[str | None, bool]]
Extra = Mapping[str, tuple[np.ndarray, int]]


def available_memory() -> int:
    """Bytes of memory available now (MemAvailable), or 2 GiB when that cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2 << 30


def default_chunk(batch: int, m: int, n: int, itemsize: int) -> int:
    """As many matrices as fit in a quarter of the available memory, with room for temporaries."""
    per_matrix = max(1, m * n * itemsize * _WORK_FACTOR)
    return int(max(1, min(batch, available_memory() // 4 // per_matrix)))


# --------------------------------------------------------------------------- plans


@dataclass
class Plan:
    """What to compute: the inputs cut along A's first axis (``chunked``, ``batch`` rows) and
    the inputs read whole. An in-memory plan (``streamed`` False) has every input in ``whole``
    and is one chunk.

    ``A`` and ``get(arg)`` give an input's shape, ndim and dtype (as read) whichever it is.
    """

    batch: int
    chunked: dict[str, Any]
    whole: dict[str, np.ndarray] = field(default_factory=dict)
    streamed: bool = True
    first: str | None = None  # the argument that is A (default: the first chunked one)

    def close(self) -> None:
        for src in self.chunked.values():
            src.close()

    def __enter__(self) -> Plan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def A(self) -> Any:
        if self.first is not None:
            return self.get(self.first)
        return next(iter(self.chunked.values()))

    def get(self, arg: str) -> Any:
        """The source (for its shape) of an input, or None when it was not given."""
        if arg in self.chunked:
            return self.chunked[arg]
        return self.whole.get(arg)


def _given(sources: Sources) -> list[tuple[str, str, bool]]:
    return [(arg, spec, vec) for arg, (spec, vec) in sources.items() if spec is not None]


def memory_plan(
    sources: Sources, read: Mapping[str, np.ndarray] | None = None, extra: Extra | None = None
) -> Plan:
    """Every input read whole: a plan of one chunk. The first source is A.

    read: inputs already read whole (by a streaming plan that fell back); they are not read
    again (standard input cannot be). extra: inputs already in memory, as for :func:`execute`.
    """
    items = _given(sources)
    read = dict(read or {})
    arrays = read_sources([item for item in items if item[0] not in read])
    arrays = {arg: read[arg] if arg in read else arrays[arg] for arg, _, _ in items}
    arrays.update({arg: arr for arg, (arr, _) in (extra or {}).items()})
    return Plan(1, {}, arrays, streamed=False, first=items[0][0])


def _open_plan(
    output: str | None,
    chunk: int | None,
    sources: Sources,
    read: dict[str, np.ndarray],
    extra: Extra | None = None,
) -> Plan | None:
    if not is_h5_dest(output):
        if chunk is not None:
            raise c.UsageProblem(
                "--chunk: streaming writes into an .h5 file; add -o PATH.h5[:/GROUP] or drop "
                "--chunk"
            )
        return None
    p = _plan(sources, read, extra)
    if p is None and chunk is not None:
        c.warn(
            "--chunk: A is not a stack whose first axis the other inputs share; computing in memory"
        )
    return p


def plan(sources: Sources) -> Plan | None:
    """A streaming plan for {argument: (SOURCE or None, is-a-vector)}, the first being A.

    None when A is not a stack, or when another input has batch dimensions that cannot be cut
    along A's first axis (it then takes the in-memory path).
    """
    return _plan(sources, {})


def _open_source(spec: str, arg: str, vector: bool, read: dict[str, np.ndarray]) -> Any:
    """A source to cut along its first axis: .npy and .h5 files lazily; vectors (small), .npz
    members and standard input (which cannot be sliced) read whole now, and kept in ``read``."""
    if vector or parse_source(spec, arg).kind in (STD, NPZ):
        read[arg] = read_source(spec, arg=arg, vector=vector)
        return array_source(read[arg], spec, arg, vector=vector)
    return open_source_lazy(spec, arg=arg)


def _plan(sources: Sources, read: dict[str, np.ndarray], extra: Extra | None = None) -> Plan | None:
    """plan(); what it read whole is left in ``read`` (for the in-memory path, when None)."""
    items = _given(sources)
    check_single_stdin([s for _, s, _ in items], [a for a, _, _ in items])
    arg_a, spec_a, _ = items[0]
    if spec_a == "-":
        return None
    A = _open_source(spec_a, arg_a, False, read)
    if A.ndim < 3:
        A.close()
        return None
    result = Plan(A.shape[0], {arg_a: A}, first=arg_a)

    def others() -> Iterator[tuple[str, int, Any]]:
        """(argument, its core dimensions, its source), opened one at a time."""
        for arg, spec, vector in items[1:]:
            yield arg, 1 if vector else 2, _open_source(spec, arg, vector, read)
        for arg, (arr, core) in (extra or {}).items():
            yield arg, core, array_source(arr, arg, arg, core=core)

    try:
        for arg, core, src in others():
            batch_nd = len(src.shape) - core
            if batch_nd == A.ndim - 2 and src.shape[0] == A.shape[0] and A.shape[0] != 1:
                result.chunked[arg] = src
            elif batch_nd < A.ndim - 2 or (batch_nd == A.ndim - 2 and src.shape[0] == 1):
                # broadcasts against every chunk: read it once
                with src:
                    result.whole[arg] = src.read(0, src.batch_len)
            else:
                src.close()
                result.close()
                return None
    except BaseException:
        result.close()
        raise
    return result


# --------------------------------------------------------------------------- sinks


class _H5Sink:
    """Each chunk's rows straight into the .h5 datasets (created at the first chunk)."""

    def __init__(self, output: str, only: str | None, inputs: list[str | None], batch: int):
        self.output, self.only, self.inputs, self.batch = output, only, inputs, batch
        self.writer: H5StreamWriter | None = None

    def write(self, start: int, count: int, host: Arrays) -> None:
        if self.writer is None:
            names = [self.only] if self.only is not None else list(host)
            specs = {k: ((self.batch,) + host[k].shape[1:], host[k].dtype) for k in names}
            self.writer = H5StreamWriter(self.output, specs, inputs=self.inputs)
            self.writer.__enter__()
        for name in self.writer.specs:
            self.writer.write(name, start, host[name][:count])

    def abort(self, exc: BaseException) -> None:
        if self.writer is not None:
            self.writer.__exit__(type(exc), exc, exc.__traceback__)

    def finish(self) -> None:
        if self.writer is not None:
            self.writer.__exit__(None, None, None)


class _MemorySink:
    """The one chunk's results, delivered at the end (to DEST, a pipe, or a summary)."""

    def __init__(self, output: str | None, only: str | None, inputs: list[str | None]):
        self.output, self.only, self.inputs = output, only, inputs
        self.results: Arrays | None = None

    def write(self, start: int, count: int, host: Arrays) -> None:
        self.results = host

    def abort(self, exc: BaseException) -> None:
        self.results = None

    def finish(self) -> None:
        if self.results is not None:
            c.deliver(self.results, self.output, self.only, self.inputs)


class _LazyProgress:
    """A rich progress bar on standard error that appears only once a run passes a second."""

    def __init__(self, total: int, label: str):
        self.total, self.label = total, label
        self.start = time.monotonic()
        self.bar = None
        self.task = None

    def update(self, done: int) -> None:
        if self.bar is None and time.monotonic() - self.start > 1.0 and done < self.total:
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
                console=c.err_console,
                transient=False,
            )
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=self.total, rate="")
        if self.bar is not None:
            elapsed = max(time.monotonic() - self.start, 1e-9)
            self.bar.update(self.task, completed=done, rate=f"{done / elapsed:,.0f} matrices/s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


# --------------------------------------------------------------------------- the loop


def _chunk_size(p: Plan, chunk: int | None, complex_work: bool) -> int:
    if not p.streamed:
        return 1
    A = p.A
    m, n = A.shape[-2:]
    work = np.result_type(A.dtype, np.complex64) if complex_work else np.dtype(A.dtype)
    itemsize = np.dtype(work).itemsize  # a complex dtype's itemsize counts both parts
    size = chunk if chunk is not None else default_chunk(p.batch, m, n, itemsize)
    return max(1, min(size, p.batch))


def _loop(
    p: Plan,
    size: int,
    prepare: Callable[[Arrays], Arrays],
    compute: Callable[[Arrays], tuple[Mapping[str, Any], Mapping[str, Any]]],
    on_info: Callable[[Mapping[str, Any]], None],
    sink: _H5Sink | _MemorySink,
    label: str,
) -> list[Mapping[str, Any]]:
    """Every chunk through prepare, compute, on_info and the sink; the next chunk is read while
    the device works on this one. On any exception the sink is aborted (nothing written)."""
    B = p.batch
    infos: list[Mapping[str, Any]] = []

    def read(start: int) -> tuple[int, Arrays]:
        stop = min(B, start + size)
        arrays = {arg: src.read(start, stop) for arg, src in p.chunked.items()}
        arrays.update(p.whole)
        return stop - start, prepare(arrays)

    progress = _LazyProgress(B, label)
    try:
        count, arrays = read(0)
        pending = compute(arrays)
        start = 0
        while pending is not None:
            results, info = pending
            nxt = start + count
            next_chunk = read(nxt) if nxt < B else None
            host = c.to_numpy(results)  # waits for the device
            info = {k: np.asarray(v) for k, v in info.items()}
            on_info(info)
            infos.append(info)
            sink.write(start, count, host)
            progress.update(nxt)
            start = nxt
            if next_chunk is None:
                pending = None
            else:
                count, arrays = next_chunk
                pending = compute(arrays)
    except BaseException as exc:
        progress.close()
        sink.abort(exc)
        raise
    progress.close()
    sink.finish()
    return infos


def _identity(arrays: Arrays) -> Arrays:
    return arrays


def _ignore(info: Mapping[str, Any]) -> None:
    return None


@dataclass
class Outcome:
    """What :func:`execute` computed: each chunk's info, A's shape and dtype (as read), and
    whether it streamed."""

    infos: list[Mapping[str, Any]]
    shape: tuple[int, ...]
    dtype: np.dtype
    streamed: bool

    @property
    def info(self) -> dict[str, Any]:
        """The chunks' infos merged (see :func:`merge_infos`)."""
        return merge_infos(self.infos)


def execute(
    sources: Sources,
    compute: Callable[[Arrays, Any], tuple[Mapping[str, Any], Mapping[str, Any]]],
    *,
    output: str | None,
    only: str | None,
    chunk: int | None,
    device: Any,
    label: str,
    check: Callable[[Plan], None] | None = None,
    prepare: Callable[[Arrays], Arrays] | None = None,
    on_info: Callable[[Mapping[str, Any]], None] | None = None,
    complex_work: bool = False,
    inputs: Iterable[str | None] | None = None,
    extra: Extra | None = None,
    cluster: Cluster | None = None,
    job: Callable[[], Any] | None = None,
) -> Outcome:
    """Read, check, compute and write, streamed or in memory: the one code path of a command.

    sources: {argument: (SOURCE or None, is-a-vector)}, A first; a None SOURCE is not given.
    compute(arrays, device): (results by output name, info) for one chunk, as device arrays.
    device: a --device value, resolved (JAX configured) after ``check`` and before computing.
    check(plan): checks of the inputs' shapes and dtypes before anything is computed, through
    ``plan.A`` and ``plan.get(arg)`` (shape, ndim, dtype); raises to stop.
    prepare(arrays): the raw arrays of a chunk to the arrays the rules take (complex casts).
    on_info(info): each chunk's info once on the host (may raise to abort: nothing is written).
    complex_work: the chunk is computed in complex arithmetic (--complex), for the chunk size.
    inputs: the SOURCEs an output may not overwrite (default: those in ``sources``).
    extra: {argument: (array, core)}, inputs already in memory (a number given on the command
    line, an input read and checked by the command), cut along A's first axis with the others
    when they share it, else given whole to every chunk; core: how many trailing dimensions make
    one item (2 a matrix, 1 a vector, 0 one value per matrix). An extra input with more batch
    dimensions than A makes the run in-memory.

    cluster: --workers/--scheduler; when either is given, the chunks are tasks on a dask
    cluster (svdgrad_cli.distributed) and ``job()`` says what each computes, in place of
    ``compute`` and ``prepare`` (the workers cannot call the command's closures).

    The results (or ``only``) go to ``output`` as ``deliver`` sends them; with --chunk or a
    stack into an .h5 output they are written chunk by chunk. Returns the :class:`Outcome`.
    """
    given = [spec for spec, _ in sources.values()]
    inputs = list(given if inputs is None else inputs)
    read: dict[str, np.ndarray] = {}
    if cluster is not None and cluster.given:
        assert job is not None
        return _execute_on_cluster(
            sources, cluster, job, output, only, chunk, label, check, on_info, inputs, extra
        )
    p = _open_plan(output, chunk, sources, read, extra)
    if p is None:
        p = memory_plan(sources, read, extra)
    with p:
        if check is not None:
            check(p)
        dev = c.resolve_device(device)
        A = p.A
        shape, dtype = tuple(A.shape), np.dtype(A.dtype)
        if p.streamed:
            assert output is not None
            sink: _H5Sink | _MemorySink = _H5Sink(output, only, inputs, p.batch)
        else:
            sink = _MemorySink(output, only, inputs)
        # one chunk: its compiled program may come from (and go to) the kept executables
        kept_dir = c.cache_dir() if not p.streamed and c.caching() else None

        def run(arrays: Arrays) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
            with _kept.active(kept_dir):
                return compute(arrays, dev)

        infos = _loop(
            p,
            _chunk_size(p, chunk, complex_work),
            prepare or _identity,
            run,
            on_info or _ignore,
            sink,
            label,
        )
    return Outcome(infos, shape, dtype, p.streamed)


@dataclass(frozen=True)
class Cluster:
    """--workers N and --scheduler ADDRESS as given (both None: the embedded default)."""

    workers: int | None = None
    scheduler: str | None = None

    @property
    def given(self) -> bool:
        return self.workers is not None or self.scheduler is not None

    @property
    def option(self) -> str:
        return "--workers" if self.workers is not None else "--scheduler"


def job(
    op: str,
    options: Mapping[str, Any],
    device: Any,
    args: Mapping[str, str] | None = None,
    complex_args: tuple[str, ...] = (),
) -> Any:
    """The distributed.Job of a command: its rule options, the --device name (each worker
    resolves it), the plan's keys of the rule's array arguments, and what --complex casts."""
    from .. import distributed

    name = getattr(device, "value", device)
    return distributed.Job(
        op,
        {**options, "device": None if name is None else str(name)},
        args=dict(args) if args else None,
        complex_args=tuple(complex_args),
    )


def _execute_on_cluster(
    sources: Sources,
    cluster: Cluster,
    job: Callable[[], Any],
    output: str | None,
    only: str | None,
    chunk: int | None,
    label: str,
    check: Callable[[Plan], None] | None,
    on_info: Callable[[Mapping[str, Any]], None] | None,
    inputs: list[str | None],
    extra: Extra | None,
) -> Outcome:
    """execute() with the chunks as tasks on a dask cluster."""
    from .. import distributed

    option = cluster.option
    if cluster.workers is not None and cluster.scheduler is not None:
        raise c.UsageProblem(
            "--workers and --scheduler: give one, the number of local workers to start or the "
            "address of a running scheduler"
        )
    if output is None or distributed.parse_destination(output) is None:
        raise c.UsageProblem(
            f"{option}: a cluster run writes its results to a file; add -o PATH.h5[:/GROUP] "
            "(written by this process) or -o PATH.zarr[:/GROUP] (written by the workers)"
        )
    distributed.require_extra()
    read: dict[str, np.ndarray] = {}
    p = _plan(sources, read, extra)
    if p is None:
        raise c.UsageProblem(
            f"{option}: A must be a stack of matrices (..., m, n) read from a file, with at "
            "least one batch dimension, that the other inputs share or broadcast against; "
            "compute a single matrix without it"
        )
    with p:
        if check is not None:
            check(p)
        A = p.A
        shape, dtype = tuple(A.shape), np.dtype(A.dtype)
        result = distributed.run(
            p,
            job(),
            output,
            workers=cluster.workers,
            scheduler=cluster.scheduler,
            chunk=chunk,
            only=only,
            inputs=inputs,
            on_info=on_info,
            label=label,
            console=c.err_console,
        )
    return Outcome(result.infos, shape, dtype, True)


def merge_infos(infos: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Totals of the counts, the worst gauge dependence (of each kind) and the largest
    degenerate split over all chunks; basis_selected when any chunk selected a basis."""
    out: dict[str, Any] = {}
    for key in ("degenerate_pairs", "rank_cut"):
        out[key] = int(sum(int(i.get(key, 0)) for i in infos))
    for key in (
        "gauge_relative",
        "rotation_relative",
        "spectrum_relative",
        "null_space_relative",
        "degenerate_split",
    ):
        out[key] = max((c.max_of(i, key) for i in infos), default=0.0)
    out["basis_selected"] = any(bool(np.any(i.get("basis_selected", False))) for i in infos)
    return out
