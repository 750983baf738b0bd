"""The bundled sample arrays are exactly what sample_data/make_samples.py makes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1] / "sample_data"


def _load(path: Path):
    if path.suffix == ".npy":
        return {"": np.load(path)}
    if path.suffix == ".npz":
        with np.load(path) as z:
            return dict(z)
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in f}


def test_samples_are_reproducible(tmp_path):
    spec = importlib.util.spec_from_file_location("make_samples", ROOT / "make_samples.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(tmp_path)
    made = sorted(p.name for p in tmp_path.iterdir())
    assert made == sorted(p.name for p in ROOT.iterdir() if p.suffix in {".npy", ".npz", ".h5"})
    for name in made:
        ours, theirs = _load(tmp_path / name), _load(ROOT / name)
        assert ours.keys() == theirs.keys()
        for key in ours:
            np.testing.assert_array_equal(ours[key], theirs[key])
