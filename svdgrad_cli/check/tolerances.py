"""The one table of relative tolerances, shared by `svdgrad check` and the test suite.

Keyed by the dtype the rules ran in; the kinds are

- "exact": the same quantity computed another way in the same precision (rounding level);
- "ref": an exact reference (JAX's autodiff, the adjoint identity, the chain rule);
- "fd": central (or one-sided) finite differences in 64-bit, limited by their own truncation
  error; `check` raises a row's tolerance to 10x the measured finite-difference noise, and stops
  counting a row whose noise is too large for the row to mean anything (NOISE_LIMIT);
- "against": results computed by another implementation (another SVD, another rule).

tests/helpers.py imports TOL from here.
"""

from __future__ import annotations

import numpy as np

TOL: dict[np.dtype, dict[str, float]] = {
    np.dtype("float64"): {"exact": 1e-12, "ref": 1e-10, "fd": 1e-6, "against": 1e-8},
    np.dtype("complex128"): {"exact": 1e-12, "ref": 1e-10, "fd": 1e-6, "against": 1e-8},
    np.dtype("float32"): {"exact": 1e-5, "ref": 2e-4, "fd": 2e-3, "against": 1e-3},
    np.dtype("complex64"): {"exact": 1e-5, "ref": 2e-4, "fd": 2e-3, "against": 1e-3},
}

#: the kind of tolerance each reference of `svdgrad check` uses
KIND: dict[str, str] = {
    "fd": "fd",
    "jax": "ref",
    "adjoint": "ref",
    "chain rule": "ref",
    "against": "against",
}

#: finite differences whose two step sizes disagree by more than this (relative) are no
#: reference: the row is left out, with a note, instead of passing under a huge tolerance
NOISE_LIMIT = 1e-4


def tolerance(dtype, kind: str = "ref") -> float:
    """TOL[dtype][kind]; kind may also be a reference name of `svdgrad check` (KIND)."""
    return TOL[np.dtype(dtype)][KIND.get(kind, kind)]


__all__ = ["TOL", "KIND", "NOISE_LIMIT", "tolerance"]
