"""svdgrad: forward- and reverse-mode derivatives of the singular value decomposition.

    >>> from svdgrad_cli import svd, svd_jvp, svd_vjp
    >>> U, S, Vh = svd(A, full_matrices=False)        # a drop-in for jnp.linalg.svd
    >>> jax.grad(lambda A: loss(*svd(A)))(A)           # differentiable in every case
    >>> (U, S, Vh), (dU, dS, dVh) = svd_jvp(A, dA)
    >>> gA = svd_vjp(A, gU=gU, gS=gS, gVh=gVh, factors=(U, S, Vh))

All eight cases ({thin, full} x {real, complex} x {U, S, Vh; S only}) in both modes. Importing
the package changes no global JAX setting (enable x64 yourself for float64).
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "svd",
    "svd_jvp",
    "svd_vjp",
    "SVDResult",
    "Diagnostics",
    "resolve_device",
    "default_tolerances",
    "factor_tolerance",
    "CONVENTIONS",
}
_LAZY_TRUNCATED = {
    "truncated_svd",
    "TruncatedSVDResult",
    "LinearOperator",
    "LowRank",
    "operator_jvp",
    "operator_vjp",
}


from .errors import ArgumentError  # noqa: E402, F401  (light: no JAX)


def __getattr__(name):
    # The library pulls in JAX; importing it lazily keeps `svdgrad --help` fast.
    if name in _LAZY:
        from . import api

        return getattr(api, name)
    if name in _LAZY_TRUNCATED:
        from . import truncated

        return getattr(truncated, name)
    raise AttributeError(f"module 'svdgrad_cli' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _LAZY | _LAZY_TRUNCATED)


__all__ = sorted(_LAZY | _LAZY_TRUNCATED | {"__version__", "ArgumentError"})
