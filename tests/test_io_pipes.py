"""Exit statuses and Unix manners: which exceptions are a bad call (2), which a failure or a bug
(1), and a closed output pipe ends quietly (141, the SIGPIPE convention, no message)."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from svdgrad_cli.cli import _common as c
from svdgrad_cli.cli.app import app
from svdgrad_cli.errors import ArgumentError
from svdgrad_cli.io import InputError, OutputError


class XlaRuntimeError(RuntimeError):
    """Stands in for jaxlib's runtime error, recognised by name."""


INTERNAL = "; please report it with the command you ran"


@pytest.mark.parametrize(
    "exc, code, message",
    [
        (InputError("A: 'x.npy': file not found"), 2, "error: A: 'x.npy': file not found"),
        (OutputError("output 'o': read-only"), 2, "error: output 'o': read-only"),
        (c.UsageProblem("--rank 9: too big"), 2, "error: --rank 9: too big"),
        (ArgumentError("eps must be >= 0"), 2, "error: eps must be >= 0"),
        (c.ComputeProblem("gauge"), 1, "error: gauge"),
        (ValueError("bad\nshape"), 1, f"error: internal error (ValueError: bad shape){INTERNAL}"),
        (TypeError(), 1, f"error: internal error (TypeError: no details){INTERNAL}"),
        (KeyError("U"), 1, f"error: internal error (KeyError: 'U'){INTERNAL}"),
        (AssertionError("x"), 1, f"error: internal error (AssertionError: x){INTERNAL}"),
        (RuntimeError("x"), 1, f"error: internal error (RuntimeError: x){INTERNAL}"),
        (FloatingPointError("diverged"), 1, "error: the computation failed (FloatingPointError:"),
        (np.linalg.LinAlgError("SVD did not converge"), 1, "error: the computation failed"),
        (XlaRuntimeError("INTERNAL: oops"), 1, "error: the computation failed (XlaRuntimeError"),
        (XlaRuntimeError("RESOURCE_EXHAUSTED: 9 GiB"), 1, "error: out of memory while computing"),
        (MemoryError(), 1, "error: out of memory while computing; use smaller inputs"),
        (OSError(28, "No space left on device"), 1, "error: the system refused an operation"),
        (KeyboardInterrupt(), 130, "interrupted; no output was written"),
        (BrokenPipeError(32, "Broken pipe"), 141, ""),
    ],
)
def test_exit_status(exc, code, message):
    got_code, got_message = c.exit_status(exc)
    assert got_code == code
    assert got_message.startswith(message) and "\n" not in got_message
    assert bool(got_message) == bool(message)


def _save(tmp_path, name, arr):
    np.save(tmp_path / name, arr)
    return str(tmp_path / name)


@pytest.mark.parametrize(
    "exc, code, text",
    [
        (ArgumentError("tangent has shape (2, 2)"), 2, "tangent has shape (2, 2)"),
        (ValueError("unexpected"), 1, "internal error (ValueError: unexpected)" + INTERNAL),
        (TypeError("unexpected"), 1, "internal error (TypeError: unexpected)" + INTERNAL),
        (BrokenPipeError(32, "Broken pipe"), 141, ""),
    ],
)
def test_a_bug_is_not_a_bad_call(tmp_path, monkeypatch, exc, code, text):
    """Only the project's own errors read as a bad call; a ValueError from inside is a bug."""
    import svdgrad_cli.api as api

    def boom(*a, **k):
        raise exc

    monkeypatch.setattr(api, "svd_jvp", boom)
    A = _save(tmp_path, "A.npy", np.eye(3))
    r = CliRunner().invoke(app, ["jvp", A, A, "-o", str(tmp_path / "o.npz")])
    assert r.exit_code == code
    assert r.stderr.strip() == (f"error: {text}" if text else "")
    assert not (tmp_path / "o.npz").exists()


def _svdgrad(*argv, **kw):
    env = dict(os.environ, **kw.pop("env", {}))
    return subprocess.Popen(
        [sys.executable, "-m", "svdgrad_cli", *map(str, argv)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        **kw,
    )


def _finish(p, timeout=240):
    err = p.stderr.read()
    p.stderr.close()
    return p.wait(timeout=timeout), err.decode()


@pytest.mark.parametrize("unbuffered", ["1", ""], ids=["python-u", "buffered"])
def test_results_to_a_pipe_closed_early(tmp_path, unbuffered):
    """`svdgrad jvp A.npy dA.npy | head -c 10`: the results are bigger than the pipe holds and
    the reader goes away after 10 bytes: status 141, nothing on stderr (no message, no
    'Exception ignored')."""
    rng = np.random.default_rng(0)
    A = _save(tmp_path, "A.npy", rng.standard_normal((200, 200)))
    dA = _save(tmp_path, "dA.npy", rng.standard_normal((200, 200)))
    p = _svdgrad("jvp", A, dA, env={"PYTHONUNBUFFERED": unbuffered})
    assert len(p.stdout.read(10)) == 10
    p.stdout.close()
    code, err = _finish(p)
    assert (code, err) == (141, "")


def test_results_to_a_pipe_arrive_whole(tmp_path):
    """Under python -u standard output is a raw stream that may take part of a large write:
    every byte still arrives."""
    rng = np.random.default_rng(1)
    A = rng.standard_normal((150, 120))
    path = _save(tmp_path, "A.npy", A)
    p = _svdgrad("svd", path, env={"PYTHONUNBUFFERED": "1"})
    data = p.stdout.read()
    p.stdout.close()
    code, err = _finish(p)
    assert code == 0, err
    with np.load(io.BytesIO(data)) as z:
        assert sorted(z.files) == ["S", "U", "Vh"]
        U, S, Vh = z["U"], z["S"], z["Vh"]
    np.testing.assert_allclose((U * S) @ Vh, A, atol=1e-12)


def test_report_to_a_closed_pipe(tmp_path):
    """`svdgrad check A.npy | head -1` with the reader gone before anything is written: the
    table (rich) ends quietly too, where rich itself would exit with status 1."""
    A = _save(tmp_path, "A.npy", np.random.default_rng(2).standard_normal((4, 3)))
    p = _svdgrad("check", A)
    p.stdout.close()
    code, err = _finish(p)
    assert (code, err) == (141, "")


def test_head_in_a_shell_pipeline(tmp_path):
    """The shell's view: `set -o pipefail; svdgrad check ... | head -1` gives 141 (as any tool
    killed by SIGPIPE) or 0, never 1, and prints one line and nothing on stderr."""
    A = _save(tmp_path, "A.npy", np.random.default_rng(3).standard_normal((4, 3)))
    script = f"set -o pipefail; '{sys.executable}' -m svdgrad_cli check '{A}' | head -1"
    p = subprocess.run(["bash", "-c", script], capture_output=True, timeout=240)
    assert p.returncode in (0, 141), p.stderr.decode()
    assert len(p.stdout.decode().splitlines()) == 1
    assert p.stderr == b""


@pytest.mark.parametrize("argv", [["--help"], ["vjp", "--help"], ["--version"]])
def test_help_to_a_closed_pipe(argv):
    """`svdgrad --help | head -1`: typer and rich would end with status 1."""
    p = _svdgrad(*argv)
    p.stdout.close()
    code, err = _finish(p)
    assert (code, err) == (141, "")
