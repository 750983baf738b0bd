"""Reading input arrays and writing results for the ``svdgrad`` command line.

This module is the CLI's I/O layer.  It depends only on numpy, the standard
library and (imported lazily, inside the functions that need it) h5py, so that
importing it is cheap.  It never prints: every problem is reported by raising
:class:`InputError` (bad call or bad input) or :class:`OutputError` (bad
destination) with a single-line message that names the argument or file and
says what to do about it.

Source specs
    ``PATH.npy``                  one array
    ``PATH.npz[:NAME]``           NAME may be left out if the archive holds one array
    ``PATH.h5[:/group/dataset]``  (or ``.hdf5``) the path may be left out if the
                                  file holds exactly one dataset
    ``-``                         a .npy stream on standard input

Destination specs
    ``PATH.npz``                  all outputs, by name
    ``PATH.h5[:/group]``          one dataset per output (an existing file is updated)
    ``PATH.npy``                  one output, selected with ``only``
    ``-``                         standard output: a .npz stream, or .npy with ``only``
"""

from __future__ import annotations

import ast
import contextlib
import contextvars
import io
import math
import os
import pathlib
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Mapping
from typing import Any, BinaryIO

import numpy as np

__all__ = [
    "InputError",
    "OutputError",
    "LazySource",
    "H5StreamWriter",
    "read_source",
    "open_source_lazy",
    "source_paths",
    "check_single_stdin",
    "write_results",
    "describe",
    "SOURCE_FORMS",
    "DEST_FORMS",
]

SOURCE_FORMS = (
    "PATH.npy, PATH.npz[:NAME], PATH.h5[:/DATASET] (or .hdf5), "
    "or - for a .npy stream on standard input"
)
DEST_FORMS = (
    "PATH.npz, PATH.h5[:/GROUP] (or .hdf5), PATH.npy with --only NAME, or - for standard output"
)

_NPY_EXTS = (".npy",)
_NPZ_EXTS = (".npz",)
_H5_EXTS = (".h5", ".hdf5")
_ALL_EXTS = _NPY_EXTS + _NPZ_EXTS + _H5_EXTS

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK"
_MAX_HEADER = 1 << 20  # a .npy header larger than this is treated as corrupt
_CHUNK = 1 << 24  # bytes per read() call when reading array data
_MAX_LISTED = 12  # how many names an error message lists before "..."
_TMP_SUFFIX = ".tmp"
# set by read_source(..., vector=True): a 1-D array (..., k) such as a cotangent of S is accepted
_VECTOR_OK: contextvars.ContextVar[bool] = contextvars.ContextVar("_VECTOR_OK", default=False)


# --------------------------------------------------------------------------- errors


class InputError(Exception):
    """A bad call or a bad input file (the CLI exits with status 2).

    The message is one line naming the argument or file and saying what to do.
    """

    def __init__(self, message: str) -> None:
        super().__init__(_one_line(message))


class OutputError(InputError):
    """A bad destination: missing directory, read-only, same file as an input, ..."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _short_exc(exc: BaseException) -> str:
    text = _one_line(str(exc)) or type(exc).__name__
    if len(text) > 200:
        text = text[:197] + "..."
    return text


def _list_names(names: Iterable[str]) -> str:
    names = list(names)
    if not names:
        return "none"
    shown = ", ".join(names[:_MAX_LISTED])
    if len(names) > _MAX_LISTED:
        shown += f", ... ({len(names) - _MAX_LISTED} more)"
    return shown


def _label(arg: str, spec: str) -> str:
    if spec == "-":
        return f"{arg}: '-' (standard input)"
    return f"{arg}: '{spec}'"


def _fmt_bytes(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} bytes"  # pragma: no cover


def _memory_limit() -> int | None:
    """Total physical memory in bytes, or None when it cannot be determined."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


# --------------------------------------------------------------------------- spec parsing


def _split_spec(spec: str) -> tuple[str, str, str | None] | None:
    """Split ``PATH.ext[:INNER]`` into (path, ext, inner); None for an unknown form.

    When the text is ambiguous, a split whose PATH names an existing file wins.
    """
    low = spec.lower()
    whole = next((e for e in _ALL_EXTS if low.endswith(e) and len(spec) > len(e)), None)
    if whole is not None and os.path.isfile(spec):
        return spec, whole, None
    candidates: list[tuple[int, str]] = []
    for ext in _ALL_EXTS:
        start = 0
        while (i := low.find(ext + ":", start)) != -1:
            if i > 0:
                candidates.append((i + len(ext), ext))
            start = i + 1
    candidates.sort()
    for pos, ext in candidates:
        if os.path.isfile(spec[:pos]):
            return spec[:pos], ext, (spec[pos + 1 :] or None)
    if whole is not None:
        return spec, whole, None
    if not candidates:
        return None
    pos, ext = candidates[0]
    return spec[:pos], ext, (spec[pos + 1 :] or None)


