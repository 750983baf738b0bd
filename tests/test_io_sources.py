"""svdgrad_cli.io.sources: one SOURCE to one validated array, every kind and every problem."""

from __future__ import annotations

import io
import pathlib

import h5py
import numpy as np
import pytest

from svdgrad_cli.io import (
    InputError,
    OutputError,
    open_source_lazy,
    read_source,
    read_sources,
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


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_kind(tmp_path, dtype):
    a = make((3, 4, 2), dtype)
    np.save(tmp_path / "a.npy", a)
    np.savez(tmp_path / "a.npz", x=a, y=a[0])
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["/g/x"] = a
    for spec in (f"{tmp_path}/a.npy", f"{tmp_path}/a.npz:x", f"{tmp_path}/a.h5:/g/x"):
        b = read_source(spec, arg="A")
        assert b.dtype == a.dtype
        np.testing.assert_array_equal(a, b)
    b = read_source("-", arg="A", stdin=io.BytesIO(npy_bytes(a)))
    np.testing.assert_array_equal(a, b)


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


def test_read_sources(tmp_path):
    np.save(tmp_path / "A.npy", make((4, 3)))
    np.save(tmp_path / "gS.npy", make(3))
    got = read_sources(
        [("A", f"{tmp_path}/A.npy", False), ("--gU", None, False), ("--gS", "-", True)],
        stdin=io.BytesIO(npy_bytes(make(3))),
    )
    assert list(got) == ["A", "--gS"]
    np.testing.assert_array_equal(got["--gS"], make(3))
    with pytest.raises(InputError, match="A, --gS all use it"):
        read_sources([("A", "-", False), ("--gS", "-", True)])
    with pytest.raises(InputError, match="is 1-D"):
        read_sources([("A", f"{tmp_path}/gS.npy", False)])


def test_unforeseen_failures_are_input_errors(tmp_path, monkeypatch):
    """A reader failing in a way nobody foresaw still names the input (exit 2, not a crash)."""
    from svdgrad_cli.io import h5

    def broken(*a, **k):
        raise RuntimeError("library hiccup")

    monkeypatch.setattr(h5, "read", broken)
    with pytest.raises(InputError, match=r"A: '.*d.h5': cannot read \(library hiccup\)"):
        read_source(f"{tmp_path}/d.h5", arg="A")

    def oom(*a, **k):
        raise MemoryError

    monkeypatch.setattr(h5, "read", oom)
    with pytest.raises(InputError, match="not enough memory"):
        read_source(f"{tmp_path}/d.h5", arg="A")


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
