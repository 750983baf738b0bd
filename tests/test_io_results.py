"""svdgrad_cli.io.results: finished results to a DEST (files, groups, standard output)."""

from __future__ import annotations

import io
import os
import pathlib
import tempfile
import zipfile

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from svdgrad_cli.io import (
    InputError,
    OutputError,
    describe,
    h5,
    npy,
    open_source_lazy,
    read_source,
    write_results,
)

DTYPES = [np.float32, np.float64, np.complex64, np.complex128]


def make(shape, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        a = a + 1j * rng.standard_normal(shape)
    return a.astype(dtype)


def leftovers(directory: pathlib.Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("dtype", DTYPES)
def test_npy_round_trip(tmp_path, dtype):
    a = make((3, 4, 2), dtype)
    write_results(str(tmp_path / "a.npy"), {"A": a, "B": a}, only="A")
    b = read_source(str(tmp_path / "a.npy"), arg="A")
    assert b.dtype == a.dtype
    np.testing.assert_array_equal(a, b)


def test_npz_with_and_without_name(tmp_path):
    a, b = make((2, 3)), make((4, 3, 3), np.complex64, 1)
    write_results(str(tmp_path / "one.npz"), {"only": a})
    np.testing.assert_array_equal(read_source(str(tmp_path / "one.npz"), arg="A"), a)
    write_results(str(tmp_path / "two.npz"), {"a": a, "b": b})
    np.testing.assert_array_equal(read_source(f"{tmp_path}/two.npz:a", arg="A"), a)
    np.testing.assert_array_equal(read_source(f"{tmp_path}/two.npz:b", arg="A"), b)
    # members written by numpy itself are read too, with or without the .npy suffix
    np.savez(tmp_path / "np.npz", x=a, y=b[0])
    np.testing.assert_array_equal(read_source(f"{tmp_path}/np.npz:x.npy", arg="A"), a)
    np.savez_compressed(tmp_path / "c.npz", b)
    np.testing.assert_array_equal(read_source(f"{tmp_path}/c.npz", arg="A"), b)


def test_npz_output_name_file_is_fine(tmp_path):
    # "file" clashes with np.savez's own parameter; our writer must not care
    write_results(str(tmp_path / "r.npz"), {"file": make((2, 2))})
    assert read_source(f"{tmp_path}/r.npz:file", arg="A").shape == (2, 2)


def test_h5_destination_root_group_and_update(tmp_path):
    path = tmp_path / "out.h5"
    with h5py.File(path, "w") as f:
        f["keep"] = np.arange(3.0)
        f.create_group("res")["S"] = np.zeros(7)
    s, u = make((3, 2)), make((3, 3), seed=2)
    write_results(f"{path}:/res", {"S": s, "U": u})
    write_results(str(path), {"top": u})
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["keep"][()], np.arange(3.0))
        np.testing.assert_array_equal(f["res/S"][()], s)
        np.testing.assert_array_equal(f["res/U"][()], u)
        np.testing.assert_array_equal(f["top"][()], u)
    np.testing.assert_array_equal(read_source(f"{path}:/res/S", arg="A"), s)
    write_results(f"{tmp_path}/new.h5:/a/b", {"S": s}, only="S")
    np.testing.assert_array_equal(read_source(f"{tmp_path}/new.h5", arg="A"), s)


def test_stdin_and_stdout(tmp_path):
    a = make((2, 3, 4), np.complex128)
    out = io.BytesIO()
    write_results("-", {"A": a, "B": a.real}, only="A", stdout=out)
    b = read_source("-", arg="A", stdin=io.BytesIO(out.getvalue()))
    np.testing.assert_array_equal(a, b)
    out = io.BytesIO()
    write_results("-", {"A": a, "B": a.real}, stdout=out)
    with np.load(io.BytesIO(out.getvalue())) as z:
        assert sorted(z.files) == ["A", "B"]
        np.testing.assert_array_equal(z["B"], a.real)
    # a single-array .npz stream is accepted on stdin as well
    out = io.BytesIO()
    write_results("-", {"A": a}, stdout=out)
    np.testing.assert_array_equal(read_source("-", arg="A", stdin=io.BytesIO(out.getvalue())), a)


SHAPES = st.lists(st.integers(1, 3), min_size=0, max_size=2).flatmap(
    lambda batch: st.tuples(st.integers(1, 4), st.integers(1, 4)).map(lambda mn: (*batch, *mn))
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    shape=SHAPES,
    dtype=st.sampled_from(DTYPES),
    kind=st.sampled_from(["npy", "npz", "h5", "stdio"]),
    seed=st.integers(0, 2**16),
)
def test_round_trip_property(tmp_path, shape, dtype, kind, seed):
    a = make(shape, dtype, seed)
    results = {"X": a, "Y": make((2, 2), seed=seed + 1)}
    if kind == "stdio":
        out = io.BytesIO()
        write_results("-", results, only="X", stdout=out)
        b = read_source("-", arg="A", stdin=io.BytesIO(out.getvalue()))
    else:
        dest = str(tmp_path / f"p.{kind}")
        if kind == "h5":
            dest += ":/grp"
        write_results(dest, results, only="X" if kind == "npy" else None)
        src = str(tmp_path / f"p.{kind}") + {"npy": "", "npz": ":X", "h5": ":/grp/X"}[kind]
        b = read_source(src, arg="A")
        with open_source_lazy(src, arg="A") as lazy:
            assert lazy.shape == a.shape and lazy.dtype == a.dtype
            parts = [lazy.read(i, min(i + 2, lazy.batch_len)) for i in range(0, lazy.batch_len, 2)]
        lazy_full = np.concatenate(parts) if a.ndim > 2 else parts[0]
        np.testing.assert_array_equal(lazy_full, a)
    assert b.dtype == a.dtype and b.shape == a.shape
    np.testing.assert_array_equal(a, b)
    assert leftovers(tmp_path) == []


def test_describe():
    rows = describe({"S": np.array([[3.0, 4.0]]), "I": np.eye(2, dtype=np.int32)})
    assert rows[0] == ("S", (1, 2), np.dtype(np.float64), 5.0)
    assert rows[1][0] == "I" and rows[1][1] == (2, 2) and rows[1][3] == pytest.approx(2**0.5)


# --------------------------------------------------------------------------- destination errors

RES = {"S": np.ones((2, 2)), "U": np.eye(2)}


def _readonly(tmp_path, monkeypatch, what):
    """Make ``what`` read-only; as root chmod does not bite, so simulate via os.access."""
    target = tmp_path / what
    target.chmod(0o555 if target.is_dir() else 0o444)
    if os.geteuid() == 0:
        real_access = os.access

        def access(path, mode, *a, **k):
            if pathlib.Path(path).resolve() == target.resolve() and mode & os.W_OK:
                return False
            return real_access(path, mode, *a, **k)

        monkeypatch.setattr(os, "access", access)


def test_dest_read_only_dir(tmp_path, monkeypatch):
    (tmp_path / "ro").mkdir()
    _readonly(tmp_path, monkeypatch, "ro")
    try:
        with pytest.raises(OutputError, match="not writable"):
            write_results(str(tmp_path / "ro" / "out.npz"), RES)
    finally:
        (tmp_path / "ro").chmod(0o755)
    assert list((tmp_path / "ro").iterdir()) == []


def test_dest_read_only_file(tmp_path, monkeypatch):
    write_results(str(tmp_path / "out.npz"), RES)
    before = (tmp_path / "out.npz").read_bytes()
    _readonly(tmp_path, monkeypatch, "out.npz")
    with pytest.raises(OutputError, match="read-only"):
        write_results(str(tmp_path / "out.npz"), {"S": np.zeros((3, 3))})
    assert (tmp_path / "out.npz").read_bytes() == before


def test_dest_mkstemp_permission_error(tmp_path, monkeypatch):
    def deny(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", deny)
    with pytest.raises(OutputError, match="not writable"):
        write_results(str(tmp_path / "out.npz"), RES)


DEST_ERRORS = [
    ("dir-missing", lambda d: (str(d / "nodir" / "o.npz"), {}), "does not exist; create it"),
    (
        "same-as-input-npy",
        lambda d: (str(d / "in.npy"), {"only": "S", "inputs": [str(d / "in.npy")]}),
        "same file as the input",
    ),
    (
        "same-as-input-h5-dataset",
        lambda d: (f"{d}/in.h5", {"only": "S", "inputs": ["-", f"{d}/./in.h5:/S"]}),
        "would overwrite the input dataset",
    ),
    (
        "same-as-input-h5-unnamed",
        lambda d: (f"{d}/in.h5:/out", {"inputs": [f"{d}/in.h5"]}),
        "choose another output file",
    ),
    (
        "same-as-input-symlink",
        lambda d: (str(d / "link.npz"), {"inputs": [f"{d}/in.npz:S"]}),
        "same file as the input",
    ),
    ("npy-without-only", lambda d: (str(d / "o.npy"), {}), "add --only NAME (one of: S, U)"),
    (
        "unknown-only",
        lambda d: (str(d / "o.npz"), {"only": "V"}),
        "--only: unknown output 'V'; choose one of: S, U",
    ),
    (
        "unknown-only-stdout",
        lambda d: ("-", {"only": "V", "stdout": io.BytesIO()}),
        "unknown output 'V'",
    ),
    ("unknown-form", lambda d: (str(d / "o.csv"), {}), "unrecognised destination form"),
    ("npz-with-group", lambda d: (str(d / "o.npz") + ":/g", {}), "only .h5/.hdf5"),
    ("dest-is-dir", lambda d: (str(d / "sub.npz"), {}), "is a directory"),
    ("h5-not-hdf5", lambda d: (str(d / "text.h5"), {}), "not an HDF5 file"),
    ("h5-group-is-dataset", lambda d: (f"{d}/in.h5:/A", {}), "not a group"),
]


@pytest.mark.parametrize(
    "setup, expected", [r[1:] for r in DEST_ERRORS], ids=[r[0] for r in DEST_ERRORS]
)
def test_destination_errors(tmp_path, setup, expected):
    np.save(tmp_path / "in.npy", make((2, 2)))
    np.savez(tmp_path / "in.npz", S=make((2, 2)))
    (tmp_path / "link.npz").symlink_to(tmp_path / "in.npz")
    with h5py.File(tmp_path / "in.h5", "w") as f:
        f["A"] = make((2, 2))
    (tmp_path / "sub.npz").mkdir()
    (tmp_path / "text.h5").write_text("not hdf5")
    snapshot = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    dest, kw = setup(tmp_path)
    with pytest.raises(InputError) as info:
        write_results(dest, RES, **kw)
    msg = str(info.value)
    assert expected in msg and "\n" not in msg
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == snapshot
    assert leftovers(tmp_path) == []


def test_updating_an_input_h5_under_another_group(tmp_path):
    """`svdgrad vjp data.h5:/A --gS data.h5:/gS -o data.h5:/grads` adds datasets beside the
    inputs: allowed, since the inputs are neither replaced nor changed."""
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f["A"] = make((2, 2))
    write_results(f"{path}:/grads", RES, inputs=[f"{path}:/A"])
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["A"][()], make((2, 2)))
        np.testing.assert_array_equal(f["grads/U"][()], RES["U"])
    assert leftovers(tmp_path) == []


def test_destination_error_classes(tmp_path):
    with pytest.raises(OutputError):
        write_results(str(tmp_path / "x" / "o.npz"), RES)
    np.save(tmp_path / "in.npy", make((2, 2)))
    with pytest.raises(OutputError):
        write_results(str(tmp_path / "in.npy"), RES, only="S", inputs=[str(tmp_path / "in.npy")])
    with pytest.raises(OutputError):
        write_results(str(tmp_path / "o.npy"), RES)


@pytest.mark.parametrize("kind", ["npz", "npy", "h5"])
def test_interrupted_write_keeps_old_file(tmp_path, monkeypatch, kind):
    dest = tmp_path / f"out.{kind}"
    only = "S" if kind == "npy" else None
    write_results(str(dest), RES, only=only)
    before = dest.read_bytes()

    calls = {"n": 0}
    real_npy_write, real_h5_put = npy.write, h5.put

    def npy_write(f, arr):
        real_npy_write(f, arr[:1])  # some bytes land in the temporary file first
        raise KeyboardInterrupt

    def h5_put(group, name, arr):
        calls["n"] += 1
        real_h5_put(group, name, arr)
        if calls["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(npy, "write", npy_write)
    monkeypatch.setattr(h5, "put", h5_put)
    new = {"S": np.full((5, 5), 7.0), "U": np.zeros((4, 4)), "V": np.ones((3, 3))}
    with pytest.raises(KeyboardInterrupt):
        write_results(str(dest), new, only=only)
    assert dest.read_bytes() == before
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [dest.name]


def test_broken_stdout():
    """A closed pipe is passed on as BrokenPipeError (the command line ends quietly on it);
    any other failure of standard output is an OutputError."""

    class Broken(io.RawIOBase):
        def __init__(self, exc):
            self.exc = exc

        def writable(self):
            return True

        def write(self, b):
            raise self.exc

    with pytest.raises(BrokenPipeError):
        write_results("-", RES, stdout=Broken(BrokenPipeError(32, "Broken pipe")))
    with pytest.raises(OutputError, match="cannot write to standard output"):
        write_results("-", RES, stdout=Broken(OSError(5, "Input/output error")))


def test_messages_are_single_line():
    assert str(InputError("a\nb   c")) == "a b c"
    assert str(OutputError("x\n")) == "x"


def test_zip_member_names(tmp_path):
    write_results(str(tmp_path / "r.npz"), RES)
    with zipfile.ZipFile(tmp_path / "r.npz") as zf:
        assert sorted(zf.namelist()) == ["S.npy", "U.npy"]
