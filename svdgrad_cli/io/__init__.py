"""Every file access of the ``svdgrad`` command line, one job per module.

=================  ==========================================================================
errors.py          InputError and OutputError (exit status 2), message pieces
spec.py            the SOURCE / DEST / container grammar, parsed once
validate.py        what every input must be: dtype, shape, finite entries, size
files.py           opening an input file, same-file tests
npy.py             the .npy format through numpy.lib.format
npz.py             .npz archives of .npy members
h5.py              HDF5 datasets and groups through h5py
stdio.py           standard input and output, the quiet end of a closed pipe
sources.py         one SOURCE to one validated array
lazy.py            sources read piecewise for streaming (an in-memory array is one too)
containers.py      arrays found by name in a .npz or an .h5 group (--factors, --against)
atomic.py          the one atomic writer: checked, temporary file, rename
results.py         finished results to a DEST; summaries
h5stream.py        results into an .h5 DEST chunk by chunk
=================  ==========================================================================

It depends only on numpy and the standard library (h5py is imported inside the functions that
need it), so that importing it is cheap. It never prints: every problem is an InputError or an
OutputError with a single line that names the argument or file and says what to do about it.
"""

from __future__ import annotations

from .atomic import AtomicTarget, check_destination, open_atomic, write_text
from .containers import named_sources
from .errors import InputError, OutputError
from .h5stream import H5StreamWriter
from .lazy import LazySource, array_source, open_source_lazy
from .results import describe, write_results
from .sources import read_source, read_sources
from .spec import (
    DEST_FORMS,
    SOURCE_FORMS,
    Spec,
    check_single_stdin,
    is_h5_dest,
    parse_container,
    parse_dest,
    parse_source,
    source_paths,
)
from .stdio import silence_stdout

__all__ = [
    "AtomicTarget",
    "DEST_FORMS",
    "H5StreamWriter",
    "InputError",
    "LazySource",
    "OutputError",
    "SOURCE_FORMS",
    "Spec",
    "array_source",
    "check_destination",
    "check_single_stdin",
    "describe",
    "is_h5_dest",
    "named_sources",
    "open_atomic",
    "open_source_lazy",
    "parse_container",
    "parse_dest",
    "parse_source",
    "read_source",
    "read_sources",
    "silence_stdout",
    "source_paths",
    "write_results",
    "write_text",
]
