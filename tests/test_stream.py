"""Streaming stacks into .h5 outputs chunk by chunk (jvp/vjp --chunk)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from svdgrad_cli.cli import _common
from svdgrad_cli.cli.app import app
from svdgrad_cli.io import LazySource


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


# --------------------------------------------------------------------------- _stream.execute


def _values(arrays, device):
    """A compute for execute: singular values by NumPy, with a made-up info per chunk."""
    A = arrays["A"] + arrays.get("B", 0.0)
    return {"S": np.linalg.svd(A, compute_uv=False), "n": np.ones(A.shape[:-2])}, {
        "degenerate_pairs": np.int64(A.shape[0] if A.ndim > 2 else 1),
        "gauge_relative": np.float64(A.ndim),
    }


@pytest.mark.parametrize(
    "dest, chunk, streamed",
    [("m.npz", None, False), ("s.h5:/r", 4, True), ("d.h5", None, True), ("o.npy", None, False)],
)
def test_execute_one_code_path(tmp_path, stack, dest, chunk, streamed):
    """In memory, the inputs are one chunk; streamed, several: the same callbacks either way."""
    from svdgrad_cli.cli import _stream

    calls = {"check": [], "compute": 0, "info": 0, "prepare": 0}

    def check(plan):
        calls["check"].append((tuple(plan.A.shape), tuple(plan.get("B").shape), plan.streamed))
        assert plan.get("C") is None

    def prepare(arrays):
        calls["prepare"] += 1
        return arrays

    def compute(arrays, device):
        calls["compute"] += 1
        assert device is not None
        return _values(arrays, device)

    def on_info(info):
        calls["info"] += 1

    out = _stream.execute(
        {"A": (f"{stack}:/A", False), "B": (f"{tmp_path}/dA2.npy", False), "C": (None, False)},
        compute,
        output=str(tmp_path / dest),
        only="S" if dest.endswith(".npy") else None,
        chunk=chunk,
        device="cpu",
        label="test",
        check=check,
        prepare=prepare,
        on_info=on_info,
    )
    assert out.streamed is streamed and out.shape == (11, 5, 3) and out.dtype == np.float64
    assert calls["check"] == [((11, 5, 3), (5, 3), streamed)]
    chunks = 3 if chunk == 4 else 1
    assert calls["compute"] == calls["prepare"] == calls["info"] == len(out.infos) == chunks
    assert out.info["degenerate_pairs"] == 11 and out.info["gauge_relative"] == 3.0
    with h5py.File(stack, "r") as f:
        want = np.linalg.svd(f["A"][()] + np.load(tmp_path / "dA2.npy"), compute_uv=False)
    if dest.endswith(".npz"):
        got = np.load(tmp_path / dest)["S"]
    elif dest.endswith(".npy"):
        got = np.load(tmp_path / dest)
    else:
        path, _, group = dest.partition(":")
        got = _h5(tmp_path / path, group or "/")["S"]
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("dest, chunk", [("m.npz", None), ("s.h5", 2)])
def test_execute_aborts_before_writing(tmp_path, stack, dest, chunk):
    """A check or an info that raises stops the run: nothing is computed after it, nothing
    written."""
    from svdgrad_cli.cli import _stream

    computed = []

    def compute(arrays, device):
        computed.append(1)
        return _values(arrays, device)

    def bad_shape(plan):
        raise _common.UsageProblem("B: wrong shape")

    kw = dict(output=str(tmp_path / dest), only=None, chunk=chunk, device="cpu", label="t")
    sources = {"A": (f"{stack}:/A", False)}
    with pytest.raises(_common.UsageProblem):
        _stream.execute(sources, compute, check=bad_shape, **kw)
    assert computed == []

    def gauge(info):
        raise _common.ComputeProblem("the cotangents do not determine the gradient")

    with pytest.raises(_common.ComputeProblem):
        _stream.execute(sources, compute, on_info=gauge, **kw)
    assert len(computed) <= 2  # the first chunk, and at most the one read ahead
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dA2.npy", "in.h5"]


def test_execute_refuses_chunk_without_h5(tmp_path, stack):
    from svdgrad_cli.cli import _stream

    with pytest.raises(_common.UsageProblem, match="--chunk: streaming writes into an .h5"):
        _stream.execute(
            {"A": (f"{stack}:/A", False)},
            _values,
            output=str(tmp_path / "x.npz"),
            only=None,
            chunk=2,
            device="cpu",
            label="t",
        )


def test_execute_summary_on_a_terminal(tmp_path, stack, monkeypatch, capsys):
    """Without -o on a terminal, the in-memory chunk's results are summarised, not written."""
    from svdgrad_cli.cli import _stream

    monkeypatch.setattr(_common, "stdout_is_terminal", lambda: True)
    out = _stream.execute(
        {"A": (f"{tmp_path}/dA2.npy", False)},
        _values,
        output=None,
        only=None,
        chunk=None,
        device="cpu",
        label="t",
    )
    assert not out.streamed and out.shape == (5, 3)
    text = capsys.readouterr().out
    assert "results (not saved" in text and "S" in text


def test_execute_falls_back_to_memory_reading_stdin_once(tmp_path, stack, monkeypatch):
    """An .h5 output whose inputs cannot be cut along A's first axis is computed in memory;
    standard input, already read while planning, is not read a second time."""
    import io
    import sys
    import types

    from svdgrad_cli.cli import _stream

    B = np.random.default_rng(5).standard_normal((3, 1, 5, 3))
    buf = io.BytesIO()
    np.save(buf, B)
    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(buffer=io.BytesIO(buf.getvalue())))
    out = _stream.execute(
        {"A": (f"{stack}:/A", False), "B": ("-", False)},
        _values,
        output=str(tmp_path / "o.h5"),
        only="S",
        chunk=4,
        device="cpu",
        label="t",
    )
    assert not out.streamed
    with h5py.File(stack, "r") as f:
        want = np.linalg.svd(f["A"][()] + B, compute_uv=False)
    np.testing.assert_allclose(_h5(tmp_path / "o.h5")["S"], want, rtol=1e-12)


@pytest.mark.parametrize(
    "w, streamed",
    [
        (np.arange(1.0, 12.0), True),  # one value per matrix: cut with A
        (np.float64(2.0), True),  # one value for all: given whole to every chunk
        (np.ones((2, 11)), False),  # more batch dimensions than A: in memory
    ],
    ids=["per-matrix", "scalar", "more-batch"],
)
def test_execute_extra_inputs(tmp_path, stack, w, streamed):
    """Inputs already in memory (as vjp's --gerr number) follow A's chunks when they can."""
    from svdgrad_cli.cli import _stream

    seen = []

    def compute(arrays, device):
        seen.append(np.shape(arrays["w"]))
        A = arrays["A"]
        return {"S": np.linalg.svd(A, compute_uv=False) * arrays["w"][..., None]}, {}

    out = _stream.execute(
        {"A": (f"{stack}:/A", False)},
        compute,
        output=str(tmp_path / "o.h5"),
        only=None,
        chunk=4,
        device="cpu",
        label="t",
        extra={"w": (w, 0)},
    )
    assert out.streamed is streamed
    with h5py.File(stack, "r") as f:
        want = np.linalg.svd(f["A"][()], compute_uv=False) * np.asarray(w)[..., None]
    np.testing.assert_allclose(_h5(tmp_path / "o.h5")["S"], want, rtol=1e-12)
    if w.ndim == 1:
        assert seen == [(4,), (4,), (3,)]
