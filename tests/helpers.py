"""Helpers shared by the test modules: seeded random arrays and the one tolerance table.

Fixtures and global settings live in conftest.py; everything importable lives here
(``from helpers import ...``).
"""

from __future__ import annotations

import numpy as np

from svdgrad_cli.check.tolerances import TOL

# The one tolerance table, shared with `svdgrad check` (svdgrad_cli/check/tolerances.py), keyed
# by dtype: "ref" against JAX and the identities, "exact" against exact arithmetic or the same
# formula evaluated another way (rounding level), "fd" against gauge-aligned central finite
# differences (truncation error of the step), "against" for another implementation's results.
__all__ = [
    "TOL",
    "GAUGE_DETECTED",
    "tol",
    "random_matrix",
    "randn",
    "assert_close",
    "fd_grad",
    "rotated",
]

# a gauge dependence of this relative size or more must be reported
GAUGE_DETECTED = 1e-3


def tol(dtype, kind="ref"):
    return TOL[np.dtype(dtype)][kind]


def random_matrix(rng, shape, dtype, spread=True):
    """A random matrix with well separated singular values (1 .. 2 + k, evenly spaced)."""
    cplx = np.issubdtype(np.dtype(dtype), np.complexfloating)
    m, n = shape[-2:]
    k = min(m, n)
    batch = tuple(shape[:-2])

    def unitary(size):
        X = rng.standard_normal(batch + (size, size))
        if cplx:
            X = X + 1j * rng.standard_normal(batch + (size, size))
        Q, _ = np.linalg.qr(X)
        return Q

    s = np.linspace(2.0 + k, 1.0, k) if spread else rng.uniform(1, 2, k)
    S = np.zeros(batch + (m, n))
    S[..., np.arange(k), np.arange(k)] = s
    return (unitary(m) @ S @ unitary(n)).astype(dtype)


def randn(rng, shape, dtype):
    x = rng.standard_normal(shape)
    if np.issubdtype(np.dtype(dtype), np.complexfloating):
        x = x + 1j * rng.standard_normal(shape)
    return x.astype(dtype)


def assert_close(actual, expected, dtype, kind="ref", scale=0.0, what=""):
    """max |actual - expected| <= TOL[dtype][kind] * max(max |expected|, scale), all finite.

    The error is relative to the size of the whole array (not entry by entry), so entries that
    are zero up to rounding compare as they should; scale sets a floor where the expected array
    may be small or zero.
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert np.all(np.isfinite(actual)), f"{what}: not finite"
    size = max(float(np.max(np.abs(expected), initial=0.0)), float(scale))
    err = float(np.max(np.abs(actual - expected), initial=0.0))
    bound = tol(dtype, kind) * size
    assert err <= bound, f"{what}: max error {err:.3e} > {bound:.3e} ({kind}, {np.dtype(dtype)})"


def fd_grad(f, x, h=1e-6):
    """Central finite-difference gradient of a real scalar function of a real float64 array."""
    x = np.asarray(x, np.float64)
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[idx] = h
        g[idx] = (float(f(x + e)) - float(f(x - e))) / (2 * h)
    return g


def rotated(values, m, n, seed=1):
    """Q diag(values) W^T, an m x n matrix with the given singular values (Q, W random
    orthogonal from seed)."""
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(rng.standard_normal((m, m)))[0]
    W = np.linalg.qr(rng.standard_normal((n, n)))[0]
    S = np.zeros((m, n))
    S[np.arange(len(values)), np.arange(len(values))] = values
    return Q @ S @ W.T
