"""Reference: the adjoint identity between the rules' own JVP and VJP,

    Re sum(gA * dA) = Re sum(gU * dU) + sum(gS * dS) + Re sum(gVh * dVh) [+ gerr derr],

with the tangents of the linear rule (svd's own basis: the one the cotangents pair with). It
holds to rounding at every A, equal and zero singular values included, whatever the
tolerances, and tests that svd_vjp is the exact transpose of svd_jvp.
"""

from __future__ import annotations

import numpy as np

from .evaluate import Evaluation
from .fd import pairing
from .report import Row


def adjoint_error(ev: Evaluation) -> float:
    """|<gA, dA> - <cotangents, tangents>| relative to the sum of |g| |d| and |<gA, dA>|."""
    lhs = float(np.real(np.sum(ev.gA * ev.dA)))
    rhs, scale = pairing(ev.cots, ev.linear_tangents)
    return abs(lhs - rhs) / max(scale + abs(lhs), 1e-300)


def check_adjoint(ev: Evaluation) -> tuple[list[Row], list[str]]:
    return [Row(ev.name, "gA", "adjoint", adjoint_error(ev), ev.tolerance("adjoint"))], []
