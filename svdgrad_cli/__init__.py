"""svdgrad: forward- and reverse-mode derivatives of the singular value decomposition.

    >>> from svdgrad_cli import svd_jvp, svd_vjp
    >>> (U, S, Vh), (dU, dS, dVh) = svd_jvp(A, dA)
    >>> gA = svd_vjp(A, gU=gU, gS=gS, gVh=gVh)

All eight cases ({thin, full} x {real, complex} x {U, S, Vh; S only}) in both modes. See
svd_jvp and svd_vjp for the conventions.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {"svd_jvp", "svd_vjp", "resolve_device", "CONVENTIONS"}


def __getattr__(name):
    # The library pulls in JAX; importing it lazily keeps `svdgrad --help` fast.
    if name in _LAZY:
        import jax

        jax.config.update("jax_enable_x64", True)
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'svdgrad_cli' has no attribute {name!r}")


__all__ = ["svd_jvp", "svd_vjp", "resolve_device", "CONVENTIONS", "__version__"]
