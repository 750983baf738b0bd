"""Compiled programs kept across runs of the command line.

JAX's persistent compilation cache saves XLA's compilation, but every run still traces the rule
and lowers it to StableHLO (about 0.2 s for a small jvp) before it can look the program up.
This module keeps the compiled executable itself (jax.experimental.serialize_executable) in
the cache directory, keyed by everything the program depends on: the rule and its static
settings, the arguments' shapes and dtypes, svdgrad's sources, the JAX and jaxlib versions,
XLA_FLAGS, the device and 64-bit mode. A later run with the same key loads it and calls it
without tracing.

Two things keep an entry from ever being wrong or breaking a run:

* an executable is stored only from a fresh compilation, with JAX's persistent cache turned
  off for it: on XLA:CPU an executable that was itself loaded from that cache serialises
  without its compiled kernels, and fails when run in another process;
* a loaded entry is run to completion inside a try: any failure (a stale or corrupt entry, a
  JAX without the API) deletes it and falls back to the ordinary jitted call.

Entries are written atomically (a temporary file renamed into place). Used for the in-memory
path of svd_jvp and svd_vjp on the CPU (see svdgrad_cli.api._RUNNER); ``--no-cache`` and
SVDGRAD_NO_CACHE=1 turn it off.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DIRNAME = "executables"
_PACKAGE = Path(__file__).resolve().parent.parent


def _sources() -> str:
    """Size and modification time of every module of svdgrad: a changed rule is a new key."""
    parts = []
    for path in sorted(_PACKAGE.rglob("*.py")):
        try:
            st = path.stat()
        except OSError:
            continue
        parts.append(f"{path.relative_to(_PACKAGE)}:{st.st_size}:{st.st_mtime_ns}")
    return "\n".join(parts)


def key(name: str, static: dict, args: tuple, device: Any) -> str:
    import jax
    import jaxlib

    from .. import __version__

    leaves = jax.tree_util.tree_leaves(args)
    parts = [
        name,
        __version__,
        _sources(),
        repr(sorted((k, repr(v)) for k, v in static.items())),
        repr(jax.tree_util.tree_structure(args)),
        repr([(tuple(x.shape), str(x.dtype)) for x in leaves]),
        jax.__version__,
        getattr(jaxlib, "__version__", "?"),
        os.environ.get("XLA_FLAGS", ""),
        str(getattr(device, "platform", "?")),
        str(getattr(device, "device_kind", "?")),
        str(bool(jax.config.jax_enable_x64)),
    ]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:40]


def _load(path: Path):
    from jax.experimental import serialize_executable as se

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
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _fresh_compile(jitted, args: tuple, static: dict):
    """jitted lowered and compiled by XLA itself, not loaded from the persistent cache."""
    import jax

    previous = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        return jitted.lower(*args, **static).compile()
    finally:
        jax.config.update("jax_enable_compilation_cache", previous)


def make_runner(directory: Path):
    """A runner for svdgrad_cli.api._RUNNER keeping executables under directory/executables."""

    def runner(name: str, jitted, args: tuple, static: dict):
        import jax

        leaves = jax.tree_util.tree_leaves(args)
        devices = {d for x in leaves for d in getattr(x, "devices", lambda: set())()}
        if len(devices) != 1:
            return jitted(*args, **static)
        (device,) = devices
        if device.platform != "cpu":  # kept executables: CPU only
            return jitted(*args, **static)
        path = directory / DIRNAME / f"{key(name, static, args, device)}.pkl"
        if path.exists():
            try:
                out = _load(path)(*args)
                return jax.block_until_ready(out)
            except Exception:
                with contextlib.suppress(OSError):
                    path.unlink()
        compiled = _fresh_compile(jitted, args, static)
        with contextlib.suppress(Exception):  # a cache that cannot be written is skipped
            _store(path, compiled)
        return compiled(*args)

    return runner


@contextlib.contextmanager
def active(directory: Path | None) -> Iterator[None]:
    """svd_jvp and svd_vjp called inside keep their executables in directory (None: off)."""
    if directory is None:
        yield
        return
    from .. import api

    token = api._RUNNER.set(make_runner(Path(directory)))
    try:
        yield
    finally:
        api._RUNNER.reset(token)


__all__ = ["active", "key", "make_runner"]
