"""Every bad input or bad call: exit status, one clear stderr line, no traceback, no output."""

from __future__ import annotations

import hashlib
import os
import pathlib
import subprocess
import sys

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from svdgrad_cli.cli.app import app

rng = np.random.default_rng(11)
A43 = rng.standard_normal((4, 3))
DA43 = rng.standard_normal((4, 3))


def save(name, arr, **kw):
    def make(d: pathlib.Path):
        np.save(d / name, arr, **kw)

    return make


def raw(name, data: bytes):
    def make(d: pathlib.Path):
        (d / name).write_bytes(data)

    return make


def npy_with_header(shape) -> bytes:
    header = {"descr": "<f8", "fortran_order": False, "shape": shape}
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + b"\0" * 64


def truncated_npy() -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, A43)
    return buf.getvalue()[:-20]


def h5_file(d: pathlib.Path):
    with h5py.File(d / "in.h5", "w") as f:
        f["/g/A"] = A43


def npz_file(d: pathlib.Path):
    np.savez(d / "in.npz", A=A43)


def factors(name, A, drop=(), full=False, group=None):
    """U, S, Vh of A in a .npz file or (group) an .h5 group, less the names in ``drop``."""

    def make(d: pathlib.Path):
        U, S, Vh = np.linalg.svd(A, full_matrices=full)
        arrays = {k: v for k, v in (("U", U), ("S", S), ("Vh", Vh)) if k not in drop}
        if group is None:
            np.savez(d / name, **arrays)
            return
        with h5py.File(d / name, "a") as f:
            for k, v in arrays.items():
                f[f"{group}/{k}"] = v

    return make


def degenerate_matrix() -> np.ndarray:
    """Q diag(3, 2, 2, 1) W^T: a block of two equal singular values."""
    g = np.random.default_rng(12)
    Q = np.linalg.qr(g.standard_normal((4, 4)))[0]
    W = np.linalg.qr(g.standard_normal((4, 4)))[0]
    return Q @ np.diag([3.0, 2.0, 2.0, 1.0]) @ W.T


def cut_matrix() -> np.ndarray:
    """Q diag(5, 4, 3, 3, 1) W^T (7 x 5): with --rank 3 the cut lies inside the pair 3, 3."""
    g = np.random.default_rng(13)
    Q = np.linalg.qr(g.standard_normal((7, 7)))[0]
    W = np.linalg.qr(g.standard_normal((5, 5)))[0]
    D = np.zeros((7, 5))
    D[np.arange(5), np.arange(5)] = [5.0, 4.0, 3.0, 3.0, 1.0]
    return Q @ D @ W.T


def top_factors(name, A, rank):
    """The top ``rank`` triplets of A in a .npz file, as `svdgrad svd --rank` writes them."""

    def make(d: pathlib.Path):
        U, S, Vh = np.linalg.svd(A, full_matrices=False)
        np.savez(d / name, U=U[:, :rank], S=S[:rank], Vh=Vh[:rank], err=np.linalg.norm(S[rank:]))

    return make


def interrupt(monkeypatch):
    import svdgrad_cli.api as api

    def stop(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "svd_jvp", stop)


def read_only(monkeypatch):
    # running as root, chmod does not stop writes: make the access check report read-only
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False)


GOOD = [save("A.npy", A43), save("dA.npy", DA43)]
JVP = ["jvp", "{d}/A.npy", "{d}/dA.npy", "-o", "{d}/out.npz"]
GS3 = save("gS.npy", rng.standard_normal(3))
VJP_F = ["vjp", "{d}/A.npy", "--factors", "{d}/f.npz", "--gS", "{d}/gS.npy", "-o", "{d}/out.npz"]
VJP_CUT = ["vjp", "{d}/A.npy", "--gS", "{d}/gS.npy", "--rank", "3", "--solver", "iterative"]

