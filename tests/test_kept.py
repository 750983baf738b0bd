"""Kept executables: a later process loads the compiled jvp/vjp instead of tracing it, with the
same results; a corrupt entry is replaced; --no-cache keeps none; an executable is never stored
from JAX's persistent cache (whose CPU executables do not survive a second serialisation)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
from helpers import assert_close

from svdgrad_cli import api
from svdgrad_cli.cli import _kept


def svdgrad(*args, cache, check=True):
    env = dict(os.environ, SVDGRAD_CACHE_DIR=str(cache))
    env.pop("SVDGRAD_NO_CACHE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "svdgrad_cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def entries(cache):
    d = cache / _kept.DIRNAME
    return sorted(d.glob("*.pkl")) if d.exists() else []


def test_a_later_process_loads_the_kept_jvp(tmp_path, rng):
    A, dA = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
    np.save(tmp_path / "A.npy", A)
    np.save(tmp_path / "dA.npy", dA)
    cache = tmp_path / "cache"
    (U, S, Vh), (dU, dS, dVh) = api.svd_jvp(A, dA)
    expected = dict(U=U, S=S, Vh=Vh, dU=dU, dS=dS, dVh=dVh)
    for run in range(3):
        out = tmp_path / f"out{run}.npz"
        svdgrad("jvp", tmp_path / "A.npy", tmp_path / "dA.npy", "-o", out, cache=cache)
        (entry,) = entries(cache)
        if run == 0:
            stamp = entry.stat().st_mtime_ns
        else:  # loaded, not compiled and stored again
            assert entry.stat().st_mtime_ns == stamp
        with np.load(out) as f:
            for name, value in expected.items():
                assert_close(f[name], np.asarray(value), np.float64)
    # a corrupt entry: the run is still right, and the entry is replaced by a good one
    entry.write_bytes(b"not an executable")
    out = tmp_path / "out_corrupt.npz"
    svdgrad("jvp", tmp_path / "A.npy", tmp_path / "dA.npy", "-o", out, cache=cache)
    with np.load(out) as f:
        assert_close(f["dU"], np.asarray(dU), np.float64)
    (entry,) = entries(cache)
    assert entry.stat().st_size > 1000


def test_never_stored_from_the_persistent_cache(tmp_path, rng):
    """JAX's persistent cache holds the vjp's program: the command line's run compiles afresh
    for its entry all the same, and a later process loads that entry and runs it (a broken entry
    would be deleted and stored again, which the unchanged modification time rules out)."""
    A = rng.standard_normal((5, 5)) + 1j * rng.standard_normal((5, 5))
    gS = rng.standard_normal(5)
    np.save(tmp_path / "A.npy", A)
    np.save(tmp_path / "gS.npy", gS)
    cache = tmp_path / "cache"
    fill = (
        "import numpy as np; from svdgrad_cli.cli import _common as c; c.configure_jax(); "
        "from svdgrad_cli import api; "
        f"A = np.load(r'{tmp_path / 'A.npy'}'); gS = np.load(r'{tmp_path / 'gS.npy'}'); "
        "api.svd_vjp(A, gU=None, gS=gS, gVh=None, factors=None, full_matrices=False, "
        "compute_uv=True, convention='jax', device=api.resolve_device('cpu'), "
        "return_info=True, eps=0.0, degeneracy_tol=None, rank_tol=None)"
    )
    env = dict(os.environ, SVDGRAD_CACHE_DIR=str(cache))
    env.pop("SVDGRAD_NO_CACHE", None)
    subprocess.run([sys.executable, "-c", fill], check=True, env=env, timeout=300)
    assert any(p.is_file() for p in cache.rglob("*")) and entries(cache) == []
    args = ("vjp", tmp_path / "A.npy", "--gS", tmp_path / "gS.npy")
    svdgrad(*args, "-o", tmp_path / "o1.npz", cache=cache)
    (entry,) = entries(cache)
    stamp = entry.stat().st_mtime_ns
    svdgrad(*args, "-o", tmp_path / "o2.npz", cache=cache)
    assert entries(cache) == [entry] and entry.stat().st_mtime_ns == stamp
    expected = np.asarray(api.svd_vjp(A, gS=gS))
    for name in ("o1.npz", "o2.npz"):
        with np.load(tmp_path / name) as f:
            assert_close(f["gA"], expected, np.complex128)


def test_no_cache_keeps_nothing(tmp_path, rng):
    np.save(tmp_path / "A.npy", rng.standard_normal((4, 3)))
    cache = tmp_path / "cache"
    svdgrad(
        "--no-cache",
        "jvp",
        tmp_path / "A.npy",
        tmp_path / "A.npy",
        "-o",
        tmp_path / "o.npz",
        cache=cache,
    )
    assert entries(cache) == []


def test_the_key_follows_settings_shapes_and_dtypes(rng):
    import jax

    dev = jax.devices("cpu")[0]
    a = np.zeros((4, 3))
    base = _kept.key("svd_jvp", {"eps": 0.0}, (a, a), dev)
    assert base == _kept.key("svd_jvp", {"eps": 0.0}, (a, a), dev)
    assert base != _kept.key("svd_jvp", {"eps": 1e-3}, (a, a), dev)
    assert base != _kept.key("svd_vjp", {"eps": 0.0}, (a, a), dev)
    assert base != _kept.key("svd_jvp", {"eps": 0.0}, (a, np.zeros((4, 4))), dev)
    assert base != _kept.key("svd_jvp", {"eps": 0.0}, (a, a.astype(np.float32)), dev)
    assert base != _kept.key("svd_jvp", {"eps": 0.0}, (a, None, a), dev)


def test_the_library_is_untouched_outside_the_command_line(tmp_path, rng):
    """Without the command line's runner, svd_jvp calls its jitted program; inside
    _kept.active it keeps an executable and returns the same values."""
    A, dA = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    plain = api.svd_jvp(A, dA, return_info=True)
    assert api._RUNNER.get() is None
    with _kept.active(tmp_path):
        kept = api.svd_jvp(A, dA, return_info=True)
        assert len(entries(tmp_path)) == 1
    assert api._RUNNER.get() is None
    for x, y in zip(plain[0] + plain[1], kept[0] + kept[1], strict=True):
        assert_close(np.asarray(y), np.asarray(x), np.float64)
    assert type(kept[2]).__name__ == "Diagnostics"
