"""The library's own error types.

ArgumentError is what svd, svd_jvp, svd_vjp and truncated_svd raise for a bad argument (a shape,
a dtype, a tolerance, a rank, factors that do not factor A): it is a ValueError, as NumPy and JAX
users expect, and the command line maps exactly this type (and its own input errors) to exit
status 2. Any other exception is a bug, not a bad call.
"""

from __future__ import annotations


class ArgumentError(ValueError):
    """A bad argument to a library function; the message names it and says how to fix it."""


__all__ = ["ArgumentError"]
