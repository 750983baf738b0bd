"""Kept executables: a second call loads the compiled program; a corrupt entry falls back."""

from __future__ import annotations

import numpy as np
from helpers import assert_close

from svdgrad_cli.api import svd_jvp
from svdgrad_cli.cli import _compiled


def _fn(A, dA):
    return svd_jvp(A, dA, return_info=True)


def test_kept_executable_is_reused_and_a_corrupt_one_replaced(tmp_path):
    rng = np.random.default_rng(0)
    A, dA = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
    first = _compiled.call("t", _fn, (A, dA), {"k": 1}, cache_dir=tmp_path)
    entries = list((tmp_path / "executables").glob("*.pkl"))
    assert len(entries) == 1
    second = _compiled.call("t", _fn, (A, dA), {"k": 1}, cache_dir=tmp_path)
    for x, y in zip(first[0] + first[1], second[0] + second[1], strict=True):
        assert_close(np.asarray(x), np.asarray(y), np.float64, "exact")
    assert type(second[2]).__name__ == "Diagnostics"
    # other settings or shapes: another entry
    _compiled.call("t", _fn, (A, dA), {"k": 2}, cache_dir=tmp_path)
    _compiled.call("t", _fn, (A[:5], dA[:5]), {"k": 1}, cache_dir=tmp_path)
    assert len(list((tmp_path / "executables").glob("*.pkl"))) == 3
    entries[0].write_bytes(b"not a pickle")
    third = _compiled.call("t", _fn, (A, dA), {"k": 1}, cache_dir=tmp_path)
    assert_close(np.asarray(third[1][1]), np.asarray(first[1][1]), np.float64, "exact")
    assert entries[0].read_bytes() != b"not a pickle"


def test_without_a_cache_dir_nothing_is_written(tmp_path):
    rng = np.random.default_rng(1)
    A = rng.standard_normal((4, 4))
    out = _compiled.call("t", _fn, (A, A), {}, cache_dir=None)
    assert np.all(np.isfinite(np.asarray(out[1][0])))
    assert not any(tmp_path.iterdir())
