"""The dask.distributed engine: a LocalCluster on loopback and dask's own scheduler and worker
commands as subprocesses; .h5 (written by the client) and .zarr (written by the workers)
outputs against the embedded default; a worker killed mid-run, every worker gone, the scheduler
gone, an unreachable scheduler, and the extra missing."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
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

from svdgrad_cli import api  # noqa: E402
from svdgrad_cli import distributed as d  # noqa: E402
from svdgrad_cli.cli import _stream  # noqa: E402
from svdgrad_cli.cli.app import app  # noqa: E402
from svdgrad_cli.io import InputError, OutputError  # noqa: E402

JVP_NAMES = ["U", "S", "Vh", "dU", "dS", "dVh"]


# --------------------------------------------------------------------------- fixtures


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dask(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dask", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@contextlib.contextmanager
def dask_processes(n_workers: int):
    """'dask scheduler' and n 'dask worker' processes (no nanny: a killed one stays dead)."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [
        _dask(
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-dashboard",
            "--dashboard-address",
            "127.0.0.1:0",
        )
    ]
    try:
        for _ in range(n_workers):
            procs.append(
                _dask(
                    "worker",
                    address,
                    "--nthreads",
                    "1",
                    "--no-nanny",
                    "--host",
                    "127.0.0.1",
                    "--no-dashboard",
                )
            )
        with distributed.Client(address, timeout="30s", set_as_default=False) as client:
            client.wait_for_workers(n_workers, timeout=60)
        yield address, procs[0], procs[1:]
    finally:
        for proc in procs:
            _stop(proc)


@pytest.fixture
def stack(tmp_path, rng):
    """A stack of 24 matrices 5 x 3 with a tangent and cotangents, in one .h5 file."""
    A = rng.standard_normal((24, 5, 3))
    path = tmp_path / "in.h5"
    with h5py.File(path, "w") as f:
        f["A"] = A
        f["dA"] = rng.standard_normal(A.shape)
        f["gU"] = rng.standard_normal((24, 5, 3))
        f["gS"] = rng.standard_normal((24, 3))
    return path


@pytest.fixture
def big(tmp_path, rng):
    """Enough chunks (30) that a fault lands mid-run."""
    path = tmp_path / "big.h5"
    with h5py.File(path, "w") as f:
        f["A"] = rng.standard_normal((600, 8, 6))
        f["gS"] = rng.standard_normal((600, 6))
    return path


def _vjp_reference(path):
    with h5py.File(path, "r") as f:
        A, gS = f["A"][()], f["gS"][()]
    gA, info = api.svd_vjp(A, gS=gS, return_info=True)
    return {"gA": np.asarray(gA), "S": np.asarray(info.S)}


def _h5(path, group="/"):
    with h5py.File(path, "r") as f:
        return {k: v[()] for k, v in f[group].items() if isinstance(v, h5py.Dataset)}


def _zarr(path, group=None):
    root = zarr.open_group(str(path), mode="r")
    g = root[group] if group else root
    return {name: arr[...] for name, arr in g.arrays()}


def _leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def _jvp_reference(path):
    with h5py.File(path, "r") as f:
        A, dA = f["A"][()], f["dA"][()]
    (U, S, Vh), (dU, dS, dVh) = api.svd_jvp(A, dA)
    return dict(zip(JVP_NAMES, map(np.asarray, (U, S, Vh, dU, dS, dVh)), strict=True))


def _assert_same(got, want):
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        assert got[name].dtype == value.dtype, name
        assert_close(got[name], value, value.dtype, "exact", what=name)


# --------------------------------------------------------------------------- LocalCluster


def test_jvp_h5_equals_the_embedded_default(local, stack, tmp_path):
    code = CliRunner().invoke(
        app, ["jvp", f"{stack}:/A", f"{stack}:/dA", "-o", f"{tmp_path / 'emb.h5'}:/r"]
    )
    assert code.exit_code == 0, code.output
    result = d.compute(
        "jvp",
        f"{tmp_path / 'out.h5'}:/r",
        A=f"{stack}:/A",
        dA=f"{stack}:/dA",
        scheduler=local,
        chunk=5,  # 5 tasks, the last one short
    )
    assert (result.chunk, result.tasks, result.workers) == (5, 5, 2)
    assert len(result.infos) == 5 and "degenerate_pairs" in result.infos[0]
    _assert_same(_h5(tmp_path / "out.h5", "/r"), _h5(tmp_path / "emb.h5", "/r"))
    with h5py.File(tmp_path / "out.h5") as f, h5py.File(tmp_path / "emb.h5") as g:
        assert f["r/dU"].chunks == g["r/dU"].chunks  # the embedded writer's layout
    assert set(result.peak_memory) and all(v > 0 for v in result.peak_memory.values())
    assert _leftovers(tmp_path) == []