# (id, setup, argv, exit status, substring of stderr, how: "runner" / "sub" / stdin bytes,
#  monkeypatch)
CASES = [
    (
        "nan-in-A",
        [save("A.npy", np.array([[1.0, np.nan], [0, 1]])), save("dA.npy", np.eye(2))],
        JVP,
        2,
        "NaN",
        "runner",
        None,
    ),
    (
        "inf-in-tangent",
        [save("A.npy", np.eye(2)), save("dA.npy", np.array([[np.inf, 0], [0, 1]]))],
        JVP,
        2,
        "Inf",
        "runner",
        None,
    ),
    (
        "empty-0xn",
        [save("A.npy", np.zeros((0, 3))), save("dA.npy", DA43)],
        JVP,
        2,
        "empty",
        "runner",
        None,
    ),
    (
        "empty-mx0",
        [save("A.npy", np.zeros((4, 0))), save("dA.npy", DA43)],
        JVP,
        2,
        "empty",
        "runner",
        None,
    ),
    ("1-D", [save("A.npy", np.ones(3)), save("dA.npy", DA43)], JVP, 2, "1-D", "runner", None),
    ("0-D", [save("A.npy", np.float64(3)), save("dA.npy", DA43)], JVP, 2, "0-D", "runner", None),
    (
        "string-dtype",
        [save("A.npy", np.array([["a", "b"], ["c", "d"]])), save("dA.npy", DA43)],
        JVP,
        2,
        "strings",
        "runner",
        None,
    ),
    (
        "object-needs-pickle",
        [
            save("A.npy", np.array([[1, None]], dtype=object), allow_pickle=True),
            save("dA.npy", DA43),
        ],
        JVP,
        2,
        "pickle",
        "runner",
        None,
    ),
    (
        "structured-dtype",
        [save("A.npy", np.zeros((2, 2), dtype=[("x", "f8"), ("y", "f8")])), save("dA.npy", DA43)],
        JVP,
        2,
        "structured",
        "runner",
        None,
    ),
    (
        "truncated-npy",
        [raw("A.npy", truncated_npy()), save("dA.npy", DA43)],
        JVP,
        2,
        "truncated",
        "runner",
        None,
    ),
    (
        "corrupt-npz",
        [raw("in.npz", b"PK\x03\x04 not really a zip"), save("dA.npy", DA43)],
        ["jvp", "{d}/in.npz:A", "{d}/dA.npy", "-o", "{d}/out.npz"],
        2,
        ".npz",
        "runner",
        None,
    ),
    (
        "corrupt-h5",
        [raw("in.h5", b"\x89HDF\r\n\x1a\n" + b"\0" * 40), save("dA.npy", DA43)],
        ["jvp", "{d}/in.h5:/A", "{d}/dA.npy", "-o", "{d}/out.npz"],
        2,
        "HDF5",
        "runner",
        None,
    ),
    (
        "absurd-header-shape",
        [raw("A.npy", npy_with_header((10**9, 10**9))), save("dA.npy", DA43)],
        JVP,
        2,
        "header declares shape",
        "runner",
        None,
    ),
    (
        "missing-dataset",
        [h5_file, save("dA.npy", DA43)],
        ["jvp", "{d}/in.h5:/g/nope", "{d}/dA.npy", "-o", "{d}/out.npz"],
        2,
        "no dataset '/g/nope'",
        "runner",
        None,
    ),
    (
        "missing-group",
        [h5_file, save("dA.npy", DA43)],
        ["jvp", "{d}/in.h5:/nogroup/A", "{d}/dA.npy", "-o", "{d}/out.npz"],
        2,
        "no dataset",
        "runner",
        None,
    ),
    (
        "h5-path-is-group",
        [h5_file, save("dA.npy", DA43)],
        ["jvp", "{d}/in.h5:/g", "{d}/dA.npy", "-o", "{d}/out.npz"],
        2,
        "is a group",
        "runner",
        None,
    ),
    (
        "missing-npz-name",
        [npz_file, save("dA.npy", DA43)],
        ["jvp", "{d}/in.npz:Z", "{d}/dA.npy", "-o", "{d}/out.npz"],
        2,
        "no array 'Z'",
        "runner",
        None,
    ),
    ("missing-file", [save("dA.npy", DA43)], JVP, 2, "file not found", "runner", None),
    (
        "output-same-as-input",
        GOOD,
        ["jvp", "{d}/A.npy", "{d}/dA.npy", "--only", "dS", "-o", "{d}/A.npy"],
        2,
        "same file",
        "runner",
        None,
    ),
    (
        "output-dir-missing",
        GOOD,
        ["jvp", "{d}/A.npy", "{d}/dA.npy", "-o", "{d}/nodir/out.npz"],
        2,
        "does not exist",
        "runner",
        None,
    ),
    ("read-only-output", GOOD + [raw("out.npz", b"old")], JVP, 2, "writable", "runner", read_only),
    (
        "empty-stdin",
        [save("dA.npy", DA43)],
        ["jvp", "-", "{d}/dA.npy", "-o", "{d}/out.npz"],
        2,
        "standard input is empty",
        b"",
        None,
    ),
    (
        "non-npy-stdin",
        [save("dA.npy", DA43)],
        ["jvp", "-", "{d}/dA.npy", "-o", "{d}/out.npz"],
        2,
        "not a .npy stream",
        b"hello, not numpy",
        None,
    ),
    ("interrupted", GOOD, JVP, 130, "interrupted", "runner", interrupt),
    (
        "gU-with-values-only",
        GOOD,
        ["vjp", "{d}/A.npy", "--gU", "{d}/dA.npy", "--values-only", "-o", "{d}/out.npz"],
        2,
        "only --gS",
        "runner",
        None,
    ),
    (
        "no-cotangent",
        GOOD,
        ["vjp", "{d}/A.npy", "-o", "{d}/out.npz"],
        2,
        "no cotangent",
        "runner",
        None,
    ),
    (
        "batch-not-broadcasting",
        [save("A.npy", np.ones((3, 4, 3))), save("dA.npy", np.ones((2, 4, 3)))],
        JVP,
        2,
        "do not broadcast",
        "runner",
        None,
    ),
    (
        "tangent-matrix-shape",
        [save("A.npy", A43), save("dA.npy", np.ones((3, 4)))],
        JVP,
        2,
        "DA: has shape (3, 4)",
        "runner",
        None,
    ),
    (
        "cotangent-shape",
        GOOD + [save("g4.npy", np.ones(4))],
        ["vjp", "{d}/A.npy", "--gS", "{d}/g4.npy", "-o", "{d}/out.npz"],
        2,
        "--gS: has shape (4,)",
        "runner",
        None,
    ),
    (
        "two-stdin",
        GOOD,
        ["jvp", "-", "-", "-o", "{d}/out.npz"],
        2,
        "standard input ('-')",
        b"",
        None,
    ),
    ("unknown-flag", GOOD, JVP + ["--bogus"], 2, "No such option: --bogus", "sub", None),
    ("bad-device", GOOD, JVP + ["--device", "tpu"], 2, "--device", "sub", None),
    (
        "against-with-all-cases",
        GOOD + [raw("ref.npz", b"")],
        ["check", "{d}/A.npy", "--all-cases", "--against", "{d}/ref.npz"],
        2,
        "--all-cases",
        "runner",
        None,
    ),
    (
        "npy-output-without-only",
        GOOD,
        ["jvp", "{d}/A.npy", "{d}/dA.npy", "-o", "{d}/out.npy"],
        2,
        "--only",
        "runner",
        None,
    ),
    ("unknown-only-name", GOOD, JVP + ["--only", "gA"], 2, "unknown output 'gA'", "runner", None),
    # svd
    (
        "svd-nan",
        [save("A.npy", np.array([[1.0, np.nan], [0, 1]]))],
        ["svd", "{d}/A.npy", "-o", "{d}/out.npz"],
        2,
        "NaN",
        "runner",
        None,
    ),
    (
        "svd-npy-output-without-only",
        GOOD,
        ["svd", "{d}/A.npy", "-o", "{d}/out.npy"],
        2,
        "--only",
        "runner",
        None,
    ),
    (
        "svd-values-only-has-no-U",
        GOOD,
        ["svd", "{d}/A.npy", "--values-only", "--only", "U", "-o", "{d}/U.npy"],
        2,
        "unknown output 'U'",
        "runner",
        None,
    ),
    # jvp has no cotangents, so no cotangent options
    ("jvp-convention", GOOD, JVP + ["--convention", "torch"], 2, "--convention", "sub", None),
    # vjp --factors
    (
        "factors-not-of-A",
        [save("A.npy", A43), GS3, factors("f.npz", DA43)],
        VJP_F,
        2,
        "factors do not factor A: residual",
        "sub",
        None,
    ),
    (
        "factors-lack-Vh",
        [save("A.npy", A43), GS3, factors("f.npz", A43, drop=("Vh",))],
        VJP_F,
        2,
        "holds no Vh",
        "sub",
        None,
    ),
    (
        "factors-h5-group-lacks-U",
        [save("A.npy", A43), GS3, factors("f.h5", A43, drop=("U",), group="/svd")],
        ["vjp", "{d}/A.npy", "--factors", "{d}/f.h5:/svd", "--gS", "{d}/gS.npy"],
        2,
        "holds no U",
        "runner",
        None,
    ),
    (
        "factors-h5-no-group",
        [save("A.npy", A43), GS3, factors("f.h5", A43, group="/svd")],
        ["vjp", "{d}/A.npy", "--factors", "{d}/f.h5:/nope", "--gS", "{d}/gS.npy"],
        2,
        "'/nope' is not a group",
        "runner",
        None,
    ),
    (
        "factors-npy",
        [save("A.npy", A43), GS3],
        ["vjp", "{d}/A.npy", "--factors", "{d}/A.npy", "--gS", "{d}/gS.npy"],
        2,
        "needs a .npz file or PATH.h5",
        "runner",
        None,
    ),
    (
        "factors-stdin",
        [save("A.npy", A43), GS3],
        ["vjp", "{d}/A.npy", "--factors", "-", "--gS", "{d}/gS.npy"],
        2,
        "needs a .npz file",
        "runner",
        None,
    ),
    ("factors-missing-file", [save("A.npy", A43), GS3], VJP_F, 2, "file not found", "runner", None),
    (
        "factors-of-another-shape",
        [save("A.npy", A43), GS3, factors("f.npz", A43[:3])],
        VJP_F,
        2,
        "U has shape (3, 3), but A of shape (4, 3) needs",
        "runner",
        None,
    ),
    (
        "factors-thin-with-full",
        [save("A.npy", A43), GS3, factors("f.npz", A43)],
        VJP_F + ["--full"],
        2,
        "--full: the --factors are thin",
        "runner",
        None,
    ),
    (
        "factors-full-gU-thin",
        [save("A.npy", A43), save("gU.npy", DA43), factors("f.npz", A43, full=True)],
        ["vjp", "{d}/A.npy", "--factors", "{d}/f.npz", "--gU", "{d}/gU.npy"],
        2,
        "--gU: has shape (4, 3), but the U of the full --factors",
        "runner",
        None,
    ),
    # --rank, --solver, --gerr (the truncated SVD)
    (
        "rank-zero",
        GOOD,
        ["svd", "{d}/A.npy", "--rank", "0", "-o", "{d}/f.npz"],
        2,
        "--rank 0: must be at least 1",
        "sub",
        None,
    ),
    (
        "rank-negative",
        GOOD,
        JVP + ["--rank", "-2"],
        2,
        "--rank -2: must be at least 1",
        "runner",
        None,
    ),
    (
        "rank-above-min-m-n",
        GOOD,
        JVP + ["--rank", "4"],
        2,
        "--rank 4: A of shape (4, 3) has min(m, n) = 3 singular values; choose R between 1 and 3",
        "sub",
        None,
    ),
    (
        "rank-above-min-m-n-svd",
        GOOD,
        ["svd", "{d}/A.npy", "--rank", "5", "-o", "{d}/f.npz"],
        2,
        "--rank 5: A of shape (4, 3) has min(m, n) = 3",
        "runner",
        None,
    ),
    (
        "rank-above-min-m-n-vjp",
        [save("A.npy", A43), GS3],
        ["vjp", "{d}/A.npy", "--gS", "{d}/gS.npy", "--rank", "4", "-o", "{d}/out.npz"],
        2,
        "--rank 4: A of shape (4, 3) has min(m, n) = 3",
        "runner",
        None,
    ),
    (
        "rank-with-full",
        GOOD,
        ["svd", "{d}/A.npy", "--rank", "2", "--full", "-o", "{d}/f.npz"],
        2,
        "--rank 2 with --full: the top R triplets are a thin result",
        "sub",
        None,
    ),
    ("rank-with-full-jvp", GOOD, JVP + ["--full", "--rank", "1"], 2, "drop --full", "runner", None),
    (
        "rank-not-an-integer",
        GOOD,
        JVP + ["--rank", "2.5"],
        2,
        "Invalid value for '--rank'",
        "sub",
        None,
    ),
    (
        "solver-unknown",
        GOOD,
        JVP + ["--rank", "2", "--solver", "lanczos"],
        2,
        "Invalid value for '--solver'",
        "sub",
        None,
    ),
    (
        "solver-without-rank",
        GOOD,
        JVP + ["--solver", "dense"],
        2,
        "--solver dense: chooses the solver of the truncated SVD; add --rank R",
        "sub",
        None,
    ),
    (
        "gerr-without-rank",
        [save("A.npy", A43)],
        ["vjp", "{d}/A.npy", "--gerr", "1", "-o", "{d}/out.npz"],
        2,
        "--gerr: is the cotangent of the truncation error err",
        "sub",
        None,
    ),
    (
        "gerr-complex",
        [save("A.npy", A43), save("gerr.npy", np.array([1.0 + 1j]))],
        ["vjp", "{d}/A.npy", "--rank", "2", "--gerr", "{d}/gerr.npy", "-o", "{d}/out.npz"],
        2,
        "is complex, but err is real",
        "runner",
        None,
    ),
    (
        "gerr-scalar-file",
        [save("A.npy", A43), save("gerr.npy", np.float64(1.0))],
        ["vjp", "{d}/A.npy", "--rank", "2", "--gerr", "{d}/gerr.npy", "-o", "{d}/out.npz"],
        2,
        "holds a single number; pass the number itself",
        "runner",
        None,
    ),
    (
        "gerr-batch-mismatch",
        [save("A.npy", np.stack([A43] * 3)), save("gerr.npy", np.ones(2))],
        ["vjp", "{d}/A.npy", "--rank", "2", "--gerr", "{d}/gerr.npy", "-o", "{d}/out.npz"],
        2,
        "--gerr: has shape (2,), but err has one value per matrix of A's batch (3,)",
        "runner",
        None,
    ),
    (
        "gerr-not-finite",
        [save("A.npy", A43)],
        ["vjp", "{d}/A.npy", "--rank", "2", "--gerr", "nan", "-o", "{d}/out.npz"],
        2,
        "--gerr nan: must be a finite number",
        "runner",
        None,
    ),
    (
        "rank-gU-of-thin-shape",
        [save("A.npy", A43), save("gU.npy", DA43)],
        ["vjp", "{d}/A.npy", "--rank", "2", "--gU", "{d}/gU.npy", "-o", "{d}/out.npz"],
        2,
        "--gU: has shape (4, 3), but the U of the top 2 triplets of A with shape (4, 3) must end",
        "runner",
        None,
    ),
    (
        "rank-factors-of-another-rank",
        [save("A.npy", A43), save("gS.npy", np.ones(1)), top_factors("f.npz", A43, 2)],
        ["vjp", "{d}/A.npy", "--rank", "1", "--factors", "{d}/f.npz", "--gS", "{d}/gS.npy"],
        2,
        "S has shape (2,), but the top 1 triplets of A of shape (4, 3) need (..., 1)",
        "runner",
        None,
    ),
    (
        "top-factors-without-rank",
        [save("A.npy", A43), GS3, top_factors("f.npz", A43, 2)],
        VJP_F,
        2,
        "(or add --rank 2 for the top 2 triplets",
        "runner",
        None,
    ),
    (
        "rank-factors-not-of-A",
        [save("A.npy", A43), save("gS.npy", np.ones(2)), top_factors("f.npz", DA43, 2)],
        ["vjp", "{d}/A.npy", "--rank", "2", "--factors", "{d}/f.npz", "--gS", "{d}/gS.npy"],
        2,
        "factors do not factor A: residual",
        "sub",
        None,
    ),
    # a cut inside a degenerate pair has no derivative (exit 1, nothing written)
    (
        "rank-cut-in-degenerate-pair-jvp",
        [save("A.npy", cut_matrix()), save("dA.npy", rng.standard_normal((7, 5)))],
        JVP + ["--rank", "3"],
        1,
        "error: --rank 3: the cut lies inside a degenerate pair, s_3 = s_4 (gap (s_R - s_{R+1})",
        "sub",
        None,
    ),
    (
        "rank-cut-in-degenerate-pair-vjp",
        [save("A.npy", cut_matrix()), save("gS.npy", np.ones(3))],
        VJP_CUT,
        1,
        "choose another --rank, one that keeps or drops the whole block",
        "sub",
        None,
    ),
    # cotangents that do not determine the gradient (exit 1, nothing written)
    (
        "gauge-gS-split-in-degenerate-block",
        [save("A.npy", degenerate_matrix()), save("gS.npy", np.array([1.0, 0.3, -0.5, 2.0]))],
        ["vjp", "{d}/A.npy", "--gS", "{d}/gS.npy", "-o", "{d}/out.npz"],
        1,
        "the cotangents do not determine the gradient: gS differs inside a block of equal",
        "runner",
        None,
    ),
    (
        "gauge-null-space",
        [save("A.npy", np.outer([1.0, 2, 3, 4], [1.0, 1, 2])), save("gU.npy", DA43)],
        ["vjp", "{d}/A.npy", "--gU", "{d}/gU.npy", "-o", "{d}/out.npz"],
        1,
        "depends on singular vectors of the null space",
        "runner",
        None,
    ),
]


def snapshot(d: pathlib.Path) -> dict[str, str]:
    return {
        str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(d.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize(
    "setup, argv, status, message, how, patch", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input(tmp_path, monkeypatch, setup, argv, status, message, how, patch):
    for make in setup:
        make(tmp_path)
    argv = [a.format(d=tmp_path) for a in argv]
    before = snapshot(tmp_path)
    if how == "sub" or isinstance(how, bytes):
        p = subprocess.run(
            [sys.executable, "-m", "svdgrad_cli", *argv],
            input=how if isinstance(how, bytes) else None,
            capture_output=True,
            timeout=120,
        )
        code, stdout, stderr = p.returncode, p.stdout.decode(), p.stderr.decode()
        assert len(stderr.strip().splitlines()) == 1, stderr
    else:
        if patch is not None:
            patch(monkeypatch)
        r = CliRunner().invoke(app, argv)
        code, stdout, stderr = r.exit_code, r.stdout, r.stderr
        assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert code == status, stderr
    assert message in stderr
    assert "Traceback" not in stdout + stderr
    monkeypatch.undo()
    assert snapshot(tmp_path) == before  # nothing created, nothing changed
