"""The one way a file is written: checked first, written to a temporary file beside the
destination, and renamed over it only when complete. On any failure (KeyboardInterrupt
included) the temporary file is removed and an existing destination is left untouched.

Results (results.py), streamed results (h5stream.py) and text reports (``--json``:
:func:`write_text`) all go through here.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any

from . import spec, stdio
from .errors import OutputError, short_exc
from .files import same_file

TMP_SUFFIX = ".tmp"


def check_destination(
    path: str,
    label: str,
    inputs: Iterable[str | None] = (),
    h5_written: Iterable[str] | None = None,
) -> pathlib.Path:
    """Checks done before writing anything; returns the destination path.

    inputs: the sources of the run; writing over one of them is refused.
    h5_written: for an .h5 destination, the dataset paths that will be written. Adding datasets
    to an .h5 file that is also an input is allowed (the file is updated through a copy that
    replaces it at the end, so the inputs stay readable throughout) as long as no input dataset
    is among them; any other output that is the same file as an input is refused.
    """
    written = None if h5_written is None else {spec.h5_path(w) for w in h5_written}
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
    for source in inputs or ():
        src = spec.source_paths(source) if source else None
        if src is not None and same_file(src, p):
            parts = spec.split_spec(source)  # type: ignore[arg-type]
            inner = (
                spec.h5_path(parts[2]) if parts is not None and parts[1] in spec.H5_EXTS else None
            )
            if written is not None and inner is not None and inner not in written:
                continue
            if written is not None and inner is not None:
                raise OutputError(
                    f"{label}: would overwrite the input dataset '{source}'; write under another "
                    "group (PATH.h5:/GROUP) or to another file"
                )
            raise OutputError(
                f"{label}: is the same file as the input '{source}'; choose another output file"
            )
    if p.exists() and not os.access(p, os.W_OK):
        raise OutputError(f"{label}: file is read-only; make it writable or choose another path")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OutputError(f"{label}: directory '{directory}' is not writable; choose another path")
    return p


def _new_file_mode(existing: pathlib.Path) -> int:
    """The mode of the file replaced, else what the umask gives a new file."""
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


class AtomicTarget:
    """A temporary file ``tmp`` next to ``dest`` that replaces it on commit().

    Use as a context manager: a clean exit commits, an exception discards.
    """

    def __init__(self, dest: pathlib.Path, label: str) -> None:
        self.dest = dest
        self.label = label
        self.directory = dest.parent if str(dest.parent) != "" else pathlib.Path(".")
        try:
            fd, tmp = tempfile.mkstemp(
                prefix=f".{dest.name}.", suffix=TMP_SUFFIX, dir=self.directory
            )
        except PermissionError:
            raise OutputError(
                f"{label}: directory '{self.directory}' is not writable; choose another path"
            ) from None
        except OSError as exc:
            raise OutputError(
                f"{label}: cannot create a temporary file ({short_exc(exc)})"
            ) from None
        os.close(fd)
        self.tmp = tmp

    def commit(self) -> None:
        try:
            _fsync_path(self.tmp)
            os.chmod(self.tmp, _new_file_mode(self.dest))
            os.replace(self.tmp, self.dest)
        except PermissionError:
            self.discard()
            raise OutputError(
                f"{self.label}: permission denied; make it writable or choose another path"
            ) from None
        except OSError as exc:
            self.discard()
            raise OutputError(f"{self.label}: cannot write ({short_exc(exc)})") from None
        _fsync_dir(self.directory)

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)

    def __enter__(self) -> AtomicTarget:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc_type is None:
            self.commit()
        else:
            self.discard()
        return False


@contextlib.contextmanager
def open_atomic(
    path: str, label: str, mode: str = "wb", inputs: Iterable[str | None] = ()
) -> Iterator[Any]:
    """``path`` checked and opened for writing through a temporary file that replaces it when
    the block ends cleanly. OSError while writing becomes OutputError."""
    p = check_destination(path, label, inputs)
    with AtomicTarget(p, label) as target:
        try:
            with open(target.tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
                yield f
        except OSError as exc:
            if isinstance(exc, BrokenPipeError):
                raise
            raise OutputError(f"{label}: cannot write ({short_exc(exc)})") from None


def write_text(dest: str, text: str, *, option: str = "--json", stdout: Any = None) -> None:
    """Write a text report (``--json REPORT``) to a file atomically, or to standard output
    when ``dest`` is ``-``. OutputError (naming ``option``) for a bad destination."""
    label = f"{option} '{dest}'"
    if dest == spec.STDIO:
        stdio.write_text(text, label, stdout)
        return
    with open_atomic(dest, label, "w") as f:
        f.write(text)
