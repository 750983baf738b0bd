"""Opening an input file, with a message that says what is wrong with the path."""

from __future__ import annotations

import os
import pathlib
from typing import BinaryIO

from .errors import InputError, short_exc


def open_input(path: str, label: str) -> BinaryIO:
    """``path`` opened for binary reading; InputError when missing, a directory or unreadable."""
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
        raise InputError(f"{label}: cannot open ({short_exc(exc)})") from None


def file_size(f: BinaryIO) -> int:
    return os.fstat(f.fileno()).st_size


def same_file(a: pathlib.Path, b: pathlib.Path) -> bool:
    """Whether two paths name one file (through links and ``..`` too)."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)
