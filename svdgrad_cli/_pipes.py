"""Standard output after its reader went away: standard library only, so that the help pages'
fast path (svdgrad_cli.cli._helpcache) and the I/O layer share it."""

from __future__ import annotations

import os
import sys


def silence_stdout() -> None:
    """Point standard output at the null device, after its reader went away: what is still
    buffered is dropped there, and Python does not report a BrokenPipeError at exit (as the
    Python documentation's note on SIGPIPE recommends)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    try:
        os.dup2(devnull, fd)
    except OSError:
        pass
    finally:
        os.close(devnull)
