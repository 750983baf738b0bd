"""Tests for svdgrad_cli.arrays: reading sources, writing destinations, errors."""

from __future__ import annotations

import io
import os
import pathlib
import subprocess
import sys
import zipfile

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from svdgrad_cli import arrays
from svdgrad_cli.arrays import (
    H5StreamWriter,
    InputError,
    LazySource,
    OutputError,
    check_single_stdin,
    describe,
    open_source_lazy,
    read_source,
    source_paths,
    write_results,
)

DTYPES = [np.float32, np.float64, np.complex64, np.complex128]


def make(shape, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        a = a + 1j * rng.standard_normal(shape)
    return a.astype(dtype)


def npy_bytes(arr, **kw):
    buf = io.BytesIO()
    np.save(buf, arr, **kw)
    return buf.getvalue()


def leftovers(directory: pathlib.Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# --------------------------------------------------------------------------- sources


def test_import_is_light():
    code = (
        "import sys, svdgrad_cli.arrays; "
        "bad = [m for m in ('jax', 'typer', 'rich', 'h5py') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


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


def test_h5_paths(tmp_path):
    a, g = make((5, 3)), make((2, 5, 3), seed=1)
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f["A"] = a
        f.create_group("grads")["gA"] = g
    np.testing.assert_array_equal(read_source(f"{path}:/A", arg="A"), a)
    np.testing.assert_array_equal(read_source(f"{path}:A", arg="A"), a)
    np.testing.assert_array_equal(read_source(f"{path}:/grads/gA", arg="--gA"), g)
    single = tmp_path / "s.hdf5"
    with h5py.File(single, "w") as f:
        f.create_group("deep/er")["x"] = g
    np.testing.assert_array_equal(read_source(str(single), arg="A"), g)


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


@pytest.mark.parametrize(
    "dtype, expected",
    [
        (np.bool_, np.float64),
        (np.int8, np.float64),
        (np.uint64, np.float64),
        (np.int32, np.float64),
        (np.float16, np.float32),
        (">f8", np.float64),
        (">c8", np.complex64),
    ],
)
def test_promotion(tmp_path, dtype, expected):
    a = (np.arange(6).reshape(2, 3) % 2).astype(dtype)
    np.save(tmp_path / "a.npy", a)
    b = read_source(str(tmp_path / "a.npy"), arg="A")
    assert b.dtype == np.dtype(expected)
    np.testing.assert_array_equal(b, a.astype(expected))


def test_fortran_order(tmp_path):
    a = np.asfortranarray(make((4, 3)))
    np.save(tmp_path / "f.npy", a)
    np.testing.assert_array_equal(read_source(str(tmp_path / "f.npy"), arg="A"), a)


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


def test_lazy_sources(tmp_path):
    a = make((5, 3, 2))
    np.save(tmp_path / "a.npy", a.astype(np.int16))
    with open_source_lazy(str(tmp_path / "a.npy"), arg="A") as lazy:
        assert isinstance(lazy, LazySource)
        assert lazy.shape == (5, 3, 2) and lazy.dtype == np.float64 and len(lazy) == 5
        np.testing.assert_array_equal(lazy.read(1, 4), a.astype(np.int16)[1:4])
        with pytest.raises(InputError, match="out of range"):
            lazy.read(3, 9)
    with h5py.File(tmp_path / "b.h5", "w") as f:
        f["m"] = a[0]
    lazy = open_source_lazy(f"{tmp_path}/b.h5", arg="A")
    np.testing.assert_array_equal(lazy.read(0, 1), a[0])
    lazy.close()
    lazy = open_source_lazy("-", arg="A", stdin=io.BytesIO(npy_bytes(a)))
    np.testing.assert_array_equal(lazy.read(2, 5), a[2:])


def test_lazy_detects_nan_in_chunk(tmp_path):
    a = make((6, 2, 2))
    a[4, 1, 0] = np.nan
    with h5py.File(tmp_path / "n.h5", "w") as f:
        f["x"] = a
    np.save(tmp_path / "n.npy", a)
    for spec in (f"{tmp_path}/n.h5", f"{tmp_path}/n.npy"):
        with open_source_lazy(spec, arg="A") as lazy:
            lazy.read(0, 4)  # clean rows read fine
            with pytest.raises(InputError, match=r"rows \[3:6\] contains 1 NaN"):
                lazy.read(3, 6)


def test_source_paths_and_single_stdin(tmp_path):
    assert source_paths("-") is None
    assert source_paths(None) is None
    assert source_paths("x/a.npz:name") == pathlib.Path("x/a.npz")
    assert source_paths("d.h5:/g/x") == pathlib.Path("d.h5")
    assert source_paths("d.HDF5") == pathlib.Path("d.HDF5")
    check_single_stdin(["-", "a.npy", None])
    with pytest.raises(InputError, match="only one"):
        check_single_stdin(["-", None, "-"])
    with pytest.raises(InputError, match="A, --dA"):
        check_single_stdin(["-", "-"], names=["A", "--dA"])


def test_describe():
    rows = describe({"S": np.array([[3.0, 4.0]]), "I": np.eye(2, dtype=np.int32)})
    assert rows[0] == ("S", (1, 2), np.dtype(np.float64), 5.0)
    assert rows[1][0] == "I" and rows[1][1] == (2, 2) and rows[1][3] == pytest.approx(2**0.5)


def test_stream_writer(tmp_path):
    dest = tmp_path / "big.h5"
    with h5py.File(dest, "w") as f:
        f["other"] = np.ones(2)
        f["res/S"] = np.zeros(3)
    a = make((6, 3, 2))
    specs = {"S": ((6, 2), np.float64), "U": ((6, 3, 2), np.float64)}
    with H5StreamWriter(f"{dest}:/res", specs) as w:
        for i in range(0, 6, 4):
            w.write("U", i, a[i : i + 4])
            w.write("S", i, a[i : i + 4, 0])
        with pytest.raises(InputError, match="outside"):
            w.write("S", 5, a[:4, 0])
        with pytest.raises(InputError, match="unknown output"):
            w.write("V", 0, a)
    with h5py.File(dest, "r") as f:
        np.testing.assert_array_equal(f["res/U"][()], a)
        np.testing.assert_array_equal(f["res/S"][()], a[:, 0])
        np.testing.assert_array_equal(f["other"][()], np.ones(2))
    assert leftovers(tmp_path) == []


def test_stream_writer_interrupted(tmp_path):
    dest = tmp_path / "big.h5"
    write_results(str(dest), {"S": np.ones((2, 2))})
    before = dest.read_bytes()
    with pytest.raises(KeyboardInterrupt):
        with H5StreamWriter(str(dest), {"S": ((4, 2), np.float64)}) as w:
            w.write("S", 0, np.zeros((2, 2)))
            raise KeyboardInterrupt
    assert dest.read_bytes() == before
    assert leftovers(tmp_path) == []
    with pytest.raises(OutputError, match="needs an .h5"):
        H5StreamWriter(str(tmp_path / "x.npz"), {"S": ((4, 2), np.float64)})


def test_file_mode_kept_and_umask(tmp_path):
    dest = tmp_path / "r.npz"
    write_results(str(dest), {"S": np.ones((2, 2))})
    mask = os.umask(0)
    os.umask(mask)
    assert dest.stat().st_mode & 0o777 == 0o666 & ~mask
    os.chmod(dest, 0o640)
    write_results(str(dest), {"S": np.zeros((2, 2))})
    assert dest.stat().st_mode & 0o777 == 0o640


# --------------------------------------------------------------------------- errors


def _save(name, arr, **kw):
    def setup(d: pathlib.Path) -> str:
        np.save(d / name, arr, **kw)
        return str(d / name)

    return setup


def _raw(name, data: bytes, suffix=""):
    def setup(d: pathlib.Path) -> str:
        (d / name).write_bytes(data)
        return str(d / name) + suffix

    return setup


def _h5(name, build, suffix=""):
    def setup(d: pathlib.Path) -> str:
        with h5py.File(d / name, "w") as f:
            build(f)
        return str(d / name) + suffix

    return setup


def _npz(name, suffix="", **arrs):
    def setup(d: pathlib.Path) -> str:
        np.savez(d / name, **arrs)
        return str(d / name) + suffix

    return setup


def _absurd_header() -> bytes:
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000, 1000000), }"
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + b"\0" * 24


def _truncated_npy() -> bytes:
    return npy_bytes(make((10, 10)))[:-40]


def _stdin(data: bytes):
    def setup(d: pathlib.Path):
        return "-", io.BytesIO(data)

    return setup


with_nan = make((3, 3))
with_nan[0, 1] = np.nan
with_nan[2, 2] = np.nan
with_inf = make((2, 3, 3))
with_inf[1, 0, 0] = -np.inf

SOURCE_ERRORS = [
    ("nan", _save("n.npy", with_nan), "contains 2 NaN"),
    ("inf", _save("i.npy", with_inf), "contains 1 Inf"),
    ("nan-h5", _h5("n.h5", lambda f: f.create_dataset("x", data=with_nan)), "2 NaN"),
    ("empty-0xn", _save("e.npy", np.zeros((0, 3))), "m=0, n=3"),
    ("empty-mx0", _save("e.npy", np.zeros((3, 0))), "m=3, n=0"),
    ("empty-batch", _save("e.npy", np.zeros((0, 3, 3))), "empty batch"),
    ("1-D", _save("v.npy", np.ones(4)), "is 1-D"),
    ("0-D", _save("s.npy", np.float64(1.0)), "scalar (0-D)"),
    ("1-D-h5", _h5("v.h5", lambda f: f.create_dataset("v", data=np.ones(3))), "is 1-D"),
    ("string", _save("s.npy", np.array([["a", "b"]])), "strings"),
    (
        "object",
        _save("o.npy", np.array([[{}, 1]], dtype=object), allow_pickle=True),
        "pickled files are refused",
    ),
    ("object-npz", _npz("o.npz", x=np.array([[None]], dtype=object)), "pickled files are refused"),
    (
        "structured",
        _save("r.npy", np.zeros((2, 2), dtype=[("a", "f8"), ("b", "i4")])),
        "structured dtype",
    ),
    ("datetime", _save("t.npy", np.zeros((2, 2), dtype="datetime64[s]")), "datetimes"),
    ("longdouble", _save("l.npy", np.zeros((2, 2), dtype=np.longdouble)), "not supported"),
    (
        "h5-strings",
        _h5("s.h5", lambda f: f.create_dataset("s", data=np.array([[b"a"]]))),
        "byte strings",
    ),
    ("truncated-npy", _raw("t.npy", _truncated_npy()), "truncated"),
    ("truncated-header", _raw("t.npy", npy_bytes(make((2, 2)))[:20]), "truncated"),
    ("garbage-npy", _raw("g.npy", b"hello world, not numpy"), "is not a .npy file"),
    ("bad-header", _raw("b.npy", b"\x93NUMPY\x01\x00\x08\x00{'a': (\n"), "corrupt .npy header"),
    (
        "corrupt-npz",
        _raw("c.npz", b"PK\x03\x04 definitely not a zip archive" * 3),
        "not a readable .npz",
    ),
    ("corrupt-h5", _raw("c.h5", b"\x89HDF\r\n\x1a\n" + b"\x00" * 100), "cannot read as HDF5"),
    ("not-h5", _raw("c.h5", b"plain text"), "cannot read as HDF5"),
    ("absurd-shape", _raw("big.npy", _absurd_header()), "(1000000000000, 1000000)"),
    ("missing-file", lambda d: str(d / "nope.npy"), "file not found"),
    ("missing-dir", lambda d: str(d / "no" / "nope.npz:x"), "does not exist either"),
    ("directory", lambda d: (d / "dir.npy").mkdir() or str(d / "dir.npy"), "is a directory"),
    ("unknown-ext", _raw("a.csv", b"1,2\n3,4\n"), "unrecognised input form"),
    (
        "npy-with-name",
        _save(
            "a.npy",
            make((2, 2)),
        ),
        "ok-placeholder",
    ),
    ("npz-needs-name", _npz("m.npz", a=make((2, 2)), b=make((2, 2))), "holds 2 arrays; name one"),
    ("npz-missing-name", _npz("m.npz", ":c", a=make((2, 2)), b=make((2, 2))), "no array 'c' in"),
    ("npz-empty", _npz("z.npz"), "holds no arrays"),
    (
        "h5-missing",
        _h5("d.h5", lambda f: f.create_dataset("A", data=make((2, 2))), ":/gS"),
        "no dataset '/gS' in",
    ),
    (
        "h5-group",
        _h5("d.h5", lambda f: f.create_group("g").create_dataset("x", data=make((2, 2))), ":/g"),
        "is a group, not a dataset (its datasets: /g/x)",
    ),
    (
        "h5-several",
        _h5(
            "d.h5",
            lambda f: (
                f.create_dataset("a", data=make((2, 2))),
                f.create_dataset("b", data=make((2, 2))),
            ),
        ),
        "holds 2 datasets",
    ),
    ("h5-none", _h5("d.h5", lambda f: f.create_group("g")), "holds no datasets"),
    ("empty-stdin", _stdin(b""), "standard input is empty"),
    ("non-npy-stdin", _stdin(b"1 2 3\n4 5 6\n"), "not a .npy stream"),
    ("truncated-stdin", _stdin(_truncated_npy()), "truncated"),
    ("stdin-npz-several", _stdin(b""), "ok-placeholder"),
]
# replace placeholders with setups that need more than one line
SOURCE_ERRORS[[r[0] for r in SOURCE_ERRORS].index("npy-with-name")] = (
    "npy-with-name",
    lambda d: _save("a.npy", make((2, 2)))(d) + ":x",
    "drop ':x'",
)


def _stdin_npz_several(d):
    buf = io.BytesIO()
    np.savez(buf, a=make((2, 2)), b=make((2, 2)))
    return "-", io.BytesIO(buf.getvalue())


SOURCE_ERRORS[-1] = ("stdin-npz-several", _stdin_npz_several, ".npz stream with 2 arrays")


@pytest.mark.parametrize(
    "setup, expected", [r[1:] for r in SOURCE_ERRORS], ids=[r[0] for r in SOURCE_ERRORS]
)
def test_source_errors(tmp_path, setup, expected):
    made = setup(tmp_path)
    spec, stdin = made if isinstance(made, tuple) else (made, None)
    with pytest.raises(InputError) as info:
        read_source(spec, arg="--gS", stdin=stdin)
    msg = str(info.value)
    assert expected in msg
    assert "\n" not in msg
    assert msg.startswith("--gS: ")
    assert not isinstance(info.value, OutputError)
    if stdin is None:  # the lazy reader reports the same problems (NaN only when read)
        with pytest.raises(InputError):
            with open_source_lazy(spec, arg="--gS") as lazy:
                lazy.read(0, lazy.batch_len)


def test_h5_missing_message_exact(tmp_path, monkeypatch):
    with h5py.File(tmp_path / "data.h5", "w") as f:
        f["A"] = make((2, 2))
        f["grads/gA"] = make((2, 2))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as info:
        read_source("data.h5:/gS", arg="--gS")
    assert str(info.value) == (
        "--gS: 'data.h5:/gS': no dataset '/gS' in data.h5 (datasets: /A, /grads/gA)"
    )


def test_absurd_shape_does_not_allocate(tmp_path, monkeypatch):
    (tmp_path / "big.npy").write_bytes(_absurd_header())

    def boom(*a, **k):
        raise AssertionError("allocated")

    monkeypatch.setattr(arrays.np, "empty", boom)
    with pytest.raises(InputError, match="truncated or corrupt"):
        read_source(str(tmp_path / "big.npy"), arg="A")


def test_too_big_for_memory(tmp_path, monkeypatch):
    np.save(tmp_path / "a.npy", make((4, 4)))
    monkeypatch.setattr(arrays, "_memory_limit", lambda: 64)
    with pytest.raises(InputError, match="of memory"):
        read_source(str(tmp_path / "a.npy"), arg="A")


def test_corrupt_npz_member(tmp_path):
    np.savez(tmp_path / "c.npz", x=make((20, 20)))
    data = bytearray((tmp_path / "c.npz").read_bytes())
    data[400:420] = b"\xff" * 20  # damage the array bytes: CRC mismatch
    (tmp_path / "c.npz").write_bytes(bytes(data))
    with pytest.raises(InputError, match="corrupt"):
        read_source(str(tmp_path / "c.npz"), arg="A")
    (tmp_path / "t.npz").write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(InputError, match="not a readable .npz"):
        read_source(str(tmp_path / "t.npz"), arg="A")


def test_unreadable_file(tmp_path, monkeypatch):
    p = tmp_path / "a.npy"
    np.save(p, make((2, 2)))
    real_open = open

    def deny(path, *a, **k):
        if pathlib.Path(path) == p:
            raise PermissionError(13, "Permission denied")
        return real_open(path, *a, **k)

    monkeypatch.setattr("builtins.open", deny)
    with pytest.raises(InputError, match="permission denied"):
        read_source(str(p), arg="A")


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

        monkeypatch.setattr(arrays.os, "access", access)


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

    monkeypatch.setattr(arrays.tempfile, "mkstemp", deny)
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
    real_npy_write, real_h5_put = arrays._npy_write, arrays._h5_put

    def npy_write(f, arr):
        real_npy_write(f, arr[:1])  # some bytes land in the temporary file first
        raise KeyboardInterrupt

    def h5_put(group, name, arr):
        calls["n"] += 1
        real_h5_put(group, name, arr)
        if calls["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(arrays, "_npy_write", npy_write)
    monkeypatch.setattr(arrays, "_h5_put", h5_put)
    new = {"S": np.full((5, 5), 7.0), "U": np.zeros((4, 4)), "V": np.ones((3, 3))}
    with pytest.raises(KeyboardInterrupt):
        write_results(str(dest), new, only=only)
    assert dest.read_bytes() == before
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [dest.name]


def test_broken_stdout():
    class Broken(io.RawIOBase):
        def writable(self):
            return True

        def write(self, b):
            raise BrokenPipeError(32, "Broken pipe")

    with pytest.raises(OutputError, match="cannot write to standard output"):
        write_results("-", RES, stdout=Broken())


def test_messages_are_single_line():
    assert str(InputError("a\nb   c")) == "a b c"
    assert str(OutputError("x\n")) == "x"


def test_zip_member_names(tmp_path):
    write_results(str(tmp_path / "r.npz"), RES)
    with zipfile.ZipFile(tmp_path / "r.npz") as zf:
        assert sorted(zf.namelist()) == ["S.npy", "U.npy"]
