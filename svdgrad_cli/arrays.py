"""Kept for compatibility of internal imports: the I/O layer now lives in :mod:`svdgrad_cli.io`
(one module per job). Import from there; this module only re-exports its public names."""

from __future__ import annotations

from .io import (
    DEST_FORMS,
    SOURCE_FORMS,
    H5StreamWriter,
    InputError,
    LazySource,
    OutputError,
    check_single_stdin,
    describe,
    open_source_lazy,
    read_source,
    source_paths,
    write_results,
)

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
