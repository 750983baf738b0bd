"""The .npy format, through numpy.lib.format: the header (read_magic,
read_array_header_1_0/2_0 with max_header_size), the data in bounded reads, memory maps, writing.

Everything that can be known from the header is checked before any data is read: the format
version, the dtype, the shape, that the file really holds as many bytes as the header declares,
and that the array fits in memory. An absurd header therefore never allocates. Pickled (object)
arrays are refused and never written.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import numpy.lib.format as fmt

from . import validate
from .errors import InputError, fmt_bytes, short_exc
from .files import file_size, open_input

MAGIC = b"\x93NUMPY"
MAX_HEADER = 1 << 20  # a header longer than this is treated as corrupt
READ_CHUNK = 1 << 24  # bytes per read() of array data


@dataclass(frozen=True)
class Header:
    shape: tuple[int, ...]
    dtype: np.dtype  # as stored
    fortran: bool
    offset: int  # where the data starts

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


class _HeaderReader:
    """Reads the header through numpy, counting bytes and refusing an absurd header length
    before numpy asks for (and allocates) that many bytes."""

    def __init__(self, f: BinaryIO, label: str) -> None:
        self.f, self.label, self.count = f, label, 0

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > MAX_HEADER:
            raise InputError(
                f"{self.label}: .npy header is implausibly large ({n} bytes); corrupt file"
            )
        data = self.f.read(n)
        self.count += len(data)
        return data


def read_header(
    f: BinaryIO,
    size: int,
    label: str,
    what: str = "a .npy file",
    *,
    vector: bool = False,
    check_memory: bool = True,
) -> Header:
    """Parse and validate the header at the start of ``f``; ``size`` is the stream's length.

    Leaves ``f`` at the first data byte. InputError for every problem.
    """
    reader = _HeaderReader(f, label)
    try:
        major, minor = fmt.read_magic(reader)
    except ValueError:
        raise InputError(f"{label}: is not {what} (bad magic bytes); it may be corrupt") from None
    if major == 1:
        read = fmt.read_array_header_1_0
    elif major in (2, 3):  # 3.0 differs from 2.0 only in utf-8 field names (refused anyway)
        read = fmt.read_array_header_2_0
    else:
        raise InputError(f"{label}: unsupported .npy format version {major}.{minor}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy's note on headers written by Python 2
            shape, fortran, dtype = read(reader, max_header_size=MAX_HEADER)
    except InputError:
        raise
    except ValueError as exc:
        if str(exc).startswith("EOF"):
            raise InputError(f"{label}: is truncated (incomplete .npy header)") from None
        raise InputError(f"{label}: corrupt .npy header ({short_exc(exc)})") from None
    except (Exception, MemoryError, RecursionError) as exc:  # tokenize errors, deep nesting
        raise InputError(f"{label}: corrupt .npy header ({short_exc(exc)})") from None
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise InputError(f"{label}: corrupt .npy header (bad shape {shape!r})")
    target = validate.target_dtype(dtype, label)
    validate.check_shape(shape, label, vector=vector)
    hdr = Header(tuple(shape), np.dtype(dtype), bool(fortran), reader.count)
    available = size - hdr.offset
    if hdr.nbytes > available:
        raise InputError(
            f"{label}: header declares shape {hdr.shape} ({fmt_bytes(hdr.nbytes)}) but only "
            f"{fmt_bytes(max(available, 0))} of data follow; the data is truncated or corrupt"
        )
    if check_memory:
        validate.check_memory(hdr.shape, target, label)
    return hdr


def read_data(f: BinaryIO, hdr: Header, label: str) -> np.ndarray:
    """The array whose header was just read (``f`` is at its first data byte), as stored."""
    flat = np.empty(math.prod(hdr.shape), dtype=hdr.dtype)
    view = memoryview(flat.view(np.uint8))
    pos = 0
    while pos < hdr.nbytes:
        n = f.readinto(view[pos : pos + READ_CHUNK])
        if not n:
            raise InputError(f"{label}: is truncated ({pos} of {hdr.nbytes} data bytes present)")
        pos += n
    return flat.reshape(hdr.shape, order="F" if hdr.fortran else "C")


def load(
    f: BinaryIO, size: int, label: str, what: str = "a .npy file", *, vector: bool = False
) -> np.ndarray:
    """A validated array from a .npy stream of ``size`` bytes."""
    hdr = read_header(f, size, label, what, vector=vector)
    arr = read_data(f, hdr, label)
    return validate.finish(arr, validate.target_dtype(hdr.dtype, label), label)


def read(path: str, label: str, *, vector: bool = False) -> np.ndarray:
    """A validated array from a .npy file."""
    with open_input(path, label) as f:
        return load(f, file_size(f), label, vector=vector)


def open_map(path: str, label: str, *, vector: bool = False) -> tuple[Header, np.memmap]:
    """The header and a read-only memory map of a .npy file (for reading it piecewise)."""
    with open_input(path, label) as f:
        hdr = read_header(f, file_size(f), label, vector=vector, check_memory=False)
    try:
        mm = np.memmap(
            path,
            dtype=hdr.dtype,
            mode="r",
            offset=hdr.offset,
            shape=hdr.shape,
            order="F" if hdr.fortran else "C",
        )
    except Exception as exc:
        raise InputError(f"{label}: cannot map the file ({short_exc(exc)})") from None
    return hdr, mm


def write(f: Any, arr: np.ndarray) -> None:
    """Write one array in .npy format (never pickles)."""
    fmt.write_array(f, np.asarray(arr), allow_pickle=False)
