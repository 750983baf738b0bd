"""Streaming a stack bigger than memory: read a chunk, compute it as one jitted batch, write it
straight into the output .h5 datasets.

Used by svd, jvp and vjp when the output is an .h5 file and A is a stack (ndim >= 3): the stack
is cut along its first axis, every input with the same first axis is read chunk by chunk (.h5
datasets are sliced, .npy files memory-mapped), and the other inputs, which broadcast, are read
once. Peak memory is bounded by the chunk size, not by the stack size. The output file appears
only when every chunk is written (arrays.H5StreamWriter writes to a temporary file and renames).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..arrays import H5StreamWriter, open_source_lazy, read_source
from . import _common as c

H5_SUFFIXES = (".h5", ".hdf5")

# per matrix in a chunk: inputs, outputs and the temporaries of the rules, in units of one
# (m, n) matrix of the working dtype
_WORK_FACTOR = 24


def is_h5_dest(output: str | None) -> bool:
    if output is None or output == "-":
        return False
    path = output.rsplit(":", 1)[0] if ":" in output[2:] else output
    return path.lower().endswith(H5_SUFFIXES)


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


@dataclass
class Plan:
    """What to stream: A and the inputs chunked along axis 0, and the inputs read whole."""

    batch: int
    chunked: dict[str, Any]
    whole: dict[str, np.ndarray] = field(default_factory=dict)

    def close(self) -> None:
        for src in self.chunked.values():
            src.close()

    def __enter__(self) -> Plan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def A(self) -> Any:
        return next(iter(self.chunked.values()))

    def get(self, arg: str) -> Any:
        """The source (for its shape) of an input, or None when it was not given."""
        if arg in self.chunked:
            return self.chunked[arg]
        return self.whole.get(arg)


def open_plan(
    output: str | None, chunk: int | None, sources: Mapping[str, tuple[str | None, bool]]
) -> Plan | None:
    """The streaming plan when the output is an .h5 file and A is a stack, else None.

    --chunk without an .h5 output is a usage error; --chunk with inputs that cannot be cut
    along A's first axis falls back to computing in memory, with a warning.
    """
    if not is_h5_dest(output):
        if chunk is not None:
            raise c.UsageProblem(
                "--chunk: streaming writes into an .h5 file; add -o PATH.h5[:/GROUP] or drop "
                "--chunk"
            )
        return None
    p = plan(sources)
    if p is None and chunk is not None:
        c.warn(
            "--chunk: A is not a stack whose first axis the other inputs share; computing in memory"
        )
    return p


def plan(sources: Mapping[str, tuple[str | None, bool]]) -> Plan | None:
    """A streaming plan for {argument: (SOURCE or None, is-a-vector)}, the first being A.

    None when A is not a stack, or when another input has batch dimensions that cannot be cut
    along A's first axis (it then takes the ordinary in-memory path).
    """
    items = [(arg, spec, vec) for arg, (spec, vec) in sources.items() if spec is not None]
    c.check_single_stdin([s for _, s, _ in items], [a for a, _, _ in items])
    arg_a, spec_a, _ = items[0]
    if spec_a == "-":
        return None
    A = open_source_lazy(spec_a, arg=arg_a)
    if A.ndim < 3:
        A.close()
        return None
    result = Plan(A.shape[0], {arg_a: A})
    try:
        for arg, spec, vector in items[1:]:
            core = 1 if vector else 2
            if spec == "-" or vector:  # small, or a stream: read it now
                src = _InMemory(read_source(spec, arg=arg, vector=vector))
            else:
                src = open_source_lazy(spec, arg=arg)
            batch_nd = len(src.shape) - core
            if batch_nd == A.ndim - 2 and src.shape[0] == A.shape[0] and A.shape[0] != 1:
                result.chunked[arg] = src
            elif batch_nd < A.ndim - 2 or (batch_nd == A.ndim - 2 and src.shape[0] == 1):
                # broadcasts against every chunk: read it once
                if isinstance(src, _InMemory):
                    result.whole[arg] = src.arr
                else:
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


class _InMemory:
    """An input already in memory, sliced along its first axis like a LazySource."""

    def __init__(self, arr: np.ndarray):
        self.arr = arr
        self.shape = arr.shape
        self.ndim = arr.ndim
        self.dtype = arr.dtype

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.arr[start:stop]

    def close(self) -> None:
        pass


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


def run(
    p: Plan,
    *,
    chunk: int | None,
    output: str,
    only: str | None,
    inputs: list[str | None],
    prepare: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
    compute: Callable[[dict[str, np.ndarray]], tuple[dict[str, Any], Mapping[str, Any]]],
    on_info: Callable[[Mapping[str, Any]], None],
    label: str,
    complex_work: bool = False,
) -> list[Mapping[str, Any]]:
    """Stream every chunk through ``compute`` into ``output``; returns each chunk's info.

    prepare: turns the raw arrays of a chunk into the arrays the rules take (complex casts);
    compute: returns (results by output name, info) for a chunk, as device arrays;
    on_info: called with each chunk's info once it is on the host (may raise to abort);
    complex_work: the chunk is computed in complex arithmetic (--complex), for the default size.
    """
    A0 = next(iter(p.chunked.values()))
    B = p.batch
    m, n = A0.shape[-2:]
    work = np.result_type(A0.dtype, np.complex64) if complex_work else np.dtype(A0.dtype)
    itemsize = np.dtype(work).itemsize  # a complex dtype's itemsize counts both parts
    size = chunk if chunk is not None else default_chunk(B, m, n, itemsize)
    size = max(1, min(size, B))
    infos: list[Mapping[str, Any]] = []

    def read(start: int) -> tuple[int, dict[str, np.ndarray]]:
        stop = min(B, start + size)
        arrays = {arg: src.read(start, stop) for arg, src in p.chunked.items()}
        arrays.update(p.whole)
        return stop - start, prepare(arrays)

    progress = _LazyProgress(B, label)
    writer = None
    try:
        count, arrays = read(0)
        pending = compute(arrays)
        start = 0
        while pending is not None:
            results, info = pending
            nxt = start + count
            # read the next chunk while the device works on this one
            next_chunk = read(nxt) if nxt < B else None
            host = c.to_numpy(results)
            info = {k: np.asarray(v) for k, v in info.items()}
            on_info(info)
            infos.append(info)
            if writer is None:
                names = [only] if only is not None else list(host)
                specs = {k: ((B,) + host[k].shape[1:], host[k].dtype) for k in names}
                writer = H5StreamWriter(output, specs, inputs=inputs)
                writer.__enter__()
            for name in writer.specs:
                writer.write(name, start, host[name][:count])
            progress.update(nxt)
            start = nxt
            if next_chunk is None:
                pending = None
            else:
                count, arrays = next_chunk
                pending = compute(arrays)
    except BaseException as exc:
        progress.close()
        if writer is not None:
            writer.__exit__(type(exc), exc, exc.__traceback__)
        raise
    finally:
        p.close()
    progress.close()
    writer.__exit__(None, None, None)
    return infos


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
