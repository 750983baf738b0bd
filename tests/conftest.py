"""Settings and fixtures for the whole suite: x64 on, strict rank and dtype promotion, a
private compilation cache, and a seeded generator. Importable helpers are in helpers.py."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

# the command line keeps JAX's compilation cache in the user's cache directory; tests use their
# own, so that they neither read nor fill a developer's cache
os.environ.setdefault("SVDGRAD_CACHE_DIR", tempfile.mkdtemp(prefix="svdgrad-test-cache-"))

# `from helpers import ...` works whatever the rootdir and import mode
sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)
# implicit rank broadcasting and implicit dtype promotion (float32 + float64 -> float64,
# real + complex -> complex, ...) raise, so that a mixed-precision slip in the library shows
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture
def rng():
    return np.random.default_rng(20261122)


@pytest.fixture(scope="session")
def local():
    """The address of a dask LocalCluster of two worker processes on loopback, shared by the
    tests that run on a cluster (skipped without the dask extra)."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},  # no dashboard, no port 8787
        silence_logs=50,
    ) as cluster:
        yield cluster.scheduler_address
