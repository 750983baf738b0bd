"""Writing results into an .h5 destination chunk by chunk (streaming a stack)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from . import h5, spec
from .atomic import AtomicTarget, check_destination
from .errors import InputError, OutputError, dest_label, list_names, short_exc


class H5StreamWriter:
    """Write large outputs into an .h5 destination chunk by chunk.

    ``names_shapes_dtypes`` maps each output name to (shape, dtype); datasets of those shapes
    are created (under ``PATH.h5:/GROUP`` if a group is given) in a temporary file next to the
    destination, which starts as a copy of the destination when that exists.
    ``write(name, start, array)`` stores ``array`` at rows ``[start:start+len(array)]`` of the
    first axis. On a clean exit of the ``with`` block the temporary file replaces the
    destination; on an exception (KeyboardInterrupt included) it is deleted and the exception
    propagates.
    """

    def __init__(
        self,
        dest: str,
        names_shapes_dtypes: Mapping[str, tuple[tuple[int, ...], Any]],
        inputs: Iterable[str | None] = (),
    ) -> None:
        self.dest = dest
        self.label = dest_label(dest)
        parsed = spec.parse_dest(dest)
        if parsed.kind != spec.H5:
            raise OutputError(
                f"{self.label}: streaming output needs an .h5 file; use PATH.h5[:/GROUP]"
            )
        if not names_shapes_dtypes:
            raise InputError(f"{self.label}: there are no outputs to write")
        self.specs: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        for name, (shape, dtype) in names_shapes_dtypes.items():
            dt = np.dtype(dtype)
            if dt.hasobject or dt.kind not in "biufc":
                raise InputError(f"{self.label}: output '{name}' has unsupported dtype {dt}")
            self.specs[name] = (tuple(int(s) for s in shape), dt)
        assert parsed.path is not None
        self.path = parsed.path
        self.group = parsed.inner
        self.inputs = list(inputs or ())
        self._target: AtomicTarget | None = None
        self._h5: Any = None
        self._datasets: dict[str, Any] = {}

    def __enter__(self) -> H5StreamWriter:
        written = [f"{self.group or ''}/{name}" for name in self.specs]
        p = check_destination(self.path, self.label, self.inputs, written)
        self._target = AtomicTarget(p, self.label)
        try:
            self._h5 = h5.open_update(p, self._target.tmp, self.label)
            grp = h5.require_group(self._h5, self.group, self.label)
            for name, (shape, dtype) in self.specs.items():
                if name in grp:
                    del grp[name]
                self._datasets[name] = grp.create_dataset(
                    name, shape=shape, dtype=dtype, chunks=h5.row_chunks(shape, dtype)
                )
        except BaseException:
            self._abort()
            raise
        return self

    def write(self, name: str, start: int, array: np.ndarray) -> None:
        if self._h5 is None:
            raise InputError(f"{self.label}: writer is not open; use it in a 'with' block")
        if name not in self._datasets:
            raise InputError(
                f"{self.label}: unknown output '{name}'; expected one of "
                f"{list_names(list(self._datasets))}"
            )
        ds = self._datasets[name]
        arr = np.asarray(array)
        shape = self.specs[name][0]
        start = int(start)
        if arr.ndim != len(shape) or tuple(arr.shape[1:]) != shape[1:]:
            raise InputError(
                f"{self.label}: chunk for '{name}' has shape {arr.shape}; expected (k, "
                f"{', '.join(map(str, shape[1:]))})"
            )
        stop = start + arr.shape[0]
        if start < 0 or stop > shape[0]:
            raise InputError(
                f"{self.label}: rows [{start}:{stop}] of '{name}' are outside [0:{shape[0]}]"
            )
        try:
            ds[start:stop] = arr
        except Exception as exc:
            raise OutputError(
                f"{self.label}: cannot write rows [{start}:{stop}] of '{name}' ({short_exc(exc)})"
            ) from None

    def _abort(self) -> None:
        if self._h5 is not None:
            with contextlib.suppress(Exception):
                self._h5.close()
            self._h5 = None
        if self._target is not None:
            self._target.discard()
            self._target = None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc_type is not None:
            self._abort()
            return False
        try:
            self._h5.close()
            self._h5 = None
            assert self._target is not None
            self._target.commit()
            self._target = None
        except BaseException:
            self._abort()
            raise
        return False
