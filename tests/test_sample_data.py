"""The bundled sample arrays are what sample_data/make_samples.py makes.

Raw draws of the seeded generator (tangents and cotangents) must come back bit for bit: NumPy's
generator does not depend on the machine. The matrices are products of QR factors computed by
LAPACK, whose last bits depend on the BLAS build, so they are compared within the dtype's
rounding tolerance relative to their own size.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import h5py
import numpy as np
from helpers import tol

ROOT = Path(__file__).resolve().parents[1] / "sample_data"

# (file, key) pairs that make_samples.py computes with LAPACK (Q S W, Q and W from np.linalg.qr);
# every other array is a raw draw of the generator
COMPUTED = {("A.npy", ""), ("wide.npy", ""), ("complex.npz", "A"), ("batch.h5", "A")}


def _load(path: Path):
    if path.suffix == ".npy":
        return {"": np.load(path)}
    if path.suffix == ".npz":
        with np.load(path) as z:
            return dict(z)
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in f}


def _assert_close(ours, theirs, what):
    scale = float(np.max(np.abs(theirs), initial=0.0))
    err = float(np.max(np.abs(ours - theirs), initial=0.0))
    assert err <= tol(theirs.dtype, "exact") * scale, f"{what}: max |difference| {err:.2e}"


def test_samples_are_reproducible(tmp_path):
    spec = importlib.util.spec_from_file_location("make_samples", ROOT / "make_samples.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(tmp_path)
    made = sorted(p.name for p in tmp_path.iterdir())
    assert made == sorted(p.name for p in ROOT.iterdir() if p.suffix in {".npy", ".npz", ".h5"})
    seen = set()
    for name in made:
        ours, theirs = _load(tmp_path / name), _load(ROOT / name)
        assert ours.keys() == theirs.keys()
        for key in ours:
            a, b = ours[key], theirs[key]
            what = f"{name}:{key}" if key else name
            assert a.dtype == b.dtype and a.shape == b.shape, what
            if (name, key) in COMPUTED:
                seen.add((name, key))
                _assert_close(a, b, what)
            else:
                np.testing.assert_array_equal(a, b, err_msg=what)
    assert seen == COMPUTED  # the list above names arrays that exist
