"""Verification of the SVD rules against independent references, as report objects.

References:
- "fd": central finite differences of numpy.linalg.svd in float64/complex128 along the tangent
  direction, after aligning the gauge of each perturbed SVD to the unperturbed one (phase or
  sign of each singular pair taken from V, as the rules' gauge has Im diag(V^H dV) = 0; an
  orthogonal/unitary Procrustes rotation for the extra columns of a full SVD, which realises
  the horizontal gauge). Two step sizes give an estimate of the finite-difference error itself.
- "jax": jax.jvp / jax.vjp of jnp.linalg.svd, where JAX supports the case (thin; square full).
- "adjoint": Re sum(gA * dA) = Re sum(gU * dU) + sum(gS * dS) + Re sum(gVh * dVh).
- "chain rule": dA = dU S Vh + U dS Vh + U S dVh (full-rank matrices).
- "against": arrays the user computed with their own implementation.

Nothing here prints; svdgrad_cli.cli renders the reports.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

# Relative tolerances, keyed by the dtype the rules ran in, per reference. FD is limited by its
# own truncation and rounding error; a row's FD tolerance is raised to 10x the measured FD noise.
TOLERANCES: dict[str, dict[str, float]] = {
    "float64": {"fd": 1e-6, "jax": 1e-10, "adjoint": 1e-10, "chain rule": 1e-10, "against": 1e-8},
    "complex128": {
        "fd": 1e-6,
        "jax": 1e-10,
        "adjoint": 1e-10,
        "chain rule": 1e-10,
        "against": 1e-8,
    },
    "float32": {"fd": 2e-3, "jax": 2e-3, "adjoint": 1e-4, "chain rule": 1e-4, "against": 1e-3},
    "complex64": {"fd": 2e-3, "jax": 2e-3, "adjoint": 1e-4, "chain rule": 1e-4, "against": 1e-3},
}


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
        raise ValueError(f"unknown case {name!r}; cases: {', '.join(c.name for c in ALL_CASES)}")


ALL_CASES = [
    Case(full, cplx, uv) for full in (False, True) for cplx in (False, True) for uv in (True, False)
]


@dataclass
class Row:
    case: str
    output: str
    reference: str
    rel_error: float
    tolerance: float
    fd_noise: float | None = None

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.rel_error) and self.rel_error <= self.tolerance)


@dataclass
class CaseReport:
    case: str
    dtype: str
    shape: tuple
    rows: list[Row] = field(default_factory=list)
    conditioning: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)


@dataclass
class Report:
    cases: list[CaseReport]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.cases)

    def failures(self) -> list[Row]:
        return [r for c in self.cases for r in c.rows if not r.passed]

    def to_json(self) -> dict:
        out = {"passed": self.passed, "cases": []}
        for c in self.cases:
            d = {k: v for k, v in asdict(c).items() if k != "rows"}
            d["shape"] = list(c.shape)
            d["passed"] = c.passed
            d["rows"] = [dict(asdict(r), passed=r.passed) for r in c.rows]
            out["cases"].append(d)
        return _jsonable(out)


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if np.isfinite(x) else str(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


# --------------------------------------------------------------------------------------------
# small numerics


def rel_error(x, ref, floor: float = 0.0) -> float:
    """||x - ref|| / max(||ref||, floor) in the Frobenius norm.

    floor is the natural size of the quantity (e.g. ||dA|| / ||A|| for dU): a reference that is
    zero or nearly so (dA parallel to A gives dU = 0) is then measured against the scale of the
    problem instead of against its own rounding noise.
    """
    x = np.asarray(x)
    ref = np.asarray(ref)
    num = np.linalg.norm((x - ref).ravel())
    den = max(float(np.linalg.norm(ref.ravel())), floor)
    if den == 0:
        return float(num)
    return float(num / den)


def _H(x):
    return np.conj(np.swapaxes(x, -1, -2))


def _polar(M):
    """Unitary factor of M (batched)."""
    W, _, Zh = np.linalg.svd(M)
    return W @ Zh


def aligned_svd(A, full_matrices: bool, U0, Vh0):
    """numpy SVD of A with the gauge aligned to the reference factors (U0, Vh0)."""
    U, s, Vh = np.linalg.svd(A, full_matrices=full_matrices)
    m, n = A.shape[-2:]
    k = min(m, n)
    # phase/sign of each singular pair from V: <v0_i, v_i> made real and positive
    c = np.sum(Vh0[..., :k, :] * np.conj(Vh[..., :k, :]), axis=-1)
    if np.iscomplexobj(c):
        ph = np.conj(c) / np.maximum(np.abs(c), np.finfo(float).tiny)
    else:
        ph = np.where(c < 0, -1.0, 1.0)
    U = U.copy()
    Vh = Vh.copy()
    U[..., :, :k] = U[..., :, :k] * ph[..., None, :]
    Vh[..., :k, :] = Vh[..., :k, :] * np.conj(ph)[..., :, None]
    if full_matrices and m > n:
        U2 = U[..., :, k:]
        U[..., :, k:] = U2 @ _polar(_H(U2) @ U0[..., :, k:])
    if full_matrices and n > m:
        Vh2 = Vh[..., k:, :]
        Vh[..., k:, :] = _H(_polar(Vh2 @ _H(Vh0[..., k:, :]))) @ Vh2
    return U, s, Vh


def fd_jvp(A, dA, case: Case, h: float):
    """Central differences of the gauge-aligned numpy SVD (64-bit)."""
    U0, s0, Vh0 = np.linalg.svd(A, full_matrices=case.full_matrices)
    Ap, Am = A + h * dA, A - h * dA
    Up, sp, Vhp = aligned_svd(Ap, case.full_matrices, U0, Vh0)
    Um, sm, Vhm = aligned_svd(Am, case.full_matrices, U0, Vh0)
    dS = (sp - sm) / (2 * h)
    if not case.compute_uv:
        return {"dS": dS}
    return {"dU": (Up - Um) / (2 * h), "dS": dS, "dVh": (Vhp - Vhm) / (2 * h)}


def _fd_step(A, dA) -> float:
    eps64 = np.finfo(np.float64).eps
    na = np.linalg.norm(A.ravel())
    nd = np.linalg.norm(dA.ravel())
    return float(np.cbrt(eps64) * max(na, 1e-300) / max(nd, 1e-300)) if nd else 1.0


def conditioning(s, rel_tol=1e-8) -> dict:
    s = np.asarray(s)
    s_max = float(np.max(s)) if s.size else 0.0
    s_min = float(np.min(s)) if s.size else 0.0
    if s.shape[-1] > 1:
        gaps = np.abs(s[..., :-1] - s[..., 1:])
        min_gap = float(np.min(gaps))
        near = int(np.sum(gaps <= rel_tol * max(s_max, np.finfo(float).tiny)))
    else:
        min_gap, near = float("inf"), 0
    return {
        "min_singular_value": s_min,
        "max_singular_value": s_max,
        "min_gap": min_gap,
        "near_degenerate_pairs": near,
    }


# --------------------------------------------------------------------------------------------
# directions


def random_directions(shape, case: Case, seed: int = 0) -> dict:
    """dA, gU, gS, gVh drawn from a standard normal (complex for complex cases)."""
    rng = np.random.default_rng(seed)
    m, n = shape[-2:]
    batch = tuple(shape[:-2])
    k = min(m, n)
    ku, kv = (m, n) if case.full_matrices else (k, k)

    def draw(sh, real=False):
        x = rng.standard_normal(batch + sh)
        if case.complex and not real:
            x = x + 1j * rng.standard_normal(batch + sh)
        return x

    return {
        "dA": draw((m, n)),
        "gU": draw((m, ku)),
        "gS": draw((k,), real=True),
        "gVh": draw((kv, n)),
    }


# --------------------------------------------------------------------------------------------
# the check itself


def _case_dtype(A, case: Case):
    base = np.dtype(A.dtype)
    if case.complex:
        return np.result_type(base, np.complex64)
    if np.issubdtype(base, np.complexfloating):
        raise ValueError("a complex A cannot be checked in a real case")
    return base


def _jax_supports(case: Case, shape) -> bool:
    m, n = shape[-2:]
    return (not case.full_matrices) or m == n or not case.compute_uv


def _jax_reference(A, dA, cots, case: Case):
    import jax
    import jax.numpy as jnp

    def f(a):
        out = jnp.linalg.svd(a, full_matrices=case.full_matrices, compute_uv=case.compute_uv)
        return tuple(out) if case.compute_uv else (out,)

    A = jnp.asarray(A)
    primals, tangents = jax.jvp(f, (A,), (jnp.asarray(dA),))
    names = ("dU", "dS", "dVh") if case.compute_uv else ("dS",)
    jvp = {k: np.asarray(v) for k, v in zip(names, tangents, strict=True)}
    _, pullback = jax.vjp(f, A)
    ct = []
    for name, p in zip(("gU", "gS", "gVh") if case.compute_uv else ("gS",), primals, strict=True):
        g = cots.get(name)
        ct.append(jnp.zeros_like(p) if g is None else jnp.asarray(g, p.dtype))
    (gA,) = pullback(tuple(ct))
    return jvp, np.asarray(gA)


def check_case(
    A,
    case: Case,
    *,
    dA=None,
    gU=None,
    gS=None,
    gVh=None,
    against: dict | None = None,
    seed: int = 0,
    eps: float = 0.0,
    degeneracy_tol: float | None = None,
    rank_tol: float | None = None,
    device=None,
) -> CaseReport:
    """Run the rules for one case and compare them with every applicable reference."""
    from .api import svd_jvp, svd_vjp

    A = np.asarray(A)
    dtype = _case_dtype(A, case)
    hi = np.result_type(dtype, np.float64)  # 64-bit version for the references
    m, n = A.shape[-2:]
    tol = TOLERANCES[np.dtype(dtype).name]
    rnd = random_directions(A.shape, case, seed)
    dA = rnd["dA"] if dA is None else np.asarray(dA)
    user_cots = {"gU": gU, "gS": gS, "gVh": gVh}
    if not case.compute_uv:
        user_cots = {"gS": gS}
    if all(v is None for v in user_cots.values()):
        cots = {k: rnd[k] for k in user_cots}
    else:
        cots = {k: (None if v is None else np.asarray(v)) for k, v in user_cots.items()}
    if not case.complex:
        for name, x in [("dA", dA)] + list(cots.items()):
            if x is not None and np.iscomplexobj(x):
                raise ValueError(f"{name} is complex but case {case.name} is real")

    report = CaseReport(case=case.name, dtype=np.dtype(dtype).name, shape=tuple(A.shape))
    kw = dict(
        full_matrices=case.full_matrices,
        compute_uv=case.compute_uv,
        eps=eps,
        degeneracy_tol=degeneracy_tol,
        rank_tol=rank_tol,
        device=device,
    )
    Ad = A.astype(dtype)
    primals, tangents, info = svd_jvp(Ad, dA.astype(dtype), return_info=True, **kw)
    cot_in = {
        k: (None if v is None else v.astype(dtype) if k != "gS" else v) for k, v in cots.items()
    }
    gA, vinfo = svd_vjp(Ad, **cot_in, return_info=True, **kw)
    info, vinfo = info._asdict(), vinfo._asdict()
    names = ("dU", "dS", "dVh") if case.compute_uv else ("dS",)
    ours = {k: np.asarray(v) for k, v in zip(names, tangents, strict=True)}
    ours["gA"] = np.asarray(gA)

    # conditioning and what the tolerances did
    s = np.asarray(info["S"])
    cond = conditioning(s)
    cond["degenerate_pairs_cut"] = int(info["degenerate_pairs"]) if eps == 0 else 0
    cond["rank_cut"] = int(info["rank_cut"])
    cond["broadened"] = bool(info["broadened"])
    cond["gauge_relative"] = float(vinfo.get("gauge_relative", 0.0))
    if cond["degenerate_pairs_cut"]:
        report.notes.append(
            f"{cond['degenerate_pairs_cut']} near-degenerate pair(s) had their 1/(s_j - s_i) "
            "term cut by the degeneracy tolerance"
        )
    if cond["rank_cut"]:
        report.notes.append(
            f"{cond['rank_cut']} singular value(s) at or below the rank tolerance were left out "
            "of the 1/s terms"
        )
    if cond["broadened"]:
        report.notes.append(f"Lorentzian broadening eps={eps:g} changes the result by design")

    # (1) finite differences in 64-bit, two step sizes
    A64, dA64 = A.astype(hi), dA.astype(hi)
    h = _fd_step(A64, dA64)
    fd1 = fd_jvp(A64, dA64, case, h)
    fd2 = fd_jvp(A64, dA64, case, h / 2)
    exact_mode = eps == 0 and cond["degenerate_pairs_cut"] == 0 and cond["rank_cut"] == 0
    nA = float(np.linalg.norm(A64.ravel()))
    nd = float(np.linalg.norm(dA64.ravel()))
    floors = {"dS": 1e-3 * nd, "dU": 1e-3 * nd / max(nA, 1e-300)}
    floors["dVh"] = floors["dU"]
    fd_noise_all = []
    for name in names:
        noise = rel_error(fd1[name], fd2[name], floors[name])
        fd_noise_all.append(noise)
        report.rows.append(
            Row(
                case.name,
                name,
                "fd",
                rel_error(ours[name], fd2[name], floors[name]),
                max(tol["fd"], 10 * noise),
                noise,
            )
        )

    def pairing(tangents):
        """Re sum(g * d) over the cotangents, and sum |g| |d| as its scale."""
        value, scale = 0.0, 0.0
        for cname, tname in (("gU", "dU"), ("gS", "dS"), ("gVh", "dVh")):
            g = cots.get(cname)
            if g is not None:
                value += float(np.real(np.sum(g * tangents[tname])))
                scale += float(np.sum(np.abs(g) * np.abs(tangents[tname])))
        return value, scale

    # directional derivative of the loss Re sum(g * f(A)) along dA, by FD, against <gA, dA>
    lhs = float(np.real(np.sum(ours["gA"] * dA)))
    rhs_fd, scale_fd = pairing(fd2)
    rhs, scale = pairing(ours)
    scale_fd += abs(lhs)
    scale += abs(lhs)
    fd_noise = max(fd_noise_all) if fd_noise_all else 0.0
    report.rows.append(
        Row(
            case.name,
            "gA",
            "fd",
            abs(lhs - rhs_fd) / max(scale_fd, 1e-300),
            max(tol["fd"], 10 * fd_noise),
            fd_noise,
        )
    )
    # (3) the adjoint identity between the rules' own JVP and VJP
    report.rows.append(
        Row(case.name, "gA", "adjoint", abs(lhs - rhs) / max(scale, 1e-300), tol["adjoint"])
    )
    # chain rule dA = dU S Vh + U dS Vh + U S dVh, for full-rank matrices
    if case.compute_uv and cond["rank_cut"] == 0:
        U, S, Vh = (np.asarray(x) for x in primals)
        k = min(m, n)
        Sm = np.zeros(S.shape[:-1] + (U.shape[-1], Vh.shape[-2]), S.dtype)
        idx = np.arange(k)
        Sm[..., idx, idx] = S
        dSm = np.zeros_like(Sm)
        dSm[..., idx, idx] = ours["dS"]
        rec = ours["dU"] @ Sm @ Vh + U @ dSm @ Vh + U @ Sm @ ours["dVh"]
        report.rows.append(
            Row(
                case.name,
                "dA",
                "chain rule",
                rel_error(rec, np.broadcast_to(dA, rec.shape)),
                tol["chain rule"],
            )
        )
    # (2) JAX's own autodiff where it supports the case
    if _jax_supports(case, A.shape) and exact_mode:
        jvp_ref, gA_ref = _jax_reference(A64, dA64, cots, case)
        for name in names:
            report.rows.append(
                Row(
                    case.name,
                    name,
                    "jax",
                    rel_error(ours[name], jvp_ref[name], floors[name]),
                    tol["jax"],
                )
            )
        report.rows.append(Row(case.name, "gA", "jax", rel_error(ours["gA"], gA_ref), tol["jax"]))
    elif not _jax_supports(case, A.shape):
        report.notes.append("jax.jvp/jax.vjp do not support full_matrices=True with m != n")
    # a result the user computed
    for name, value in (against or {}).items():
        if name not in ours:
            raise ValueError(
                f"--against holds {name!r}, which case {case.name} does not produce "
                f"(it produces {', '.join(sorted(ours))})"
            )
        value = np.asarray(value)
        if value.shape != ours[name].shape:
            report.rows.append(Row(case.name, name, "against", float("inf"), tol["against"]))
            report.notes.append(
                f"--against {name} has shape {value.shape}, expected {ours[name].shape}"
            )
            continue
        report.rows.append(
            Row(
                case.name,
                name,
                "against",
                rel_error(value, ours[name], floors.get(name, 0.0)),
                tol["against"],
            )
        )

    trustworthy = fd_noise < 1e-4 and exact_mode
    cond["fd_noise"] = fd_noise
    cond["fd_trustworthy"] = bool(trustworthy)
    if not trustworthy:
        report.notes.append(
            "finite differences are not a trustworthy reference here (noisy or near-degenerate "
            "singular values); the FD rows are only indicative"
        )
    report.conditioning = cond
    return report


def run_checks(A, cases, **kwargs) -> Report:
    return Report([check_case(A, case, **kwargs) for case in cases])
