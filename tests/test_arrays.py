"""svdgrad_cli.arrays: kept for compatibility of internal imports, it re-exports svdgrad_cli.io
(whose modules are tested in tests/test_io_*.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from svdgrad_cli import arrays, io


@pytest.mark.parametrize("module", ["svdgrad_cli.arrays", "svdgrad_cli.io"])
def test_import_is_light(module):
    code = (
        f"import sys, {module}; "
        "bad = [m for m in ('jax', 'typer', 'rich', 'h5py') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_old_names_are_the_io_objects():
    for name in arrays.__all__:
        assert getattr(arrays, name) is getattr(io, name), name
    assert set(arrays.__all__) == {
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
    }
    assert issubclass(arrays.OutputError, arrays.InputError)