def test_cli_plan_to_zarr_written_by_the_workers(local, stack, tmp_path):
    """The command line's own streaming plan (the .h5 inputs read on the workers), a .zarr
    group written in parallel, chunk-aligned."""
    plan = _stream.plan({"A": (f"{stack}:/A", False), "DA": (f"{stack}:/dA", False)})
    with plan:
        seen = []
        result = d.run(
            plan,
            d.Job(  # as the command line builds it
                "jvp",
                options=dict(
                    full_matrices=False,
                    compute_uv=True,
                    rank=None,
                    solver=None,
                    eps=0.0,
                    degeneracy_tol=None,
                    rank_tol=None,
                    device="cpu",
                ),
                args={"A": "A", "dA": "DA"},
            ),
            f"{tmp_path / 'out.zarr'}:/grp/sub",
            scheduler=local,
            chunk=6,
            inputs=[f"{stack}:/A", f"{stack}:/dA"],
            on_info=seen.append,
        )
    assert result.tasks == 4 and len(seen) == 4
    got = _zarr(tmp_path / "out.zarr", "grp/sub")
    _assert_same(got, _jvp_reference(stack))
    arr = zarr.open_array(str(tmp_path / "out.zarr"), path="grp/sub/dU", mode="r")
    assert arr.chunks[0] == 6 and arr.shape == (24, 5, 3)
    assert _leftovers(tmp_path) == []


def test_vjp_with_factors_and_client_read_inputs(local, stack, tmp_path, rng):
    """factors= from an .h5 group (read on the workers); gS from an .npz member and gU as an
    array (read by the client and sent with each task)."""
    with h5py.File(stack, "r") as f:
        A, gU, gS = f["A"][()], f["gU"][()], f["gS"][()]
    U, S, Vh = (np.asarray(x) for x in api.svd(A, full_matrices=False))
    signs = rng.choice([-1.0, 1.0], size=(24, 1, 3))
    U, Vh = U * signs, Vh * np.swapaxes(signs, -1, -2)  # another valid SVD
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f["f/U"], f["f/S"], f["f/Vh"] = U, S, Vh
    np.savez(tmp_path / "g.npz", gS=gS)
    result = d.compute(
        "vjp",
        str(tmp_path / "grad.zarr"),
        A=f"{stack}:/A",
        gU=gU,
        gS=f"{tmp_path / 'g.npz'}:gS",
        factors=f"{tmp_path / 'f.h5'}:/f",
        scheduler=local,
        chunk=8,
    )
    assert result.tasks == 3
    gA = np.asarray(api.svd_vjp(A, gU=gU, gS=gS, factors=(U, S, Vh)))
    got = _zarr(tmp_path / "grad.zarr")
    assert sorted(got) == ["S", "gA"]
    assert_close(got["gA"], gA, np.float64, "exact", what="gA")
    assert_close(got["S"], S, np.float64, "exact", what="S")


def test_rank_passes_through_with_a_broadcast_tangent(local, stack, tmp_path, rng):
    """rank= and solver= reach the rule; a tangent without batch (a .npy read whole) broadcasts
    against every chunk; only= writes one output."""
    dA = rng.standard_normal((5, 3))
    np.save(tmp_path / "dA.npy", dA)
    result = d.compute(
        "jvp",
        str(tmp_path / "t.h5"),
        A=f"{stack}:/A",
        dA=str(tmp_path / "dA.npy"),
        scheduler=local,
        chunk=24,
        only="derr",
        rank=2,
        solver="dense",
    )
    assert result.tasks == 1 and "cut_gap" in result.infos[0]
    with h5py.File(stack, "r") as f:
        A = f["A"][()]
    _, (_, _, _, derr) = api.svd_jvp(A, dA, rank=2, solver="dense")
    got = _h5(tmp_path / "t.h5")
    assert sorted(got) == ["derr"] and got["derr"].shape == (24,)
    assert_close(got["derr"], np.asarray(derr), np.float64, "exact", what="derr")


