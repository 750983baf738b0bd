"""Standard input and output: a .npy (or single-array .npz) stream in, a .npz or .npy stream or
text out, and the quiet end of a closed output pipe.

A write to a closed pipe raises BrokenPipeError unchanged: the command line ends quietly on it
(see :func:`silence_stdout`); every other write problem is an OutputError.
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Mapping
from typing import Any, BinaryIO

import numpy as np

from .._pipes import silence_stdout  # noqa: F401  (re-exported: svdgrad_cli.io.silence_stdout)
from . import npy, npz
from .errors import InputError, OutputError, short_exc


def _stdin_bytes(stdin: BinaryIO | None, label: str) -> bytes:
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
        raise InputError(f"{label}: cannot read standard input ({short_exc(exc)})") from None
    if isinstance(data, str):
        raise InputError(f"{label}: standard input is in text mode; pass a binary stream")
    if not data:
        raise InputError(f"{label}: standard input is empty; pipe a .npy stream into it")
    return bytes(data)


def read(stdin: BinaryIO | None, label: str, *, vector: bool = False) -> np.ndarray:
    """A validated array from standard input (or ``stdin``): a .npy stream, or a .npz stream
    holding exactly one array."""
    data = _stdin_bytes(stdin, label)
    if data[: len(npz.ZIP_MAGIC)] == npz.ZIP_MAGIC:
        return npz.read_single(data, label, vector=vector)
    if data[: len(npy.MAGIC)] != npy.MAGIC:
        raise InputError(
            f"{label}: standard input is not a .npy stream; pipe the bytes of a .npy file "
            "(e.g. '< A.npy')"
        )
    return npy.load(io.BytesIO(data), len(data), label, "a .npy stream", vector=vector)


def _binary_stdout(stdout: BinaryIO | None, label: str) -> Any:
    if stdout is not None:
        return stdout
    stream = getattr(sys.stdout, "buffer", None)
    if stream is None:
        raise OutputError(f"{label}: standard output does not accept binary data")
    return stream


def write_all(stream: Any, data: Any) -> None:
    """Write every byte of ``data``: a raw stream (``python -u``) may take only part of a
    large write; the rest is written, never dropped."""
    view = memoryview(data).cast("B")
    while len(view):
        n = stream.write(view)
        if n is None:  # a non-blocking stream that is full: wait a little
            time.sleep(0.001)
            continue
        view = view[n:]
    stream.flush()


def write_arrays(
    stdout: BinaryIO | None, arrays: Mapping[str, np.ndarray], only: str | None, label: str
) -> None:
    """A .npy stream of ``arrays[only]``, or a .npz stream of all ``arrays``."""
    buf = io.BytesIO()
    if only is not None:
        npy.write(buf, arrays[only])
    else:
        npz.write(buf, arrays)
    stream = _binary_stdout(stdout, label)
    try:
        write_all(stream, buf.getbuffer())
    except BrokenPipeError:
        raise
    except TypeError:
        raise OutputError(
            f"{label}: standard output is in text mode; pass a binary stream"
        ) from None
    except OSError as exc:
        raise OutputError(f"{label}: cannot write to standard output ({short_exc(exc)})") from None


def write_text(text: str, label: str, stdout: Any = None) -> None:
    """``text`` on standard output (or ``stdout``), flushed."""
    stream = sys.stdout if stdout is None else stdout
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise OutputError(f"{label}: cannot write to standard output ({short_exc(exc)})") from None