def source_paths(spec: str | None) -> pathlib.Path | None:
    """The file that a source (or destination) spec reads; None for ``-`` or no spec."""
    if spec is None or spec == "-" or spec == "":
        return None
    parts = _split_spec(spec)
    if parts is None:
        return pathlib.Path(spec)
    return pathlib.Path(parts[0])


def check_single_stdin(specs: Iterable[str | None], names: Iterable[str] | None = None) -> None:
    """Raise InputError if more than one of ``specs`` is ``-`` (standard input).

    ``names`` optionally gives the argument names matching ``specs`` for the message.
    """
    specs = list(specs)
    names_list = list(names) if names is not None else []
    hits = [i for i, s in enumerate(specs) if s == "-"]
    if len(hits) > 1:
        if len(names_list) == len(specs):
            who = ", ".join(names_list[i] for i in hits)
            raise InputError(
                f"standard input ('-') can feed only one argument, but {who} all use it; "
                "save the others to files"
            )
        raise InputError(
            f"standard input ('-') can feed only one argument, but {len(hits)} arguments use it; "
            "save the others to files"
        )


# --------------------------------------------------------------------------- dtype/shape checks


def _target_dtype(dtype: np.dtype, label: str, *, h5: bool = False) -> np.dtype:
    """The dtype an input of ``dtype`` is converted to, or InputError if unsupported."""
    dtype = np.dtype(dtype)
    if dtype.names is not None:
        fields = _list_names(dtype.names)
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
    what = {
        "U": "strings",
        "S": "byte strings",
        "M": "datetimes",
        "m": "time deltas",
        "V": "raw bytes",
    }.get(kind, "non-numeric data")
    raise InputError(
        f"{label}: has dtype {dtype} ({what}); only bool, integer, float and complex "
        "arrays are accepted"
    )


def _check_shape(shape: tuple[int, ...] | None, label: str) -> None:
    if shape is None:
        raise InputError(f"{label}: holds no data (empty dataspace); expected a (..., m, n) array")
    shape = tuple(int(s) for s in shape)
    if len(shape) == 1 and _VECTOR_OK.get():
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


def _check_finite(arr: np.ndarray, label: str, where: str = "") -> None:
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


def _finish(arr: np.ndarray, target: np.dtype, label: str, where: str = "") -> np.ndarray:
    """Convert to the target dtype (native byte order, own memory) and check finiteness."""
    out = np.asarray(arr)
    if out.dtype != target or not out.flags.writeable:
        out = out.astype(target)
    _check_finite(out, label, where)
    return out


def _check_memory(shape: tuple[int, ...], target: np.dtype, label: str) -> None:
    need = math.prod(shape) * np.dtype(target).itemsize
    limit = _memory_limit()
    if limit is not None and need > limit:
        raise InputError(
            f"{label}: shape {tuple(shape)} needs {_fmt_bytes(need)} but this machine has "
            f"{_fmt_bytes(limit)} of memory; use a smaller input or stream it from .h5/.npy"
        )


# --------------------------------------------------------------------------- .npy streams


class _NpyHeader:
    __slots__ = ("shape", "dtype", "fortran", "offset", "nbytes")

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, fortran: bool, offset: int):
        self.shape = shape
        self.dtype = dtype
        self.fortran = fortran
        self.offset = offset
        self.nbytes = math.prod(shape) * dtype.itemsize


def _read_exact(f: BinaryIO, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = f.read(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _parse_npy_header(
    f: BinaryIO, size: int, label: str, what: str = "a .npy file", *, check_memory: bool = True
) -> _NpyHeader:
    """Parse and validate a .npy header; ``size`` is the total byte size of the stream.

    Checks everything that can be known before the data is read: format, dtype,
    shape, and that the stream really holds as many bytes as the header declares.
    """
    magic = _read_exact(f, 8)
    if len(magic) < 8 or magic[:6] != _NPY_MAGIC:
        raise InputError(f"{label}: is not {what} (bad magic bytes); it may be corrupt")
    major, minor = magic[6], magic[7]
    if major == 1:
        hlen_bytes, encoding = 2, "latin1"
    elif major in (2, 3):
        hlen_bytes, encoding = 4, ("latin1" if major == 2 else "utf8")
    else:
        raise InputError(f"{label}: unsupported .npy format version {major}.{minor}")
    raw_len = _read_exact(f, hlen_bytes)
    if len(raw_len) < hlen_bytes:
        raise InputError(f"{label}: is truncated (incomplete .npy header)")
    hlen = int.from_bytes(raw_len, "little")
    if hlen > _MAX_HEADER:
        raise InputError(f"{label}: .npy header is implausibly large ({hlen} bytes); corrupt file")
    raw = _read_exact(f, hlen)
    if len(raw) < hlen:
        raise InputError(f"{label}: is truncated (incomplete .npy header)")
    try:
        header = ast.literal_eval(raw.decode(encoding))
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError) as exc:
        raise InputError(f"{label}: corrupt .npy header ({_short_exc(exc)})") from None
    if not isinstance(header, dict) or not {"descr", "fortran_order", "shape"} <= header.keys():
        raise InputError(f"{label}: corrupt .npy header (missing descr/fortran_order/shape)")
    shape = header["shape"]
    if (
        not isinstance(shape, tuple)
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)
        or not isinstance(header["fortran_order"], bool)
    ):
        raise InputError(f"{label}: corrupt .npy header (bad shape {shape!r})")
    try:
        dtype = np.lib.format.descr_to_dtype(header["descr"])
    except Exception as exc:
        raise InputError(f"{label}: corrupt .npy header (bad dtype: {_short_exc(exc)})") from None
    target = _target_dtype(dtype, label)
    _check_shape(shape, label)
    hdr = _NpyHeader(shape, dtype, header["fortran_order"], 6 + 2 + hlen_bytes + hlen)
    available = size - hdr.offset
    if hdr.nbytes > available:
        raise InputError(
            f"{label}: header declares shape {shape} ({_fmt_bytes(hdr.nbytes)}) but only "
            f"{_fmt_bytes(max(available, 0))} of data follow; the data is truncated or corrupt"
        )
    if check_memory:
        _check_memory(shape, target, label)
    return hdr


