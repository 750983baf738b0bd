"""--workers and --scheduler on the command line: svd, jvp and vjp on a dask cluster write what
the embedded default writes (.h5 by this process, .zarr by the workers), with --rank and
--factors; and every misuse is one line with its exit status."""

from __future__ import annotations

import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from helpers import assert_close
from typer.testing import CliRunner

distributed = pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")

from test_distributed import dask_processes  # noqa: E402

from svdgrad_cli.cli.app import app  # noqa: E402

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def read(spec: str) -> dict[str, np.ndarray]:
    path, _, group = spec.partition(":")
    if path.endswith(".zarr"):
        g = zarr.open_group(path, mode="r")
        if group:
            g = g[group.strip("/")]
        return {k: np.asarray(g[k][...]) for k in g.array_keys()}
    with h5py.File(path, "r") as f:
        g = f[group] if group else f
        return {k: g[k][()] for k in g}


def assert_same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].shape == b[k].shape and a[k].dtype == b[k].dtype, k
        assert_close(a[k], b[k], a[k].dtype)


@pytest.fixture
def stack(tmp_path, rng):
    """A stack of 18 matrices 6 x 4 with a tangent and cotangents, in one .h5 file."""
    path = tmp_path / "in.h5"
    with h5py.File(path, "w") as f:
        f["A"] = rng.standard_normal((18, 6, 4))
        f["dA"] = rng.standard_normal((18, 6, 4))
        f["gS"] = rng.standard_normal((18, 4))
        f["gS2"] = rng.standard_normal((18, 2))
    return path


def test_jvp_on_local_workers_started_by_the_command(stack, tmp_path):
    """--workers 2 starts a LocalCluster (a real process, as a user runs it); the .h5 it writes
    equals the embedded default's."""
    ref, out = tmp_path / "ref.h5", tmp_path / "out.h5"
    assert cli("jvp", f"{stack}:/A", f"{stack}:/dA", "-o", ref).exit_code == 0
    proc = subprocess.run(
        [sys.executable, "-m", "svdgrad_cli", "jvp", f"{stack}:/A", f"{stack}:/dA"]
        + ["--workers", "2", "--chunk", "5", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert_same(read(str(out)), read(str(ref)))


def test_vjp_with_rank_and_factors_to_zarr(local, stack, tmp_path):
    """--rank and --factors on the workers; the .zarr group they write equals the embedded .h5."""
    factors = tmp_path / "f.h5"
    assert cli("svd", f"{stack}:/A", "--rank", 2, "-o", factors).exit_code == 0
    args = ["vjp", f"{stack}:/A", "--gS", f"{stack}:/gS2", "--rank", 2, "--factors", factors]
    ref = tmp_path / "ref.h5"
    assert cli(*args, "-o", ref).exit_code == 0
    out = f"{tmp_path / 'out.zarr'}:/grads"
    r = cli(*args, "--scheduler", local, "--chunk", 4, "-o", out)
    assert r.exit_code == 0, r.output
    assert_same(read(out), read(str(ref)))


def test_svd_on_dask_scheduler_and_worker_commands(stack, tmp_path):
    """A scheduler and a worker started with dask's own commands."""
    ref = tmp_path / "ref.h5"
    assert cli("svd", f"{stack}:/A", "-o", ref).exit_code == 0
    with dask_processes(1) as (address, _, _):
        out = tmp_path / "out.zarr"
        r = cli("svd", f"{stack}:/A", "--scheduler", address, "--chunk", 7, "-o", out)
        assert r.exit_code == 0, r.output
    assert_same(read(str(out)), read(str(ref)))


def test_gauge_dependent_cotangent_refused_on_the_cluster(local, tmp_path, rng):
    """A cotangent of complex U that depends on the phases of the singular vectors: the client
    checks each chunk's diagnostics as it arrives; exit 1, nothing written."""
    path = tmp_path / "g.h5"
    with h5py.File(path, "w") as f:
        f["A"] = rng.standard_normal((18, 6, 4)) + 1j * rng.standard_normal((18, 6, 4))
        f["gU"] = rng.standard_normal((18, 6, 4)) + 1j * rng.standard_normal((18, 6, 4))
    out = tmp_path / "out.h5"
    r = cli("vjp", f"{path}:/A", "--gU", f"{path}:/gU", "--scheduler", local, "-o", out)
    assert r.exit_code == 1
    assert "do not determine the gradient" in r.output
    assert not out.exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "add -o PATH.h5"),
        (["-o", "out.npz"], "add -o PATH.h5"),
        (["--scheduler", "tcp://127.0.0.1:1", "-o", "x.h5"], "give one"),
    ],
)
def test_bad_cluster_calls(stack, tmp_path, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    r = cli("svd", f"{stack}:/A", "--workers", 2, *extra)
    assert r.exit_code == 2
    assert message in r.output and len(r.output.strip().splitlines()) == 1
    assert not any(tmp_path.glob("out*")) and not (tmp_path / "x.h5").exists()


def test_single_matrix_is_not_a_stack(tmp_path, rng):
    A = tmp_path / "A.npy"
    np.save(A, rng.standard_normal((5, 3)))
    r = cli("svd", A, "--workers", 1, "-o", tmp_path / "out.h5")
    assert r.exit_code == 2
    assert "must be a stack" in r.output
    assert not (tmp_path / "out.h5").exists()


def test_unreachable_scheduler_is_a_quick_exit_2(stack, tmp_path):
    start = time.monotonic()
    out = tmp_path / "out.h5"
    r = cli("svd", f"{stack}:/A", "--scheduler", "tcp://127.0.0.1:9", "-o", out)
    assert r.exit_code == 2
    assert time.monotonic() - start < 30
    assert "scheduler" in r.output and len(r.output.strip().splitlines()) == 1
    assert not out.exists()


def test_missing_extra_names_it(stack, tmp_path, monkeypatch):
    """Without dask.distributed, --workers is one line naming the extra (exit 2); the embedded
    default does not need it."""
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed fails
    out = tmp_path / "out.h5"
    r = cli("svd", f"{stack}:/A", "--workers", 2, "-o", out)
    assert r.exit_code == 2
    assert "pip install 'svdgrad[dask]'" in r.output
    assert not out.exists()
    assert cli("svd", f"{stack}:/A", "-o", out).exit_code == 0
