"""Arrays found by name in a container: a .npz archive, or a group of an .h5 file
(``vjp --factors``, ``check --against``)."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

from . import h5, npz, spec
from .errors import InputError


def named_sources(
    spec_text: str, option: str, names: Sequence[str], holding: str
) -> dict[str, str]:
    """The SOURCE of each of ``names`` that the container ``spec_text`` holds, in the order of
    ``names`` (``f.npz`` gives ``f.npz:U``; ``out.h5:/jvp`` gives ``out.h5:/jvp/U``; the root
    group when none is named). Nothing is read but the list of names.

    InputError (naming ``option``) when the form is wrong, the file or group does not exist or
    cannot be read; which names are required is the caller's business. holding: what the
    container must hold, for the messages.
    """
    parsed = spec.parse_container(spec_text, option, holding)
    label = f"{option} '{spec_text}'"
    assert parsed.path is not None
    if not pathlib.Path(parsed.path).is_file():
        raise InputError(f"{label}: file not found; check the path")
    if parsed.kind == spec.NPZ:
        present = set(npz.names(parsed.path, label))
        return {n: f"{parsed.path}:{n}" for n in names if n in present}
    group = parsed.inner or "/"
    found = h5.group_datasets(parsed.path, group, list(names), label, holding)
    prefix = group.rstrip("/")
    return {n: f"{parsed.path}:{prefix}/{n}" for n in found}
