"""Inputs read piecewise along their first axis, for streaming a stack bigger than memory.

.npy files are memory-mapped and .h5 datasets sliced on demand; .npz members and standard input
cannot be sliced and are read whole. An array already in memory is a source too, so that the
stream of an in-memory input is the same loop with one chunk.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, BinaryIO

import numpy as np

from . import h5, npy, spec, validate
from .errors import InputError, short_exc, source_label
from .sources import read_source


class LazySource:
    """An input read in chunks along its first batch axis.

    ``shape`` and ``dtype`` describe the array as :func:`read_source` would return it (dtype
    after promotion). ``batch_len`` is the length of the first batch axis (``shape[0]`` when
    ``ndim > 2``; 1 for a single matrix). ``read(start, stop)`` returns rows ``[start:stop]`` of
    that axis, converted and checked for NaN/Inf. For a 2-D source there is no batch axis and
    ``read(0, 1)`` returns the whole matrix (shape (m, n)). A ``vector`` source (..., k) has a
    batch axis when ``ndim > 1``; in general, ``core`` trailing dimensions make one item (2 for
    a matrix, 1 for a vector, 0 for one value per matrix).
    """

    def __init__(
        self,
        spec: str,
        arg: str,
        shape: tuple[int, ...],
        dtype: np.dtype,
        reader: Callable[[int, int], np.ndarray],
        closer: Callable[[], None] | None = None,
        *,
        vector: bool = False,
        core: int | None = None,
    ) -> None:
        self.spec = spec
        self.arg = arg
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self._reader = reader
        self._closer = closer
        self._label = source_label(arg, spec)
        self.core = core if core is not None else 1 if vector else 2  # dims of one item
        self.closed = False

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def batch_len(self) -> int:
        return self.shape[0] if len(self.shape) > self.core else 1

    def __len__(self) -> int:
        return self.batch_len

    def read(self, start: int, stop: int) -> np.ndarray:
        if self.closed:
            raise InputError(f"{self._label}: source already closed")
        n = self.batch_len
        start, stop = int(start), int(stop)
        if not (0 <= start <= stop <= n):
            raise InputError(f"{self._label}: rows [{start}:{stop}] out of range [0:{n}]")
        try:
            raw = self._reader(start, stop)
        except InputError:
            raise
        except MemoryError:
            raise InputError(
                f"{self._label}: not enough memory for rows [{start}:{stop}]"
            ) from None
        except Exception as exc:
            raise InputError(
                f"{self._label}: cannot read rows [{start}:{stop}] ({short_exc(exc)}); the "
                "file may be corrupt"
            ) from None
        where = f"rows [{start}:{stop}] " if self.ndim > self.core else ""
        return validate.finish(raw, self.dtype, self._label, where)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._closer is not None:
                with contextlib.suppress(Exception):
                    self._closer()

    def __enter__(self) -> LazySource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LazySource({self.spec!r}, shape={self.shape}, dtype={self.dtype})"


def array_source(
    arr: np.ndarray, spec: str = "", arg: str = "", *, vector: bool = False, core: int | None = None
) -> LazySource:
    """A source over an array already in memory (validated already); ``core`` as LazySource's."""
    core = core if core is not None else 1 if vector else 2

    def reader(start: int, stop: int) -> np.ndarray:
        return arr[start:stop] if arr.ndim > core else arr

    return LazySource(spec, arg, arr.shape, arr.dtype, reader, core=core)


def open_source_lazy(
    source: str, *, arg: str, stdin: BinaryIO | None = None, vector: bool = False
) -> LazySource:
    """Open ``source`` for chunked reading (see :class:`LazySource`).

    .h5 datasets are sliced on demand and .npy files are memory-mapped; .npz archives and
    standard input are loaded fully. Raises InputError.
    """
    label = source_label(arg, source)
    try:
        parsed = spec.parse_source(source, arg)
        if parsed.kind in (spec.STD, spec.NPZ):
            arr = read_source(source, arg=arg, stdin=stdin, vector=vector)
            return array_source(arr, source, arg, vector=vector)
        assert parsed.path is not None
        core = 1 if vector else 2
        if parsed.kind == spec.NPY:
            hdr, mm = npy.open_map(parsed.path, label, vector=vector)
            dtype = validate.target_dtype(hdr.dtype, label)
            holder: dict[str, Any] = {"mm": mm}

            def npy_reader(start: int, stop: int) -> np.ndarray:
                m = holder["mm"]
                return np.array(m[start:stop] if m.ndim > core else m, dtype=dtype)

            def npy_closer() -> None:
                holder.clear()  # the mapping is released once unreferenced

            return LazySource(source, arg, hdr.shape, dtype, npy_reader, npy_closer, vector=vector)
        f = h5.open_read(parsed.path, label)
        try:
            ds = h5.pick(f, parsed.inner, parsed.path, label)
            dtype = h5.target(ds, label, vector=vector)
        except BaseException:
            f.close()
            raise

        def h5_reader(start: int, stop: int) -> np.ndarray:
            return ds[start:stop] if len(ds.shape) > core else ds[()]

        return LazySource(source, arg, ds.shape, dtype, h5_reader, f.close, vector=vector)
    except InputError:
        raise
    except MemoryError:
        raise InputError(f"{label}: not enough memory to load this array") from None
    except Exception as exc:
        raise InputError(f"{label}: cannot read ({short_exc(exc)})") from None
