"""HDF5 files through h5py (imported inside the functions, so that importing this is cheap):
datasets read whole or sliced, groups listed, datasets written into a copy of the destination.
"""

from __future__ import annotations

import math
import pathlib
import shutil
from typing import Any

import numpy as np

from . import validate
from .errors import InputError, OutputError, list_names, short_exc
from .files import open_input

# --------------------------------------------------------------------------- reading


def datasets(group: Any) -> list[str]:
    """The full paths of every dataset under ``group``, sorted (what could be visited of a
    partly corrupt file)."""
    import h5py

    found: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            found.append("/" + name if not name.startswith("/") else name)

    try:
        group.visititems(visit)
    except Exception:
        pass
    prefix = group.name.rstrip("/")
    return sorted(prefix + n if prefix else n for n in found)


def open_read(path: str, label: str) -> Any:
    """The file opened read-only; InputError when it is missing or not HDF5."""
    open_input(path, label).close()  # existence and permission, with clear messages
    import h5py

    try:
        return h5py.File(path, "r")
    except Exception as exc:
        raise InputError(
            f"{label}: cannot read as HDF5 ({short_exc(exc)}); it may be corrupt, truncated "
            "or not an HDF5 file"
        ) from None


def pick(h5: Any, inner: str | None, path: str, label: str) -> Any:
    """The dataset ``inner``, or the only one in the file when ``inner`` is None."""
    import h5py

    if inner is None:
        names = datasets(h5)
        if len(names) == 1:
            return h5[names[0]]
        if not names:
            raise InputError(f"{label}: {path} holds no datasets")
        raise InputError(
            f"{label}: {path} holds {len(names)} datasets; name one as '{path}:/PATH' "
            f"(datasets: {list_names(names)})"
        )
    key = inner if inner.startswith("/") else "/" + inner
    try:
        obj = h5.get(key)
    except Exception as exc:
        raise InputError(f"{label}: cannot open '{key}' in {path} ({short_exc(exc)})") from None
    if obj is None:
        raise InputError(
            f"{label}: no dataset '{key}' in {path} (datasets: {list_names(datasets(h5))})"
        )
    if isinstance(obj, h5py.Group):
        raise InputError(
            f"{label}: '{key}' in {path} is a group, not a dataset "
            f"(its datasets: {list_names(datasets(obj))}); name one of them"
        )
    if not isinstance(obj, h5py.Dataset):
        raise InputError(f"{label}: '{key}' in {path} is not a dataset")
    return obj


def target(ds: Any, label: str, *, vector: bool = False) -> np.dtype:
    """The dtype the dataset is read as, after checking its type and shape."""
    try:
        dtype = ds.dtype
    except Exception as exc:
        raise InputError(f"{label}: dataset has an unreadable type ({short_exc(exc)})") from None
    out = validate.target_dtype(dtype, label, h5=True)
    validate.check_shape(ds.shape, label, vector=vector)
    return out


def read(path: str, inner: str | None, label: str, *, vector: bool = False) -> np.ndarray:
    """A validated array from dataset ``inner`` of the file at ``path``."""
    with open_read(path, label) as h5:
        ds = pick(h5, inner, path, label)
        dtype = target(ds, label, vector=vector)
        validate.check_memory(ds.shape, dtype, label)
        try:
            raw = ds[()]
        except Exception as exc:
            raise InputError(
                f"{label}: cannot read dataset '{ds.name}' ({short_exc(exc)}); the file may be "
                "corrupt"
            ) from None
        return validate.finish(raw, dtype, label)


def group_datasets(path: str, group: str, wanted: list[str], label: str, holds: str) -> list[str]:
    """Which of ``wanted`` are datasets directly in ``group``; InputError when the file cannot
    be read or ``group`` is not a group in it (holds: what the group should hold, for that
    message)."""
    import h5py

    h5 = open_read(path, label)
    with h5:
        grp = h5.get(group)
        if not isinstance(grp, h5py.Group):
            raise InputError(
                f"{label}: '{group}' is not a group in {path}; name the group that holds {holds}"
            )
        return [n for n in wanted if isinstance(grp.get(n), h5py.Dataset)]


# --------------------------------------------------------------------------- writing


def put(group: Any, name: str, arr: np.ndarray) -> None:
    """Create (replacing any existing object) dataset ``name`` under ``group``."""
    if name in group:
        del group[name]
    group.create_dataset(name, data=np.asarray(arr))


def require_group(h5: Any, group: str | None, label: str) -> Any:
    """The group (created when missing); OutputError when a dataset has that name."""
    import h5py

    if group is None or group == "/":
        return h5
    existing = h5.get(group)
    if existing is not None and not isinstance(existing, h5py.Group):
        raise OutputError(
            f"{label}: '{group}' already exists in the file and is not a group; "
            "choose another group"
        )
    try:
        return h5.require_group(group)
    except Exception as exc:
        raise OutputError(f"{label}: cannot create group '{group}' ({short_exc(exc)})") from None


def open_update(dest: pathlib.Path, tmp: str, label: str) -> Any:
    """``tmp`` opened for writing: a copy of the destination when that exists (so that an
    existing file is updated, never changed in place), else a new file."""
    import h5py

    existed = dest.exists()
    if existed:
        try:
            ok = h5py.is_hdf5(str(dest))
        except Exception:
            ok = False
        if not ok:
            raise OutputError(
                f"{label}: exists but is not an HDF5 file; delete it or choose another path"
            )
        try:
            shutil.copyfile(dest, tmp)
        except PermissionError:
            raise OutputError(f"{label}: cannot read the existing file to update it") from None
        except OSError as exc:
            raise OutputError(
                f"{label}: cannot copy the existing file ({short_exc(exc)})"
            ) from None
    try:
        return h5py.File(tmp, "r+" if existed else "w")
    except Exception as exc:
        raise OutputError(
            f"{label}: cannot open for writing ({short_exc(exc)}); the existing file may be corrupt"
        ) from None


def row_chunks(shape: tuple[int, ...], dtype: Any) -> tuple[int, ...] | None:
    """HDF5 chunks of whole rows along the first axis, about 1 MiB each (None: contiguous)."""
    if len(shape) == 0 or math.prod(shape) == 0:
        return None
    row_bytes = max(1, math.prod(shape[1:]) * np.dtype(dtype).itemsize)
    rows = max(1, min(shape[0], (1 << 20) // row_bytes))
    return (rows, *shape[1:])
