"""Compiled programs kept across runs of the command line.

JAX's persistent compilation cache saves XLA's compilation, but every run still traces and
lowers the rule (about 0.4 s for a small jvp), which is most of a short command's time after
importing JAX. This module keeps the compiled executable itself, serialised with
jax.experimental.serialize_executable, in the same cache directory, keyed by everything the
program depends on (the function's name and static settings, argument shapes and dtypes, JAX
and jaxlib versions, the device, x64); a later run with the same key loads it and calls it
without tracing. Any problem (a stale or corrupt entry, a JAX without the API) falls back to
the ordinary jitted call, and a new entry is written atomically, so a cache entry is never
half-written and never wrong for its key.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

#: Set by ``svdgrad --no-cache`` through _common.USE_CACHE; looked up at call time.
_DIR = "executables"


def _key(name: str, static: dict, args: tuple, device: Any) -> str:
    import jax
    import jaxlib

    parts = [
        name,
        repr(sorted(static.items())),
        repr([(tuple(a.shape), str(a.dtype)) for a in args]),
        jax.__version__,
        getattr(jaxlib, "__version__", "?"),
        str(getattr(device, "platform", "default")),
        str(getattr(device, "device_kind", "")),
        str(bool(jax.config.jax_enable_x64)),
    ]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:40]


def _load(path: Path):
    from jax.experimental import serialize_executable as se

    try:  # the CPU LAPACK kernels are registered when a program is lowered; here none is
        from jaxlib.cpu import _lapack

        _lapack.initialize()
    except Exception:
        pass
    with open(path, "rb") as f:
        payload, in_tree, out_tree = pickle.load(f)
    return se.deserialize_and_load(payload, in_tree, out_tree)


def _store(path: Path, compiled) -> None:
    from jax.experimental import serialize_executable as se

    payload = se.serialize(compiled)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".pkl")
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def call(name: str, fn, args: tuple, static: dict, *, cache_dir: Path | None, device=None):
    """fn(*args) with fn jitted, through a kept executable when cache_dir is given.

    fn takes only arrays (its settings are closed over and listed in static, which is part of
    the key); args are NumPy or JAX arrays, placed on device (or JAX's default) by the call.
    """
    import jax

    if device is not None:
        args = tuple(jax.device_put(a, device) for a in args)
    platform = getattr(device, "platform", None) or jax.default_backend()
    if cache_dir is None or platform != "cpu":  # kept executables: CPU only (see _load)
        return jax.jit(fn)(*args)
    path = Path(cache_dir) / _DIR / f"{_key(name, static, args, device)}.pkl"
    if path.exists():
        try:
            return _load(path)(*args)
        except Exception:
            try:
                path.unlink()
            except OSError:
                pass
    compiled = jax.jit(fn).lower(*args).compile()
    try:
        _store(path, compiled)
    except Exception:  # a cache that cannot be written is skipped
        pass
    return compiled(*args)


__all__ = ["call"]
