"""Reading whole inputs: one SOURCE to one validated array, whatever its kind."""

from __future__ import annotations

from collections.abc import Iterable
from typing import BinaryIO

import numpy as np

from . import h5, npy, npz, spec, stdio
from .errors import InputError, short_exc, source_label


def read_source(
    source: str, *, arg: str, stdin: BinaryIO | None = None, vector: bool = False
) -> np.ndarray:
    """Read one input array from ``source`` and validate it.

    Returns an array of shape (..., m, n) with m, n >= 1 and dtype float32, float64, complex64
    or complex128 (bool/int become float64, float16 becomes float32), all entries finite.
    ``arg`` names the argument in error messages. ``vector=True`` also accepts arrays of shape
    (..., k), as a cotangent of the singular values is. Raises InputError for every problem.
    """
    label = source_label(arg, source)
    try:
        parsed = spec.parse_source(source, arg)
        if parsed.kind == spec.STD:
            return stdio.read(stdin, label, vector=vector)
        assert parsed.path is not None
        if parsed.kind == spec.NPY:
            return npy.read(parsed.path, label, vector=vector)
        if parsed.kind == spec.NPZ:
            return npz.read(parsed.path, parsed.inner, label, vector=vector)
        return h5.read(parsed.path, parsed.inner, label, vector=vector)
    except InputError:
        raise
    except MemoryError:
        raise InputError(f"{label}: not enough memory to load this array") from None
    except Exception as exc:  # a file that fails in a way not foreseen: still the input's fault
        raise InputError(f"{label}: cannot read ({short_exc(exc)})") from None


def read_sources(
    sources: Iterable[tuple[str, str | None, bool]], *, stdin: BinaryIO | None = None
) -> dict[str, np.ndarray]:
    """Read (argument name, SOURCE or None, is-a-vector) triples; None sources are skipped.

    At most one of them may be standard input.
    """
    sources = list(sources)
    spec.check_single_stdin([s for _, s, _ in sources], [a for a, _, _ in sources])
    return {
        arg: read_source(src, arg=arg, stdin=stdin, vector=vector)
        for arg, src, vector in sources
        if src is not None
    }
