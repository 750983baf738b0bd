"""Streaming stacks into .h5 outputs chunk by chunk (jvp/vjp --chunk)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from svdgrad_cli.arrays import LazySource
from svdgrad_cli.cli import _common
from svdgrad_cli.cli.app import app


@pytest.fixture
def stack(tmp_path, rng):
    A = rng.standard_normal((11, 5, 3))
    path = tmp_path / "in.h5"
    with h5py.File(path, "w") as f:
        f["A"] = A
        f["dA"] = rng.standard_normal(A.shape)
        f["gS"] = rng.standard_normal((11, 3))
        f["gU"] = rng.standard_normal((11, 5, 3))
        f["gUc"] = f["gU"][()] + 1j * rng.standard_normal((11, 5, 3))
    np.save(tmp_path / "dA2.npy", rng.standard_normal((5, 3)))
    return path


def _run(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes else "")


def _h5(path, group="/"):
    with h5py.File(path, "r") as f:
        return {k: v[()] for k, v in f[group].items() if isinstance(v, h5py.Dataset)}


@pytest.fixture
def reads(monkeypatch):
    """Record every chunk read from a lazily opened input."""
    seen = []
    original = LazySource.read

    def read(self, start, stop):
        seen.append((self.arg, stop - start))
        return original(self, start, stop)

    monkeypatch.setattr(LazySource, "read", read)
    return seen


@pytest.mark.parametrize("chunk", [1, 4, 11, 50])
def test_jvp_stream_equals_in_memory(tmp_path, stack, reads, chunk):
    code, out = _run(
        "jvp", f"{stack}:/A", f"{stack}:/dA", "-o", tmp_path / "s.h5:/r", "--chunk", chunk
    )
    assert code == 0, out
    code, out = _run("jvp", f"{stack}:/A", f"{stack}:/dA", "-o", tmp_path / "m.npz")
    assert code == 0, out
    streamed, whole = _h5(tmp_path / "s.h5", "/r"), dict(np.load(tmp_path / "m.npz"))
    assert streamed.keys() == whole.keys()
    for k in whole:
        np.testing.assert_allclose(streamed[k], whole[k], rtol=1e-12, atol=1e-12)
    # memory is bounded by the chunk: no read of more than `chunk` matrices at a time
    chunked = [n for arg, n in reads if arg in ("A", "DA")]
    assert chunked and max(chunked) <= chunk


def test_vjp_stream_with_vector_and_broadcast_inputs(tmp_path, stack):
    code, out = _run(
        "vjp",
        f"{stack}:/A",
        "--gS",
        f"{stack}:/gS",
        "--gU",
        f"{stack}:/gU",
        "-o",
        tmp_path / "s.h5",
        "--chunk",
        3,
    )
    assert code == 0, out
    code, out = _run(
        "vjp",
        f"{stack}:/A",
        "--gS",
        f"{stack}:/gS",
        "--gU",
        f"{stack}:/gU",
        "-o",
        tmp_path / "m.npz",
    )
    assert code == 0, out
    streamed, whole = _h5(tmp_path / "s.h5"), dict(np.load(tmp_path / "m.npz"))
    for k in ("gA", "S"):
        np.testing.assert_allclose(streamed[k], whole[k], rtol=1e-12, atol=1e-12)
    # a single tangent matrix broadcast against the stack
    code, out = _run(
        "jvp",
        f"{stack}:/A",
        tmp_path / "dA2.npy",
        "-o",
        tmp_path / "b.h5",
        "--chunk",
        4,
        "--only",
        "dS",
    )
    assert code == 0, out
    assert list(_h5(tmp_path / "b.h5")) == ["dS"]


def test_stream_gauge_error_leaves_no_file(tmp_path, stack):
    code, out = _run(
        "vjp",
        f"{stack}:/A",
        "--gU",
        f"{stack}:/gUc",
        "--complex",
        "-o",
        tmp_path / "g.h5",
        "--chunk",
        4,
    )
    assert code == 1 and "gauge" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dA2.npy", "in.h5"]


def test_stream_interrupt_keeps_existing_output(tmp_path, stack, monkeypatch):
    dest = tmp_path / "old.h5"
    with h5py.File(dest, "w") as f:
        f["keep"] = np.arange(3)
    before = dest.read_bytes()
    calls = {"n": 0}
    original = LazySource.read

    def read(self, start, stop):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return original(self, start, stop)

    monkeypatch.setattr(LazySource, "read", read)
    code, out = _run("jvp", f"{stack}:/A", f"{stack}:/dA", "-o", dest, "--chunk", 2)
    assert code == _common.EXIT_INTERRUPTED
    assert dest.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dA2.npy", "in.h5", "old.h5"]


def test_chunk_needs_an_h5_output(tmp_path, stack):
    code, out = _run("jvp", f"{stack}:/A", f"{stack}:/dA", "-o", tmp_path / "x.npz", "--chunk", 2)
    assert code == 2 and "--chunk" in out
    assert not (tmp_path / "x.npz").exists()


@pytest.mark.parametrize("chunk", [[], ["--chunk", "4"]], ids=["in-memory", "streamed"])
def test_results_can_go_into_the_input_h5(tmp_path, stack, chunk):
    """svdgrad vjp data.h5:/A --gS data.h5:/gS -o data.h5:/grads keeps the inputs intact."""
    with h5py.File(stack, "r") as f:
        A = f["A"][()]
    code, out = _run("vjp", f"{stack}:/A", "--gS", f"{stack}:/gS", "-o", f"{stack}:/grads", *chunk)
    assert code == 0, out
    grads = _h5(stack, "/grads")
    np.testing.assert_array_equal(_h5(stack)["A"], A)
    np.testing.assert_allclose(grads["S"], np.linalg.svd(A, compute_uv=False), rtol=1e-12)
    # but never over an input dataset
    code, out = _run("vjp", f"{stack}:/grads/gA", "--gS", f"{stack}:/gS", "-o", f"{stack}:/grads")
    assert code == 2 and "would overwrite the input dataset" in out
