"""The SOURCE and DEST grammar, parsed here and nowhere else.

Sources
    ``PATH.npy``                  one array
    ``PATH.npz[:NAME]``           NAME may be left out if the archive holds one array
    ``PATH.h5[:/group/dataset]``  (or ``.hdf5``) the path may be left out if the file holds
                                  exactly one dataset
    ``-``                         a .npy stream on standard input

Destinations
    ``PATH.npz``                  all outputs, by name
    ``PATH.h5[:/group]``          one dataset per output (an existing file is updated)
    ``PATH.npy``                  one output, selected with ``only``
    ``-``                         standard output: a .npz stream, or .npy with ``only``

Containers (``--factors``, ``--against``): ``PATH.npz`` or ``PATH.h5[:/group]``, whose arrays
are read by name.

A path may itself hold ``.npz:`` or ``.h5:``; when the text is ambiguous, the split whose PATH
names an existing file wins. Nothing here opens a file.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import InputError, OutputError, dest_label, source_label

SOURCE_FORMS = (
    "PATH.npy, PATH.npz[:NAME], PATH.h5[:/DATASET] (or .hdf5), "
    "or - for a .npy stream on standard input"
)
DEST_FORMS = (
    "PATH.npz, PATH.h5[:/GROUP] (or .hdf5), PATH.npy with --only NAME, or - for standard output"
)

STDIO = "-"
NPY_EXTS = (".npy",)
NPZ_EXTS = (".npz",)
H5_EXTS = (".h5", ".hdf5")
ALL_EXTS = NPY_EXTS + NPZ_EXTS + H5_EXTS

#: the kinds of a parsed spec
STD, NPY, NPZ, H5 = "std", "npy", "npz", "h5"


@dataclass(frozen=True)
class Spec:
    """A parsed source or destination.

    kind: ``std`` (standard input or output), ``npy``, ``npz`` or ``h5``; path: the file (None
    for ``std``); inner: the npz member, the h5 dataset (sources) or the h5 group (destinations,
    containers; ``/``-rooted), or None.
    """

    kind: str
    path: str | None = None
    inner: str | None = None


def _kind(ext: str) -> str:
    return NPY if ext in NPY_EXTS else NPZ if ext in NPZ_EXTS else H5


def split_spec(spec: str) -> tuple[str, str, str | None] | None:
    """Split ``PATH.ext[:INNER]`` into (path, ext, inner); None for an unknown form.

    When the text is ambiguous, a split whose PATH names an existing file wins.
    """
    low = spec.lower()
    whole = next((e for e in ALL_EXTS if low.endswith(e) and len(spec) > len(e)), None)
    if whole is not None and os.path.isfile(spec):
        return spec, whole, None
    candidates: list[tuple[int, str]] = []
    for ext in ALL_EXTS:
        start = 0
        while (i := low.find(ext + ":", start)) != -1:
            if i > 0:
                candidates.append((i + len(ext), ext))
            start = i + 1
    candidates.sort()
    for pos, ext in candidates:
        if os.path.isfile(spec[:pos]):
            return spec[:pos], ext, (spec[pos + 1 :] or None)
    if whole is not None:
        return spec, whole, None
    if not candidates:
        return None
    pos, ext = candidates[0]
    return spec[:pos], ext, (spec[pos + 1 :] or None)


def h5_path(inner: str | None) -> str | None:
    """An h5 object path in one spelling: ``/a/b`` for ``a/b``, ``/a//b/`` ... (None stays)."""
    return None if inner is None else "/" + "/".join(p for p in inner.split("/") if p)


def parse_source(spec: str, arg: str) -> Spec:
    """The parsed source; InputError (naming ``arg``) for a form that is not a source."""
    if spec == STDIO:
        return Spec(STD)
    if not spec:
        raise InputError(f"{arg}: empty input spec; use {SOURCE_FORMS}")
    label = source_label(arg, spec)
    parts = split_spec(spec)
    if parts is None:
        raise InputError(f"{label}: unrecognised input form; use {SOURCE_FORMS}")
    path, ext, inner = parts
    kind = _kind(ext)
    if kind == NPY and inner is not None:
        raise InputError(
            f"{label}: a .npy file holds a single array; drop ':{inner}' from the spec"
        )
    return Spec(kind, path, inner)


def parse_dest(dest: str) -> Spec:
    """The parsed destination (its group ``/``-rooted); OutputError for an unknown form."""
    if dest == STDIO:
        return Spec(STD)
    if not dest:
        raise OutputError(f"output: empty destination; use {DEST_FORMS}")
    label = dest_label(dest)
    parts = split_spec(dest)
    if parts is None:
        raise OutputError(f"{label}: unrecognised destination form; use {DEST_FORMS}")
    path, ext, inner = parts
    kind = _kind(ext)
    if inner is not None and kind != H5:
        raise OutputError(
            f"{label}: only .h5/.hdf5 destinations take a ':/GROUP' suffix; drop ':{inner}'"
        )
    return Spec(kind, path, None if inner is None else "/" + inner.strip("/"))


def parse_container(spec: str, option: str, holding: str) -> Spec:
    """A ``PATH.npz`` or ``PATH.h5[:/GROUP]`` whose arrays are read by name (its group
    ``/``-rooted, ``/`` when none is named); InputError for any other form.

    holding: what the container must hold, for the message (``U, S, Vh``).
    """
    parts = split_spec(spec) if spec and spec != STDIO else None
    if parts is None or _kind(parts[1]) == NPY:
        raise InputError(
            f"{option} '{spec}': needs a .npz file or PATH.h5[:/GROUP] holding {holding}"
        )
    path, ext, inner = parts
    if _kind(ext) == NPZ:
        if inner:
            raise InputError(
                f"{option} '{spec}': give the .npz file alone; its arrays are read from it by name"
            )
        return Spec(NPZ, path)
    group = "/" + inner.strip("/") if inner and inner.strip("/") else "/"
    return Spec(H5, path, group)


def source_paths(spec: str | None) -> pathlib.Path | None:
    """The file that a source (or destination) spec reads; None for ``-`` or no spec."""
    if spec is None or spec == STDIO or spec == "":
        return None
    parts = split_spec(spec)
    if parts is None:
        return pathlib.Path(spec)
    return pathlib.Path(parts[0])


def is_h5_dest(dest: str | None) -> bool:
    """Whether ``dest`` names an .h5 destination (the one kind that can be written piecewise)."""
    if dest is None or dest == STDIO or not dest:
        return False
    parts = split_spec(dest)
    return parts is not None and _kind(parts[1]) == H5


def check_single_stdin(specs: Iterable[str | None], names: Iterable[str] | None = None) -> None:
    """Raise InputError if more than one of ``specs`` is ``-`` (standard input).

    ``names`` optionally gives the argument names matching ``specs`` for the message.
    """
    specs = list(specs)
    names_list = list(names) if names is not None else []
    hits = [i for i, s in enumerate(specs) if s == STDIO]
    if len(hits) > 1:
        if len(names_list) == len(specs):
            who = ", ".join(names_list[i] for i in hits)
            raise InputError(
                f"standard input ('-') can feed only one argument, but {who} all use it; "
                "save the others to files"
            )
        raise InputError(
            f"standard input ('-') can feed only one argument, but {len(hits)} arguments use it; "
            "save the others to files"
        )