def test_zarr_updates_a_store_atomically(local, stack, tmp_path):
    """A second group joins an existing store; the same group again replaces its arrays."""
    dest = tmp_path / "out.zarr"
    d.compute("svd", f"{dest}:/a", A=f"{stack}:/A", scheduler=local, chunk=12)
    d.compute("svd", f"{dest}:/b", A=f"{stack}:/A", scheduler=local, chunk=12, compute_uv=False)
    assert sorted(_zarr(dest, "a")) == ["S", "U", "Vh"]
    assert sorted(_zarr(dest, "b")) == ["S"]
    S = np.asarray(api.svd(h5py.File(stack, "r")["A"][()], compute_uv=False))
    assert_close(_zarr(dest, "b")["S"], S, np.float64, "exact")
    d.compute("svd", f"{dest}:/a", A=f"{stack}:/A", scheduler=local, chunk=24, compute_uv=False)
    assert sorted(_zarr(dest, "a")) == ["S", "U", "Vh"]  # as an .h5 group is updated
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", ["h5", "zarr"])
def test_a_bad_chunk_fails_the_run_and_leaves_nothing(local, stack, tmp_path, kind):
    with h5py.File(stack, "a") as f:
        A = f["A"][()]
        A[17, 0, 0] = np.nan
        f["A"][...] = A
    with pytest.raises(InputError, match=r"rows \[16:20\] contains 1 NaN"):
        d.compute(
            "svd",
            str(tmp_path / f"out.{kind}"),
            A=f"{stack}:/A",
            scheduler=local,
            chunk=4,
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.h5"]


@pytest.mark.parametrize("kind", ["h5", "zarr"])
def test_on_info_stops_the_run_and_keeps_the_old_output(local, stack, tmp_path, kind):
    dest = tmp_path / f"out.{kind}"
    d.compute("svd", str(dest), A=f"{stack}:/A", scheduler=local, chunk=24, compute_uv=False)
    before = sorted(os.listdir(dest)) if kind == "zarr" else dest.read_bytes()

    def refuse(info):
        raise RuntimeError("refused")

    with pytest.raises(RuntimeError, match="refused"):
        d.compute("svd", str(dest), A=f"{stack}:/A", scheduler=local, chunk=4, on_info=refuse)
    after = sorted(os.listdir(dest)) if kind == "zarr" else dest.read_bytes()
    assert after == before
    assert _leftovers(tmp_path) == []


def test_destination_errors_come_before_any_work(local, stack, tmp_path):
    for name in ("out.zarr", "out.h5:/g"):
        with pytest.raises(OutputError, match="does not exist"):
            d.compute("svd", str(tmp_path / "no" / name), A=f"{stack}:/A", scheduler=local)
    (tmp_path / "file.zarr").write_text("not a store")
    with pytest.raises(OutputError, match="not a zarr store"):
        d.compute("svd", str(tmp_path / "file.zarr"), A=f"{stack}:/A", scheduler=local)
    with pytest.raises(OutputError, match="PATH.zarr"):
        d.compute("svd", str(tmp_path / "out.npz"), A=f"{stack}:/A", scheduler=local)
    with pytest.raises(ValueError, match="stack"):
        d.compute("svd", str(tmp_path / "o.h5"), A=np.eye(3), scheduler=local)


def test_progress_bar_shows_the_workers():
    from rich.console import Console

    buf = io.StringIO()
    bar = d._Progress(100, "jvp", Console(file=buf, width=120), True)
    bar.start -= 2.0
    bar.update(done=40, workers=3)
    bar.close()
    text = buf.getvalue()
    assert "40/100" in text and "3 workers" in text and "matrices/s" in text


def test_worker_killed_with_os_exit_is_replaced(local, big, tmp_path):
    """The LocalCluster's nanny restarts a worker that exits mid-run; its tasks run again."""
    with distributed.Client(local, set_as_default=False) as client:
        killed = []

        def kill(info):
            if killed:
                return
            busy = [w for w, keys in client.processing().items() if keys]
            victim = busy[0] if busy else next(iter(client.scheduler_info()["workers"]))
            with contextlib.suppress(Exception):  # the worker dies before it answers
                client.run(os._exit, 1, workers=[victim])
            killed.append(victim)

        result = d.compute(
            "vjp",
            str(tmp_path / "out.zarr"),
            A=f"{big}:/A",
            gS=f"{big}:/gS",
            scheduler=local,
            chunk=20,
            on_info=kill,
        )
        assert killed and result.tasks == 30
    _assert_same(_zarr(tmp_path / "out.zarr"), _vjp_reference(big))
    assert _leftovers(tmp_path / "out.zarr") == []  # no marker of the run in the store


# --------------------------------------------------------------------------- dask CLI processes


def test_dask_worker_killed_mid_run(big, tmp_path):
    with dask_processes(2) as (address, _, workers):
        seen = []

        def kill(info):
            seen.append(info)
            if len(seen) == 2:
                workers[0].kill()

        result = d.compute(
            "vjp",
            str(tmp_path / "out.h5"),
            A=f"{big}:/A",
            gS=f"{big}:/gS",
            scheduler=address,
            chunk=20,
            on_info=kill,
        )
        assert workers[0].poll() is not None and result.tasks == 30 and len(seen) == 30
    _assert_same(_h5(tmp_path / "out.h5"), _vjp_reference(big))
    assert _leftovers(tmp_path) == []


def test_every_worker_gone_is_a_clear_error(big, tmp_path):
    with dask_processes(1) as (address, _, workers):
        began = []

        def kill(info):
            if not began:
                workers[0].kill()
                began.append(time.monotonic())

        with pytest.raises(d.ClusterError, match="no dask worker left"):
            d.compute(
                "vjp",
                str(tmp_path / "out.zarr"),
                A=f"{big}:/A",
                gS=f"{big}:/gS",
                scheduler=address,
                chunk=20,
                on_info=kill,
                lost_timeout=2.0,
            )
        assert time.monotonic() - began[0] < 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.h5"]


def test_scheduler_gone_is_a_clear_error(big, tmp_path):
    with dask_processes(1) as (address, scheduler, _):

        def kill(info):
            scheduler.kill()

        began = time.monotonic()
        with pytest.raises(d.ClusterError, match="dask scheduler"):
            d.compute(
                "vjp",
                str(tmp_path / "out.zarr"),
                A=f"{big}:/A",
                gS=f"{big}:/gS",
                scheduler=address,
                chunk=20,
                on_info=kill,
                lost_timeout=5.0,
            )
        assert time.monotonic() - began < 60
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.h5"]


# --------------------------------------------------------------------------- starting, errors


def test_workers_start_a_loopback_cluster(tmp_path, rng):
    A = rng.standard_normal((10, 4, 4))
    np.save(tmp_path / "A.npy", A)
    with d.Cluster(workers=1) as cluster:
        assert cluster.address.startswith("tcp://127.0.0.1:")
        info = cluster.workers_info()
        assert len(info) == 1 and all(w.startswith("tcp://127.0.0.1:") for w in info)
        d.compute("svd", str(tmp_path / "s.h5"), A=str(tmp_path / "A.npy"), cluster=cluster)
    U, S, Vh = (np.asarray(x) for x in api.svd(A, full_matrices=False))
    _assert_same(_h5(tmp_path / "s.h5"), {"U": U, "S": S, "Vh": Vh})


def test_unreachable_scheduler_fails_fast(stack, tmp_path):
    address = f"tcp://127.0.0.1:{_free_port()}"  # nothing listens there
    cluster = d.Cluster(scheduler=address, connect_timeout=2)
    began = time.monotonic()
    with pytest.raises(d.SchedulerUnreachable, match="no dask scheduler answered .* within 2 s"):
        d.compute("svd", str(tmp_path / "o.h5"), A=f"{stack}:/A", cluster=cluster)
    assert time.monotonic() - began < 10
    assert d.Cluster(scheduler=address).connect_timeout == 5  # the default: seconds, not a hang
    assert _leftovers(tmp_path) == []


def test_bad_cluster_arguments():
    with pytest.raises(ValueError, match="HOST:PORT"):
        d.Cluster(scheduler="not an address")
    with pytest.raises(ValueError, match="give one"):
        d.connect(workers=2, scheduler="tcp://127.0.0.1:8786")
    with pytest.raises(ValueError, match="at least 1"):
        d.Cluster(workers=0)
    assert d.connect() is None
    assert d.Cluster(scheduler="127.0.0.1:8786").scheduler == "tcp://127.0.0.1:8786"
    with pytest.raises(ValueError, match="not accepted by svd"):
        d.Job("svd", {"convention": "torch"})


@pytest.mark.parametrize("module", ["distributed", "zarr"])
def test_missing_extra_names_it(monkeypatch, stack, tmp_path, module):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(d.MissingExtra, match=r"pip install 'svdgrad\[dask\]'"):
        d.compute("svd", str(tmp_path / "o.zarr"), A=f"{stack}:/A", workers=1)
    assert _leftovers(tmp_path) == []


def test_importing_the_module_imports_no_dask():
    code = (
        "import sys, svdgrad_cli.distributed\n"
        "bad = [m for m in ('dask', 'distributed', 'zarr') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_destinations_parse():
    P = d.parse_destination
    assert P("o.zarr") == d.Destination("zarr", "o.zarr", None, "o.zarr")
    assert P("dir/o.zarr/") == d.Destination("zarr", "dir/o.zarr", None, "dir/o.zarr/")
    assert P("o.zarr:/g/h") == d.Destination("zarr", "o.zarr", "/g/h", "o.zarr:/g/h")
    assert P("o.h5:/g") == d.Destination("h5", "o.h5", "/g", "o.h5:/g")
    assert P("o.HDF5") == d.Destination("h5", "o.HDF5", None, "o.HDF5")
    assert P("o.npz") is None and P("-") is None and P(None) is None
    assert d._zarr_rows(1000, 8 << 10) == 1000
    assert d._zarr_rows(100000, 8 << 10) == 1000  # a divisor of the task, ~8 MiB
    assert d._zarr_rows(100003, 8 << 10) == 100003  # a prime: one zarr chunk per task
