"""What every input must be, whatever file it came from.

An input is an array of shape (..., m, n) with m, n >= 1 and a non-empty batch (or, for a vector
input such as a cotangent of S, of shape (..., k) with k >= 1), of dtype float32, float64,
complex64 or complex128 (bool and integers become float64, float16 becomes float32; the byte
order becomes native), with finite entries only, and small enough for this machine's memory.
"""

from __future__ import annotations

import math
import os

import numpy as np

from .errors import InputError, fmt_bytes, list_names

_KIND_WORDS = {
    "U": "strings",
    "S": "byte strings",
    "M": "datetimes",
    "m": "time deltas",
    "V": "raw bytes",
}


def memory_limit() -> int | None:
    """Total physical memory in bytes, or None when it cannot be determined."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def target_dtype(dtype: np.dtype, label: str, *, h5: bool = False) -> np.dtype:
    """The dtype an input of ``dtype`` is converted to, or InputError if unsupported."""
    dtype = np.dtype(dtype)
    if dtype.names is not None:
        fields = list_names(dtype.names)
        raise InputError(
            f"{label}: has a structured dtype (fields {fields}); save a plain numeric array"
        )
    if dtype.subdtype is not None:
        raise InputError(f"{label}: has a sub-array dtype {dtype}; save a plain numeric array")
    if dtype.hasobject:
        if h5:
            raise InputError(
                f"{label}: holds variable-length or object data; save a plain numeric dataset"
            )
        raise InputError(
            f"{label}: has object dtype, which needs pickle; pickled files are refused, "
            "save a plain numeric array"
        )
    kind = dtype.kind
    if kind in "biu":
        return np.dtype(np.float64)
    if kind == "f":
        if dtype.itemsize == 2:
            return np.dtype(np.float32)
        if dtype.itemsize in (4, 8):
            return dtype.newbyteorder("=")
        raise InputError(f"{label}: dtype {dtype} is not supported; convert to float64")
    if kind == "c":
        if dtype.itemsize in (8, 16):
            return dtype.newbyteorder("=")
        raise InputError(f"{label}: dtype {dtype} is not supported; convert to complex128")
    what = _KIND_WORDS.get(kind, "non-numeric data")
    raise InputError(
        f"{label}: has dtype {dtype} ({what}); only bool, integer, float and complex "
        "arrays are accepted"
    )


def check_shape(shape: tuple[int, ...] | None, label: str, *, vector: bool = False) -> None:
    """InputError unless ``shape`` is (..., m, n) with m, n >= 1 and a non-empty batch;
    ``vector`` also accepts a 1-D shape (k,) with k >= 1."""
    if shape is None:
        raise InputError(f"{label}: holds no data (empty dataspace); expected a (..., m, n) array")
    shape = tuple(int(s) for s in shape)
    if len(shape) == 1 and vector:
        if shape[0] < 1:
            raise InputError(f"{label}: is empty (shape {shape}); it must hold at least one value")
        return
    if len(shape) < 2:
        kind = "a scalar (0-D)" if len(shape) == 0 else f"1-D, shape {shape}"
        raise InputError(
            f"{label}: is {kind}; expected a matrix or a stack of matrices with shape (..., m, n)"
        )
    m, n = shape[-2], shape[-1]
    if m < 1 or n < 1:
        raise InputError(
            f"{label}: has empty matrices (shape {shape}, m={m}, n={n}); m and n must be >= 1"
        )
    if math.prod(shape[:-2]) == 0:
        raise InputError(f"{label}: has an empty batch (shape {shape}); it holds no matrices")


def check_finite(arr: np.ndarray, label: str, where: str = "") -> None:
    if arr.dtype.kind not in "fc" or arr.size == 0:
        return
    finite = np.isfinite(arr)
    if finite.all():
        return
    nan = int(np.count_nonzero(np.isnan(arr)))
    inf = int(arr.size - np.count_nonzero(finite)) - nan
    parts = []
    if nan:
        parts.append(f"{nan} NaN")
    if inf:
        parts.append(f"{inf} Inf")
    raise InputError(
        f"{label}: {where}contains {' and '.join(parts)} value(s) (of {arr.size}); "
        "all entries must be finite"
    )


def finish(arr: np.ndarray, target: np.dtype, label: str, where: str = "") -> np.ndarray:
    """Convert to the target dtype (native byte order, own memory) and check finiteness."""
    out = np.asarray(arr)
    if out.dtype != target or not out.flags.writeable:
        out = out.astype(target)
    check_finite(out, label, where)
    return out


def check_memory(shape: tuple[int, ...], target: np.dtype, label: str) -> None:
    need = math.prod(shape) * np.dtype(target).itemsize
    limit = memory_limit()
    if limit is not None and need > limit:
        raise InputError(
            f"{label}: shape {tuple(shape)} needs {fmt_bytes(need)} but this machine has "
            f"{fmt_bytes(limit)} of memory; use a smaller input or stream it from .h5/.npy"
        )
