"""svdgrad_cli.io imports nothing heavy: the help pages and the embedded default read and write
arrays without JAX, typer, rich or h5py (h5py comes when an .h5 file is touched)."""

from __future__ import annotations

import subprocess
import sys


def test_import_is_light():
    code = (
        "import sys, svdgrad_cli.io; "
        "bad = [m for m in ('jax', 'typer', 'rich', 'h5py') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
