"""Writing finished results (name -> array) to a DEST, and describing them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, BinaryIO

import numpy as np

from . import h5, npy, npz, spec, stdio
from .atomic import AtomicTarget, check_destination
from .errors import InputError, OutputError, dest_label, list_names, short_exc


def select(results: Mapping[str, Any], only: str | None, label: str) -> dict[str, np.ndarray]:
    """The arrays to write: all results, or ``only``; InputError for an unknown name or a
    result that is not a numeric array."""
    if not isinstance(results, Mapping) or not results:
        raise InputError(f"{label}: there are no results to write")
    names = list(results)
    if only is not None:
        if only not in results:
            raise InputError(f"--only: unknown output '{only}'; choose one of: {list_names(names)}")
        names = [only]
    selected: dict[str, np.ndarray] = {}
    for name in names:
        if not isinstance(name, str) or not name or "\x00" in name:
            raise InputError(f"{label}: invalid output name {name!r}")
        try:
            arr = np.asarray(results[name])
        except Exception as exc:
            raise InputError(
                f"{label}: output '{name}' is not an array ({short_exc(exc)})"
            ) from None
        if arr.dtype.hasobject or arr.dtype.kind not in "biufc":
            raise InputError(
                f"{label}: output '{name}' has dtype {arr.dtype}; only numeric arrays can be saved"
            )
        selected[name] = arr
    return selected


def _write_h5(target: AtomicTarget, group: str | None, arrays: Mapping[str, np.ndarray]) -> None:
    label = target.label
    f = h5.open_update(target.dest, target.tmp, label)
    try:
        grp = h5.require_group(f, group, label)
        for name, arr in arrays.items():
            try:
                h5.put(grp, name, arr)
            except (OutputError, MemoryError):
                raise
            except (OSError, ValueError, TypeError, KeyError) as exc:
                raise OutputError(
                    f"{label}: cannot write dataset '{name}' ({short_exc(exc)})"
                ) from None
    finally:
        f.close()


def write_results(
    dest: str,
    results: Mapping[str, Any],
    *,
    only: str | None = None,
    stdout: BinaryIO | None = None,
    inputs: Iterable[str | None] = (),
) -> None:
    """Write ``results`` (name -> array) to ``dest`` atomically.

    ``only`` selects a single output by name (required for a .npy destination). ``inputs`` are
    the source specs of the run: writing over one of them is refused. Raises
    InputError/OutputError (BrokenPipeError when standard output is a closed pipe); on any
    failure (KeyboardInterrupt included) the temporary file is removed and an existing
    destination is left untouched.
    """
    label = dest_label(dest)
    parsed = spec.parse_dest(dest)
    if parsed.kind == spec.STD:
        stdio.write_arrays(stdout, select(results, only, label), only, label)
        return
    if parsed.kind == spec.NPY and only is None:
        names = list(results) if isinstance(results, Mapping) else []
        raise OutputError(
            f"{label}: a .npy file holds one array; add --only NAME "
            f"(one of: {list_names(names)}) or write a .npz/.h5 file"
        )
    arrays = select(results, only, label)
    assert parsed.path is not None
    written = (
        [f"{parsed.inner or ''}/{name}" for name in arrays] if parsed.kind == spec.H5 else None
    )
    p = check_destination(parsed.path, label, inputs, written)
    with AtomicTarget(p, label) as target:
        if parsed.kind == spec.H5:
            _write_h5(target, parsed.inner, arrays)
            return
        try:
            with open(target.tmp, "wb") as f:
                if parsed.kind == spec.NPY:
                    npy.write(f, arrays[only])  # type: ignore[index]
                else:
                    npz.write(f, arrays)
        except OSError as exc:
            raise OutputError(f"{label}: cannot write ({short_exc(exc)})") from None


def describe(results: Mapping[str, Any]) -> list[tuple[str, tuple[int, ...], np.dtype, float]]:
    """(name, shape, dtype, Frobenius norm over all entries) for each result."""
    rows: list[tuple[str, tuple[int, ...], np.dtype, float]] = []
    for name, value in results.items():
        arr = np.asarray(value)
        if arr.size == 0:
            norm = 0.0
        elif arr.dtype.kind in "biufc":
            norm = float(np.linalg.norm(arr.reshape(-1).astype(np.result_type(arr.dtype, 1.0))))
        else:
            norm = float("nan")
        rows.append((name, tuple(arr.shape), arr.dtype, norm))
    return rows
