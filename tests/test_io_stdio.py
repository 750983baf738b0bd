"""svdgrad_cli.io.stdio: standard input and output."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest

from svdgrad_cli.io import InputError, OutputError, stdio


def npy_bytes(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_read_npy_and_single_npz():
    a = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(stdio.read(io.BytesIO(npy_bytes(a)), "A"), a)
    buf = io.BytesIO()
    np.savez(buf, a)
    np.testing.assert_array_equal(stdio.read(io.BytesIO(buf.getvalue()), "A"), a)
    np.testing.assert_array_equal(
        stdio.read(io.BytesIO(npy_bytes(np.ones(3))), "--gS", vector=True), np.ones(3)
    )


class Tty(io.BytesIO):
    def isatty(self):
        return True


@pytest.mark.parametrize(
    "stream, message",
    [
        (io.BytesIO(b""), "standard input is empty"),
        (io.BytesIO(b"1 2 3\n"), "not a .npy stream"),
        (io.StringIO("text"), "text mode"),
        (Tty(npy_bytes(np.eye(2))), "standard input is a terminal"),
        (io.BytesIO(npy_bytes(np.eye(3))[:-8]), "truncated"),
    ],
    ids=["empty", "text", "text-mode", "terminal", "truncated"],
)
def test_read_errors(stream, message):
    with pytest.raises(InputError, match=message):
        stdio.read(stream, "A: '-' (standard input)")


class Raw(io.RawIOBase):
    """A raw stream that takes at most 7 bytes per write, as a pipe under python -u may."""

    def __init__(self):
        self.data = bytearray()
        self.calls = 0

    def writable(self):
        return True

    def write(self, b):
        self.calls += 1
        if self.calls % 3 == 0:
            return None  # full for a moment
        chunk = bytes(memoryview(b)[:7])
        self.data += chunk
        return len(chunk)


def test_partial_writes_are_completed():
    """A write that takes part of the bytes is continued: nothing is dropped."""
    raw = Raw()
    arrays = {"S": np.arange(10.0), "U": np.eye(3)}
    stdio.write_arrays(raw, arrays, None, "output '-'")
    with np.load(io.BytesIO(bytes(raw.data))) as z:
        np.testing.assert_array_equal(z["U"], np.eye(3))
    raw = Raw()
    stdio.write_arrays(raw, arrays, "S", "output '-'")
    np.testing.assert_array_equal(np.load(io.BytesIO(bytes(raw.data))), np.arange(10.0))


class Failing(io.RawIOBase):
    def __init__(self, exc):
        self.exc = exc

    def writable(self):
        return True

    def write(self, b):
        raise self.exc


def test_write_errors():
    arrays = {"S": np.ones(2)}
    with pytest.raises(BrokenPipeError):  # passed on unchanged: the CLI ends quietly
        stdio.write_arrays(Failing(BrokenPipeError(32, "Broken pipe")), arrays, None, "out")
    with pytest.raises(OutputError, match="out: cannot write to standard output"):
        stdio.write_arrays(Failing(OSError(28, "No space left on device")), arrays, None, "out")
    with pytest.raises(OutputError, match="text mode"):
        stdio.write_arrays(io.StringIO(), arrays, None, "out")
    with pytest.raises(BrokenPipeError):
        stdio.write_text("x", "--json '-'", Failing(BrokenPipeError(32, "Broken pipe")))
    text = io.StringIO()
    stdio.write_text("{}\n", "--json '-'", text)
    assert text.getvalue() == "{}\n"


def test_silence_stdout_after_a_closed_pipe():
    """After silence_stdout, what is still buffered goes nowhere: no 'Exception ignored' at
    exit, and the process ends with its own status."""
    code = (
        "import sys, time\n"
        "from svdgrad_cli.io import silence_stdout\n"
        "time.sleep(0.5)\n"
        "try:\n"
        "    sys.stdout.write('x' * 200000)\n"
        "    sys.stdout.flush()\n"
        "except BrokenPipeError:\n"
        "    silence_stdout()\n"
        "    sys.stdout.write('more')\n"
        "    sys.exit(3)\n"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    p.stdout.close()
    err = p.stderr.read()
    p.stderr.close()
    assert p.wait(timeout=60) == 3
    assert err == b""
