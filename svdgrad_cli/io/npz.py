"""The .npz format: a zip archive of .npy members, read member by member through npy.py and
written uncompressed (one member ``NAME.npy`` per array)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from typing import Any, BinaryIO

import numpy as np

from . import npy
from .errors import InputError, list_names, short_exc
from .files import open_input

ZIP_MAGIC = b"PK"


def members(zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """The archive's arrays by name (``NAME`` for a member ``NAME.npy``)."""
    found: dict[str, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        if info.is_dir():
            continue
        name = info.filename
        found[name[:-4] if name.endswith(".npy") else name] = info
    return found


def open_archive(path: str, label: str) -> tuple[BinaryIO, zipfile.ZipFile, dict[str, Any]]:
    """The open file, the archive and its members; InputError when it is not an archive."""
    f = open_input(path, label)
    try:
        zf = zipfile.ZipFile(f)
        found = members(zf)
    except Exception as exc:
        f.close()
        raise InputError(
            f"{label}: not a readable .npz archive ({short_exc(exc)}); it may be truncated "
            "or corrupt"
        ) from None
    return f, zf, found


def names(path: str, label: str) -> list[str]:
    """The names of the arrays in an archive."""
    f, zf, found = open_archive(path, label)
    with f, zf:
        return sorted(found)


def pick(
    found: dict[str, zipfile.ZipInfo], name: str | None, path: str, label: str
) -> zipfile.ZipInfo:
    """The member ``name`` (with or without ``.npy``), or the only one when ``name`` is None."""
    listed = sorted(found)
    if name is None:
        if len(found) == 1:
            return found[listed[0]]
        if not found:
            raise InputError(f"{label}: the archive holds no arrays")
        raise InputError(
            f"{label}: {path} holds {len(listed)} arrays; name one as '{path}:NAME' "
            f"(arrays: {list_names(listed)})"
        )
    key = name[:-4] if name.endswith(".npy") and name[:-4] in found else name
    if key not in found:
        raise InputError(f"{label}: no array '{name}' in {path} (arrays: {list_names(listed)})")
    return found[key]


def read_member(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, label: str, *, vector: bool = False
) -> np.ndarray:
    try:
        with zf.open(info) as member:
            return npy.load(member, info.file_size, label, "a .npy array member", vector=vector)
    except (InputError, MemoryError):
        raise
    except Exception as exc:  # BadZipFile (CRC), zlib.error, OSError, EOFError, ...
        raise InputError(
            f"{label}: cannot read member '{info.filename}' ({short_exc(exc)}); the archive "
            "may be truncated or corrupt"
        ) from None


def read(path: str, name: str | None, label: str, *, vector: bool = False) -> np.ndarray:
    """A validated array from member ``name`` of the archive at ``path``."""
    f, zf, found = open_archive(path, label)
    with f, zf:
        return read_member(zf, pick(found, name, path, label), label, vector=vector)


def read_single(data: bytes, label: str, *, vector: bool = False) -> np.ndarray:
    """The one array of a .npz stream held in ``data`` (standard input)."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        found = members(zf)
    except Exception as exc:
        raise InputError(
            f"{label}: standard input is neither a .npy nor a readable .npz stream "
            f"({short_exc(exc)})"
        ) from None
    with zf:
        if len(found) != 1:
            raise InputError(
                f"{label}: standard input is a .npz stream with {len(found)} arrays; pipe a "
                f"single .npy stream instead (arrays: {list_names(sorted(found))})"
            )
        return read_member(zf, next(iter(found.values())), label, vector=vector)


def write(f: Any, arrays: Mapping[str, np.ndarray]) -> None:
    """Write an uncompressed archive with one member ``NAME.npy`` per array."""
    with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, arr in arrays.items():
            with zf.open(name + ".npy", mode="w", force_zip64=True) as member:
                npy.write(member, arr)