def _read_npy_data(f: BinaryIO, hdr: _NpyHeader, label: str) -> np.ndarray:
    """Read the data that follows a parsed header (the stream is positioned after it)."""
    count = math.prod(hdr.shape)
    flat = np.empty(count, dtype=hdr.dtype)
    view = memoryview(flat.view(np.uint8))
    pos = 0
    while pos < hdr.nbytes:
        n = f.readinto(view[pos : pos + _CHUNK])
        if not n:
            raise InputError(f"{label}: is truncated ({pos} of {hdr.nbytes} data bytes present)")
        pos += n
    return flat.reshape(hdr.shape, order="F" if hdr.fortran else "C")


def _load_npy_stream(f: BinaryIO, size: int, label: str, what: str = "a .npy file") -> np.ndarray:
    hdr = _parse_npy_header(f, size, label, what)
    arr = _read_npy_data(f, hdr, label)
    return _finish(arr, _target_dtype(hdr.dtype, label), label)


# --------------------------------------------------------------------------- file readers


def _open_file(path: str, label: str) -> BinaryIO:
    p = pathlib.Path(path)
    if not p.exists():
        where = p.parent if str(p.parent) not in ("", ".") else pathlib.Path(".")
        hint = "" if where.is_dir() else f" (directory '{where}' does not exist either)"
        raise InputError(f"{label}: file not found{hint}; check the path")
    if p.is_dir():
        raise InputError(f"{label}: is a directory, not a file; give a file path")
    try:
        return open(p, "rb")
    except PermissionError:
        raise InputError(f"{label}: permission denied; make the file readable") from None
    except OSError as exc:
        raise InputError(f"{label}: cannot open ({_short_exc(exc)})") from None


def _read_npy_file(path: str, label: str) -> np.ndarray:
    with _open_file(path, label) as f:
        size = os.fstat(f.fileno()).st_size
        return _load_npy_stream(f, size, label)


