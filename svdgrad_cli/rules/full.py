"""Full SVD rules (full_matrices=True, m != n): the extra columns of U (tall) or V (wide).

Tall (m > n): U = [U1 U2] with U2 (m, m - n) spanning the null space of A^H. U2 is only
defined up to U2 Q (Q unitary), so its derivative needs a gauge. The horizontal gauge
U2^H dU2 = 0 together with U1^H dU2 = -dU1^H U2 (from U^H U = I) gives

    dU2 = -U1 (dU1^H U2) = -U1 S^-1 (dA V)^H U2,

since dU1^H U2 = S^-1 V^H dA^H (I - U1 U1^H) U2 = S^-1 V^H dA^H U2. Its transpose under the
Hermitian pairing adds GA -= U2 (GU2^H U1) S^-1 V^H to the reverse rule.

Wide (n > m): the same on V. With Vh = [Vh1; Vh2] (Vh2 = V2^H, (n - m, n)):

    dVh2 = -(U^H dA Vh2^H)^H S^-1 Vh1,         GA -= U S^-1 (GVh2 V1)^H Vh2.

A result depends on the arbitrary Q unless U2^H GU2 (or Vh2 GVh2^H) is Hermitian; the skew
part is what the gauge diagnostics report.
"""

from __future__ import annotations

import jax.numpy as jnp

from ._common import _H, _Hdot


def full_jvp_extra_U(U1, s_inv, Vh, dA, U2):
    """dU2 for a tall full SVD."""
    dAV = dA @ _H(Vh)
    return -(U1 * s_inv[..., None, :]) @ _Hdot(dAV, U2)


def full_jvp_extra_Vh(U, s_inv, Vh1, dA, Vh2):
    """dVh2 for a wide full SVD."""
    B = _Hdot(U, dA) @ _H(Vh2)  # (k, n - k)
    return -_H(B) @ (s_inv[..., :, None] * Vh1)


def full_jvp_extra_Vh_projected(s_inv, Vh1, UhdA, Vh2):
    """dVh2 for a wide full SVD from UhdA = U^H dA."""
    B = UhdA @ _H(Vh2)  # (k, n - k)
    return -_H(B) @ (s_inv[..., :, None] * Vh1)


def full_vjp_extra_U(U1, s_inv, Vh, GU2, U2):
    """Contribution of the cotangent of U2 to GA (Hermitian pairing)."""
    return -(U2 @ _Hdot(GU2, U1)) @ (s_inv[..., :, None] * Vh)


def full_vjp_extra_Vh(U, s_inv, Vh1, GVh2, Vh2):
    """Contribution of the cotangent of Vh2 to GA (Hermitian pairing)."""
    return -(U * s_inv[..., None, :]) @ (_H(GVh2 @ _H(Vh1)) @ Vh2)


def skew_relative(Z):
    """(max |Z - Z^H|, max |Z - Z^H| / max |Z|) over everything, batch included.

    Z = U2^H GU2 (or Vh2 GVh2^H); a result is independent of the rotation of the extra columns
    exactly when Z is Hermitian. Both are 0 for an empty Z.
    """
    if Z.shape[-1] == 0 or Z.size == 0:
        zero = jnp.zeros((), jnp.finfo(Z.dtype).dtype)
        return zero, zero
    skew = jnp.max(jnp.abs(Z - _H(Z)))
    return skew, skew / jnp.maximum(jnp.max(jnp.abs(Z)), jnp.finfo(skew.dtype).tiny)
