"""The cases `svdgrad check` knows and the report it builds: rows, notes, JSON. No numerics."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import ArgumentError


@dataclass(frozen=True)
class Case:
    full_matrices: bool
    complex: bool
    compute_uv: bool

    @property
    def name(self) -> str:
        return "-".join(
            (
                "full" if self.full_matrices else "thin",
                "complex" if self.complex else "real",
                "usv" if self.compute_uv else "s",
            )
        )

    @classmethod
    def parse(cls, name: str) -> Case:
        for c in ALL_CASES:
            if c.name == name:
                return c
        raise ArgumentError(f"unknown case {name!r}; cases: {', '.join(c.name for c in ALL_CASES)}")


ALL_CASES = [
    Case(full, cplx, uv) for full in (False, True) for cplx in (False, True) for uv in (True, False)
]

#: how the references are called in sentences
REFERENCE_NAMES = {
    "fd": "finite differences",
    "jax": "JAX",
    "adjoint": "the adjoint identity",
    "chain rule": "the chain rule",
    "against": "your results",
    "naive rule": "the naive thin rule",
}


@dataclass
class Row:
    """One comparison: an output of the rules against a reference.

    info rows (the naive thin rule of a truncated SVD) are shown but never fail.
    """

    case: str
    output: str
    reference: str
    rel_error: float
    tolerance: float
    fd_noise: float | None = None
    info: bool = False
    detail: str | None = None  # what a failure says instead of its relative error

    @property
    def passed(self) -> bool:
        if self.info:
            return True
        return bool(np.isfinite(self.rel_error) and self.rel_error <= self.tolerance)

    @property
    def verdict(self) -> str:
        if self.info:
            return "info"
        return "PASS" if self.passed else "FAIL"


@dataclass
class CaseReport:
    case: str
    dtype: str
    shape: tuple
    rows: list[Row] = field(default_factory=list)
    conditioning: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    def counted(self) -> list[Row]:
        return [r for r in self.rows if not r.info]


@dataclass
class Report:
    cases: list[CaseReport]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.cases)

    def failures(self) -> list[Row]:
        return [r for c in self.cases for r in c.rows if not r.passed]

    def summary(self) -> str:
        """One line: what was checked and the verdict."""
        rows = [r for c in self.cases for r in c.counted()]
        per_ref: dict[str, int] = {}
        for r in rows:
            per_ref[r.reference] = per_ref.get(r.reference, 0) + 1
        refs = ", ".join(f"{name} {count}" for name, count in per_ref.items())
        ncase = len(self.cases)
        cases = self.cases[0].case if ncase == 1 else f"{ncase} cases"
        notes = sum(len(c.notes) for c in self.cases)
        tail = f"; {notes} note{'s' if notes != 1 else ''} above" if notes else ""
        what = f"{len(rows)} comparison{'s' if len(rows) != 1 else ''} in {cases}"
        if self.passed:
            return f"check passed: {what} ({refs}){tail}"
        return f"check failed: {len(self.failures())} of {what}"

    def to_json(self) -> dict:
        out = {"passed": self.passed, "summary": self.summary(), "cases": []}
        for c in self.cases:
            d = {k: v for k, v in asdict(c).items() if k != "rows"}
            d["shape"] = list(c.shape)
            d["passed"] = c.passed
            d["rows"] = [dict(asdict(r), passed=r.passed, verdict=r.verdict) for r in c.rows]
            out["cases"].append(d)
        return _jsonable(out)


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if np.isfinite(x) else str(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    return x