def _npz_members(zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    members: dict[str, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        if info.is_dir():
            continue
        name = info.filename
        key = name[:-4] if name.endswith(".npy") else name
        members[key] = info
    return members


def _open_npz(
    path: str, label: str
) -> tuple[BinaryIO, zipfile.ZipFile, dict[str, zipfile.ZipInfo]]:
    f = _open_file(path, label)
    try:
        zf = zipfile.ZipFile(f)
        members = _npz_members(zf)
    except Exception as exc:
        f.close()
        raise InputError(
            f"{label}: not a readable .npz archive ({_short_exc(exc)}); it may be truncated "
            "or corrupt"
        ) from None
    return f, zf, members


def _pick_npz_member(
    members: dict[str, zipfile.ZipInfo], name: str | None, path: str, label: str
) -> zipfile.ZipInfo:
    names = sorted(members)
    if name is None:
        if len(members) == 1:
            return members[names[0]]
        if not members:
            raise InputError(f"{label}: the archive holds no arrays")
        raise InputError(
            f"{label}: {path} holds {len(names)} arrays; name one as '{path}:NAME' "
            f"(arrays: {_list_names(names)})"
        )
    key = name[:-4] if name.endswith(".npy") and name[:-4] in members else name
    if key not in members:
        raise InputError(f"{label}: no array '{name}' in {path} (arrays: {_list_names(names)})")
    return members[key]


def _read_npz_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, label: str) -> np.ndarray:
    try:
        with zf.open(info) as member:
            return _load_npy_stream(member, info.file_size, label, "a .npy array member")
    except (InputError, MemoryError):
        raise
    except Exception as exc:  # BadZipFile (CRC), zlib.error, OSError, EOFError, ...
        raise InputError(
            f"{label}: cannot read member '{info.filename}' ({_short_exc(exc)}); the archive "
            "may be truncated or corrupt"
        ) from None


def _read_npz(path: str, name: str | None, label: str) -> np.ndarray:
    f, zf, members = _open_npz(path, label)
    with f, zf:
        info = _pick_npz_member(members, name, path, label)
        return _read_npz_member(zf, info, label)


def _h5_datasets(group: Any) -> list[str]:
    import h5py

    found: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            found.append("/" + name if not name.startswith("/") else name)

    try:
        group.visititems(visit)
    except Exception:  # a partially corrupt file: list what could be visited
        pass
    prefix = group.name.rstrip("/")
    return sorted(prefix + n if prefix else n for n in found)


def _open_h5(path: str, label: str) -> Any:
    _open_file(path, label).close()  # existence / permission checks with clear messages
    import h5py

    try:
        return h5py.File(path, "r")
    except Exception as exc:
        raise InputError(
            f"{label}: cannot read as HDF5 ({_short_exc(exc)}); it may be corrupt, truncated "
            "or not an HDF5 file"
        ) from None


def _pick_h5_dataset(h5: Any, inner: str | None, path: str, label: str) -> Any:
    import h5py

    if inner is None:
        names = _h5_datasets(h5)
        if len(names) == 1:
            return h5[names[0]]
        if not names:
            raise InputError(f"{label}: {path} holds no datasets")
        raise InputError(
            f"{label}: {path} holds {len(names)} datasets; name one as '{path}:/PATH' "
            f"(datasets: {_list_names(names)})"
        )
    key = inner if inner.startswith("/") else "/" + inner
    try:
        obj = h5.get(key)
    except Exception as exc:
        raise InputError(f"{label}: cannot open '{key}' in {path} ({_short_exc(exc)})") from None
    if obj is None:
        raise InputError(
            f"{label}: no dataset '{key}' in {path} (datasets: {_list_names(_h5_datasets(h5))})"
        )
    if isinstance(obj, h5py.Group):
        raise InputError(
            f"{label}: '{key}' in {path} is a group, not a dataset "
            f"(its datasets: {_list_names(_h5_datasets(obj))}); name one of them"
        )
    if not isinstance(obj, h5py.Dataset):
        raise InputError(f"{label}: '{key}' in {path} is not a dataset")
    return obj


def _h5_dataset_target(ds: Any, label: str) -> np.dtype:
    try:
        dtype = ds.dtype
    except Exception as exc:
        raise InputError(f"{label}: dataset has an unreadable type ({_short_exc(exc)})") from None
    target = _target_dtype(dtype, label, h5=True)
    _check_shape(ds.shape, label)
    return target


def _read_h5(path: str, inner: str | None, label: str) -> np.ndarray:
    with _open_h5(path, label) as h5:
        ds = _pick_h5_dataset(h5, inner, path, label)
        target = _h5_dataset_target(ds, label)
        _check_memory(ds.shape, target, label)
        try:
            raw = ds[()]
        except Exception as exc:
            raise InputError(
                f"{label}: cannot read dataset '{ds.name}' ({_short_exc(exc)}); the file may be "
                "corrupt"
            ) from None
        return _finish(raw, target, label)


def _read_stdin_bytes(stdin: BinaryIO | None, label: str) -> bytes:
    stream: Any = stdin
    if stream is None:
        stream = getattr(sys.stdin, "buffer", sys.stdin)
    try:
        if stream.isatty():
            raise InputError(
                f"{label}: standard input is a terminal; pipe a .npy stream into it "
                "(e.g. '< A.npy') or give a file"
            )
    except (AttributeError, ValueError, OSError):
        pass
    try:
        data = stream.read()
    except OSError as exc:
        raise InputError(f"{label}: cannot read standard input ({_short_exc(exc)})") from None
    if isinstance(data, str):
        raise InputError(f"{label}: standard input is in text mode; pass a binary stream")
    if not data:
        raise InputError(f"{label}: standard input is empty; pipe a .npy stream into it")
    return bytes(data)


def _read_stdin(stdin: BinaryIO | None, label: str) -> np.ndarray:
    data = _read_stdin_bytes(stdin, label)
    if data[:2] == _ZIP_MAGIC:
        return _read_npz_bytes(data, label)
    if data[:6] != _NPY_MAGIC:
        raise InputError(
            f"{label}: standard input is not a .npy stream; pipe the bytes of a .npy file "
            "(e.g. '< A.npy')"
        )
    return _load_npy_stream(io.BytesIO(data), len(data), label, "a .npy stream")


def _read_npz_bytes(data: bytes, label: str) -> np.ndarray:
    """Accept a .npz stream holding exactly one array on standard input."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        members = _npz_members(zf)
    except Exception as exc:
        raise InputError(
            f"{label}: standard input is neither a .npy nor a readable .npz stream "
            f"({_short_exc(exc)})"
        ) from None
    with zf:
        if len(members) != 1:
            raise InputError(
                f"{label}: standard input is a .npz stream with {len(members)} arrays; pipe a "
                f"single .npy stream instead (arrays: {_list_names(sorted(members))})"
            )
        return _read_npz_member(zf, next(iter(members.values())), label)


def _unknown_form(spec: str, label: str) -> InputError:
    return InputError(f"{label}: unrecognised input form; use {SOURCE_FORMS}")


def read_source(
    spec: str, *, arg: str, stdin: BinaryIO | None = None, vector: bool = False
) -> np.ndarray:
    """Read one input array from ``spec`` and validate it.

    Returns an array of shape (..., m, n) with m, n >= 1 and dtype float32,
    float64, complex64 or complex128 (bool/int become float64, float16 becomes
    float32), all entries finite.  ``arg`` names the argument in error messages.
    ``vector=True`` also accepts arrays of shape (..., k), as a cotangent of the
    singular values is.  Raises InputError for every problem.
    """
    token = _VECTOR_OK.set(bool(vector))
    try:
        return _read_source(spec, arg=arg, stdin=stdin)
    finally:
        _VECTOR_OK.reset(token)


def _read_source(spec: str, *, arg: str, stdin: BinaryIO | None = None) -> np.ndarray:
    label = _label(arg, spec)
    try:
        if spec == "-":
            return _read_stdin(stdin, label)
        if not spec:
            raise InputError(f"{arg}: empty input spec; use {SOURCE_FORMS}")
        parts = _split_spec(spec)
        if parts is None:
            raise _unknown_form(spec, label)
        path, ext, inner = parts
        if ext in _NPY_EXTS:
            if inner is not None:
                raise InputError(
                    f"{label}: a .npy file holds a single array; drop ':{inner}' from the spec"
                )
            return _read_npy_file(path, label)
        if ext in _NPZ_EXTS:
            return _read_npz(path, inner, label)
        return _read_h5(path, inner, label)
    except InputError:
        raise
    except MemoryError:
        raise InputError(f"{label}: not enough memory to load this array") from None
    except Exception as exc:  # last line of defence: never leak a raw exception
        raise InputError(f"{label}: cannot read ({_short_exc(exc)})") from None


# --------------------------------------------------------------------------- lazy sources


class LazySource:
    """An input read in chunks along its first batch axis.

    ``shape`` and ``dtype`` describe the array as :func:`read_source` would
    return it (dtype after promotion).  ``batch_len`` is the length of the first
    batch axis (``shape[0]`` when ``ndim > 2``; 1 for a single matrix).
    ``read(start, stop)`` returns rows ``[start:stop]`` of that axis, converted
    and checked for NaN/Inf.  For a 2-D source there is no batch axis and
    ``read(0, 1)`` returns the whole matrix (shape (m, n)).
    """

    def __init__(
        self,
        spec: str,
        arg: str,
        shape: tuple[int, ...],
        dtype: np.dtype,
        reader: Callable[[int, int], np.ndarray],
        closer: Callable[[], None] | None = None,
    ) -> None:
        self.spec = spec
        self.arg = arg
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self._reader = reader
        self._closer = closer
        self._label = _label(arg, spec)
        self.closed = False

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def batch_len(self) -> int:
        return self.shape[0] if len(self.shape) > 2 else 1

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
                f"{self._label}: cannot read rows [{start}:{stop}] ({_short_exc(exc)}); the "
                "file may be corrupt"
            ) from None
        where = f"rows [{start}:{stop}] " if self.ndim > 2 else ""
        return _finish(raw, self.dtype, self._label, where)

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


def _in_memory_source(spec: str, arg: str, arr: np.ndarray) -> LazySource:
    def reader(start: int, stop: int) -> np.ndarray:
        return arr[start:stop] if arr.ndim > 2 else arr

    return LazySource(spec, arg, arr.shape, arr.dtype, reader)


def open_source_lazy(spec: str, *, arg: str, stdin: BinaryIO | None = None) -> LazySource:
    """Open ``spec`` for chunked reading (see :class:`LazySource`).

    .h5 datasets are sliced on demand and .npy files are memory-mapped; .npz
    archives and standard input are loaded fully.  Raises InputError.
    """
    label = _label(arg, spec)
    try:
        parts = _split_spec(spec) if spec and spec != "-" else None
        if parts is None or parts[1] in _NPZ_EXTS:
            return _in_memory_source(spec, arg, read_source(spec, arg=arg, stdin=stdin))
        path, ext, inner = parts
        if ext in _NPY_EXTS:
            if inner is not None:
                raise InputError(
                    f"{label}: a .npy file holds a single array; drop ':{inner}' from the spec"
                )
            with _open_file(path, label) as f:
                hdr = _parse_npy_header(f, os.fstat(f.fileno()).st_size, label, check_memory=False)
            target = _target_dtype(hdr.dtype, label)
            try:
                mm = np.load(path, mmap_mode="r", allow_pickle=False)
            except Exception as exc:
                raise InputError(f"{label}: cannot map the file ({_short_exc(exc)})") from None

            holder: dict[str, Any] = {"mm": mm}

            def npy_reader(start: int, stop: int) -> np.ndarray:
                m = holder["mm"]
                return np.array(m[start:stop] if m.ndim > 2 else m, dtype=target)

            def npy_closer() -> None:
                holder.clear()  # the mapping is released once unreferenced

            return LazySource(spec, arg, hdr.shape, target, npy_reader, npy_closer)
        h5 = _open_h5(path, label)
        try:
            ds = _pick_h5_dataset(h5, inner, path, label)
            target = _h5_dataset_target(ds, label)
        except BaseException:
            h5.close()
            raise

        def h5_reader(start: int, stop: int) -> np.ndarray:
            return ds[start:stop] if len(ds.shape) > 2 else ds[()]

        return LazySource(spec, arg, ds.shape, target, h5_reader, h5.close)
    except InputError:
        raise
    except MemoryError:
        raise InputError(f"{label}: not enough memory to load this array") from None
    except Exception as exc:
        raise InputError(f"{label}: cannot read ({_short_exc(exc)})") from None


# --------------------------------------------------------------------------- destinations


def _dest_label(dest: str) -> str:
    return "output '-' (standard output)" if dest == "-" else f"output '{dest}'"


def _parse_dest(dest: str) -> tuple[str, str, str | None]:
    """(path, ext, group) for a file destination; OutputError for an unknown form."""
    label = _dest_label(dest)
    if not dest:
        raise OutputError(f"output: empty destination; use {DEST_FORMS}")
    parts = _split_spec(dest)
    if parts is None:
        raise OutputError(f"{label}: unrecognised destination form; use {DEST_FORMS}")
    path, ext, inner = parts
    if inner is not None and ext not in _H5_EXTS:
        raise OutputError(
            f"{label}: only .h5/.hdf5 destinations take a ':/GROUP' suffix; drop ':{inner}'"
        )
    group = None
    if inner is not None:
        group = "/" + inner.strip("/")
    return path, ext, group


def _same_file(a: pathlib.Path, b: pathlib.Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def _h5_path(inner: str | None) -> str | None:
    return None if inner is None else "/" + "/".join(p for p in inner.split("/") if p)


def _check_destination(
    path: str,
    label: str,
    inputs: Iterable[str | None],
    h5_written: Iterable[str] | None = None,
) -> pathlib.Path:
    """Checks done before writing anything; returns the destination path.

    h5_written: for an .h5 destination, the dataset paths that will be written. Adding
    datasets to an .h5 file that is also an input is allowed (the file is updated through a
    copy that replaces it at the end, so the inputs stay readable throughout) as long as no
    input dataset is among them; any other output that is the same file as an input is refused.
    """
    written = None if h5_written is None else {_h5_path(w) for w in h5_written}
    p = pathlib.Path(path)
    directory = p.parent if str(p.parent) != "" else pathlib.Path(".")
    if not directory.exists():
        raise OutputError(
            f"{label}: directory '{directory}' does not exist; create it or choose another path"
        )
    if not directory.is_dir():
        raise OutputError(f"{label}: '{directory}' is not a directory; choose another path")
    if p.is_dir():
        raise OutputError(f"{label}: '{path}' is a directory; give a file name")
    for spec in inputs or ():
        src = source_paths(spec) if spec else None
        if src is not None and _same_file(src, p):
            parts = _split_spec(spec)
            inner = _h5_path(parts[2]) if parts is not None and parts[1] in _H5_EXTS else None
            if written is not None and inner is not None and inner not in written:
                continue
            if written is not None and inner is not None:
                raise OutputError(
                    f"{label}: would overwrite the input dataset '{spec}'; write under another "
                    "group (PATH.h5:/GROUP) or to another file"
                )
            raise OutputError(
                f"{label}: is the same file as the input '{spec}'; choose another output file"
            )
    if p.exists() and not os.access(p, os.W_OK):
        raise OutputError(f"{label}: file is read-only; make it writable or choose another path")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OutputError(f"{label}: directory '{directory}' is not writable; choose another path")
    return p


def _select(results: Mapping[str, Any], only: str | None, label: str) -> dict[str, np.ndarray]:
    if not isinstance(results, Mapping) or not results:
        raise InputError(f"{label}: there are no results to write")
    names = list(results)
    if only is not None:
        if only not in results:
            raise InputError(
                f"--only: unknown output '{only}'; choose one of: {_list_names(names)}"
            )
        names = [only]
    selected: dict[str, np.ndarray] = {}
    for name in names:
        if not isinstance(name, str) or not name or "\x00" in name:
            raise InputError(f"{label}: invalid output name {name!r}")
        try:
            arr = np.asarray(results[name])
        except Exception as exc:
            raise InputError(
                f"{label}: output '{name}' is not an array ({_short_exc(exc)})"
            ) from None
        if arr.dtype.hasobject or arr.dtype.kind not in "biufc":
            raise InputError(
                f"{label}: output '{name}' has dtype {arr.dtype}; only numeric arrays can be saved"
            )
        selected[name] = arr
    return selected


def _npy_write(f: BinaryIO, arr: np.ndarray) -> None:
    """Write one array in .npy format (never pickles)."""
    np.lib.format.write_array(f, np.asarray(arr), allow_pickle=False)


def _npz_write(f: BinaryIO, arrays: Mapping[str, np.ndarray]) -> None:
    """Write an uncompressed .npz archive with one member ``NAME.npy`` per array."""
    with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, arr in arrays.items():
            with zf.open(name + ".npy", mode="w", force_zip64=True) as member:
                _npy_write(member, arr)


def _h5_put(group: Any, name: str, arr: np.ndarray) -> None:
    """Create (replacing any existing object) dataset ``name`` under ``group``."""
    if name in group:
        del group[name]
    group.create_dataset(name, data=np.asarray(arr))


def _h5_group(h5: Any, group: str | None, label: str) -> Any:
    import h5py

    if group is None or group == "/":
        return h5
    existing = h5.get(group)
    if existing is not None and not isinstance(existing, h5py.Group):
        raise OutputError(
            f"{label}: '{group}' already exists in the file and is not a group; "
            "choose another group"
        )
    try:
        return h5.require_group(group)
    except Exception as exc:
        raise OutputError(f"{label}: cannot create group '{group}' ({_short_exc(exc)})") from None


def _new_file_mode(existing: pathlib.Path) -> int:
    try:
        return existing.stat().st_mode & 0o7777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: pathlib.Path) -> None:
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _AtomicTarget:
    """A temporary file next to ``dest`` that replaces it on commit()."""

    def __init__(self, dest: pathlib.Path, label: str) -> None:
        self.dest = dest
        self.label = label
        self.directory = dest.parent if str(dest.parent) != "" else pathlib.Path(".")
        try:
            fd, tmp = tempfile.mkstemp(
                prefix=f".{dest.name}.", suffix=_TMP_SUFFIX, dir=self.directory
            )
        except PermissionError:
            raise OutputError(
                f"{label}: directory '{self.directory}' is not writable; choose another path"
            ) from None
        except OSError as exc:
            raise OutputError(
                f"{label}: cannot create a temporary file ({_short_exc(exc)})"
            ) from None
        os.close(fd)
        self.tmp = tmp

    def commit(self) -> None:
        try:
            _fsync_path(self.tmp)
            os.chmod(self.tmp, _new_file_mode(self.dest))
            os.replace(self.tmp, self.dest)
        except PermissionError:
            raise OutputError(
                f"{self.label}: permission denied; make it writable or choose another path"
            ) from None
        except OSError as exc:
            raise OutputError(f"{self.label}: cannot write ({_short_exc(exc)})") from None
        _fsync_dir(self.directory)

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)


def _copy_existing_h5(dest: pathlib.Path, tmp: str, label: str) -> bool:
    """Copy an existing HDF5 destination to ``tmp``; False when there is nothing to copy."""
    if not dest.exists():
        return False
    import h5py

    try:
        ok = h5py.is_hdf5(str(dest))
    except Exception:
        ok = False
    if not ok:
        raise OutputError(
            f"{label}: exists but is not an HDF5 file; delete it or choose another path"
        )
    try:
        shutil.copyfile(dest, tmp)
    except PermissionError:
        raise OutputError(f"{label}: cannot read the existing file to update it") from None
    except OSError as exc:
        raise OutputError(f"{label}: cannot copy the existing file ({_short_exc(exc)})") from None
    return True


def _open_h5_tmp(dest: pathlib.Path, tmp: str, label: str) -> Any:
    import h5py

    existed = _copy_existing_h5(dest, tmp, label)
    try:
        return h5py.File(tmp, "r+" if existed else "w")
    except Exception as exc:
        raise OutputError(
            f"{label}: cannot open for writing ({_short_exc(exc)}); the existing file may be "
            "corrupt"
        ) from None


def _write_to_stdout(
    stdout: BinaryIO | None, arrays: dict[str, np.ndarray], only: str | None, label: str
) -> None:
    buf = io.BytesIO()
    if only is not None:
        _npy_write(buf, arrays[only])
    else:
        _npz_write(buf, arrays)
    stream: Any = stdout
    if stream is None:
        stream = getattr(sys.stdout, "buffer", None)
        if stream is None:
            raise OutputError(f"{label}: standard output does not accept binary data")
    try:
        stream.write(buf.getbuffer())
        stream.flush()
    except TypeError:
        raise OutputError(
            f"{label}: standard output is in text mode; pass a binary stream"
        ) from None
    except OSError as exc:
        raise OutputError(f"{label}: cannot write to standard output ({_short_exc(exc)})") from None


def write_results(
    dest: str,
    results: dict[str, np.ndarray],
    *,
    only: str | None = None,
    stdout: BinaryIO | None = None,
    inputs: Iterable[str | None] = (),
) -> None:
    """Write ``results`` (name -> array) to ``dest`` atomically.

    ``only`` selects a single output by name (required for a .npy destination).
    ``inputs`` are the source specs of the run: writing over one of them is refused.
    Raises InputError/OutputError; on any failure (KeyboardInterrupt included)
    the temporary file is removed and an existing destination is left untouched.
    """
    label = _dest_label(dest)
    if dest == "-":
        arrays = _select(results, only, label)
        _write_to_stdout(stdout, arrays, only, label)
        return
    path, ext, group = _parse_dest(dest)
    if ext in _NPY_EXTS and only is None:
        names = list(results) if isinstance(results, Mapping) else []
        raise OutputError(
            f"{label}: a .npy file holds one array; add --only NAME "
            f"(one of: {_list_names(names)}) or write a .npz/.h5 file"
        )
    arrays = _select(results, only, label)
    written = [f"{group or ''}/{name}" for name in arrays] if ext in _H5_EXTS else None
    p = _check_destination(path, label, inputs, written)
    target = _AtomicTarget(p, label)
    try:
        if ext in _H5_EXTS:
            h5 = _open_h5_tmp(p, target.tmp, label)
            try:
                grp = _h5_group(h5, group, label)
                for name, arr in arrays.items():
                    try:
                        _h5_put(grp, name, arr)
                    except (OutputError, MemoryError):
                        raise
                    except (OSError, ValueError, TypeError, KeyError) as exc:
                        raise OutputError(
                            f"{label}: cannot write dataset '{name}' ({_short_exc(exc)})"
                        ) from None
            finally:
                h5.close()
        else:
            try:
                with open(target.tmp, "wb") as f:
                    if ext in _NPY_EXTS:
                        _npy_write(f, arrays[only])  # type: ignore[index]
                    else:
                        _npz_write(f, arrays)
            except OSError as exc:
                raise OutputError(f"{label}: cannot write ({_short_exc(exc)})") from None
        target.commit()
    except BaseException:
        target.discard()
        raise


def _stream_chunks(shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, ...] | None:
    """Chunks of whole rows along the first axis, about 1 MiB each (None: contiguous)."""
    if len(shape) == 0 or math.prod(shape) == 0:
        return None
    row_bytes = max(1, math.prod(shape[1:]) * np.dtype(dtype).itemsize)
    rows = max(1, min(shape[0], (1 << 20) // row_bytes))
    return (rows, *shape[1:])


class H5StreamWriter:
    """Write large outputs into an .h5 destination chunk by chunk.

    ``names_shapes_dtypes`` maps each output name to (shape, dtype); datasets of
    those shapes are created (under ``PATH.h5:/GROUP`` if a group is given) in a
    temporary file next to the destination, which starts as a copy of the
    destination when that exists.  ``write(name, start, array)`` stores
    ``array`` at rows ``[start:start+len(array)]`` of the first axis.  On a clean
    exit of the ``with`` block the temporary file replaces the destination; on an
    exception (KeyboardInterrupt included) it is deleted and the exception
    propagates.
    """

    def __init__(
        self,
        dest: str,
        names_shapes_dtypes: Mapping[str, tuple[tuple[int, ...], Any]],
        inputs: Iterable[str | None] = (),
    ) -> None:
        self.dest = dest
        self.label = _dest_label(dest)
        if dest == "-":
            raise OutputError(
                f"{self.label}: streaming output needs an .h5 file; use PATH.h5[:/GROUP]"
            )
        path, ext, group = _parse_dest(dest)
        if ext not in _H5_EXTS:
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
        self.path = path
        self.group = group
        self.inputs = list(inputs or ())
        self._target: _AtomicTarget | None = None
        self._h5: Any = None
        self._datasets: dict[str, Any] = {}

    def __enter__(self) -> H5StreamWriter:
        written = [f"{self.group or ''}/{name}" for name in self.specs]
        p = _check_destination(self.path, self.label, self.inputs, written)
        self._target = _AtomicTarget(p, self.label)
        try:
            self._h5 = _open_h5_tmp(p, self._target.tmp, self.label)
            grp = _h5_group(self._h5, self.group, self.label)
            for name, (shape, dtype) in self.specs.items():
                if name in grp:
                    del grp[name]
                chunks = _stream_chunks(shape, dtype)
                self._datasets[name] = grp.create_dataset(
                    name, shape=shape, dtype=dtype, chunks=chunks
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
                f"{_list_names(list(self._datasets))}"
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
                f"{self.label}: cannot write rows [{start}:{stop}] of '{name}' ({_short_exc(exc)})"
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


# --------------------------------------------------------------------------- summaries


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
