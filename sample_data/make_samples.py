"""Regenerate the sample arrays in this folder (deterministic: same bytes every run).

    python sample_data/make_samples.py

A.npy, dA.npy          8 x 5 real matrix (tall) and a tangent
gU.npy, gS.npy, gVh.npy  cotangents for the thin SVD of A.npy
wide.npy               4 x 7 real matrix
complex.npz            A (5 x 5 complex128) and dA
batch.h5               /A (16, 6, 4) float64 stack, /dA, /gS (16, 4)
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

HERE = Path(__file__).resolve().parent


def _matrix(rng, m, n, cplx=False):
    """A matrix with well separated singular values 1 .. 1 + k."""
    k = min(m, n)

    def unitary(size):
        X = rng.standard_normal((size, size))
        if cplx:
            X = X + 1j * rng.standard_normal((size, size))
        return np.linalg.qr(X)[0]

    S = np.zeros((m, n))
    S[np.arange(k), np.arange(k)] = np.linspace(1.0 + k, 1.0, k)
    return unitary(m) @ S @ unitary(n)


def main(out: Path = HERE) -> None:
    rng = np.random.default_rng(2026)
    A = _matrix(rng, 8, 5)
    np.save(out / "A.npy", A)
    np.save(out / "dA.npy", rng.standard_normal((8, 5)))
    np.save(out / "gU.npy", rng.standard_normal((8, 5)))
    np.save(out / "gS.npy", rng.standard_normal(5))
    np.save(out / "gVh.npy", rng.standard_normal((5, 5)))
    np.save(out / "wide.npy", _matrix(rng, 4, 7))
    Ac = _matrix(rng, 5, 5, cplx=True)
    dAc = rng.standard_normal((5, 5)) + 1j * rng.standard_normal((5, 5))
    with open(out / "complex.npz", "wb") as f:
        np.savez(f, A=Ac, dA=dAc)
    stack = np.stack([_matrix(rng, 6, 4) for _ in range(16)])
    with h5py.File(out / "batch.h5", "w", track_order=True) as f:
        for name, data in (
            ("A", stack),
            ("dA", rng.standard_normal((16, 6, 4))),
            ("gS", rng.standard_normal((16, 4))),
        ):
            f.create_dataset(name, data=data, track_times=False)


if __name__ == "__main__":
    main()
