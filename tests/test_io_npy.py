"""svdgrad_cli.io.npy (and validate): the .npy format through numpy.lib.format."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from svdgrad_cli.io import InputError, npy, validate


def make(shape, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        a = a + 1j * rng.standard_normal(shape)
    return a.astype(dtype)


def npy_bytes(arr, version=None, **kw):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(arr), version=version, **kw)
    return buf.getvalue()


def load(data: bytes, **kw):
    return npy.load(io.BytesIO(data), len(data), "A: 'x'", **kw)


def raw_header(text: str, version=(1, 0)) -> bytes:
    body = text.encode("latin1")
    length = struct.pack("<H" if version[0] == 1 else "<I", len(body))
    return b"\x93NUMPY" + bytes(version) + length + body


# promotion: what each stored dtype is read as
PROMOTED = {
    "?": np.float64,
    "i1": np.float64,
    "u8": np.float64,
    "i4": np.float64,
    "f2": np.float32,
    "<f4": np.float32,
    ">f8": np.float64,
    "<c8": np.complex64,
    ">c16": np.complex128,
}

SHAPES = hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=4)


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    stored=st.sampled_from(sorted(PROMOTED)),
    shape=SHAPES,
    fortran=st.booleans(),
    version=st.sampled_from([(1, 0), (2, 0), (3, 0)]),
)
def test_round_trip(data, stored, shape, fortran, version):
    """Any array numpy writes (any supported dtype, order, format version) reads back equal,
    in the promoted dtype, native byte order and C or Fortran layout as stored."""
    dtype = np.dtype(stored)
    elements = (
        hnp.from_dtype(dtype, allow_nan=False, allow_infinity=False)
        if dtype.kind in "fc"
        else hnp.from_dtype(dtype)
    )
    a = data.draw(hnp.arrays(dtype, shape, elements=elements))
    if fortran:
        a = np.asfortranarray(a)
    got = load(npy_bytes(a, version=version))
    assert got.dtype == np.dtype(PROMOTED[stored])
    assert got.dtype.isnative and got.flags.writeable
    np.testing.assert_array_equal(got, a.astype(PROMOTED[stored]))


@pytest.mark.parametrize("shape", [(3,), (2, 3)])
def test_vector_inputs(shape):
    a = make(shape)
    np.testing.assert_array_equal(load(npy_bytes(a), vector=True), a)
    if len(shape) == 1:
        with pytest.raises(InputError, match="is 1-D"):
            load(npy_bytes(a))
    with pytest.raises(InputError, match="is empty"):
        load(npy_bytes(np.zeros(0)), vector=True)


def test_write_never_pickles():
    buf = io.BytesIO()
    npy.write(buf, make((2, 2)))
    np.testing.assert_array_equal(np.load(io.BytesIO(buf.getvalue())), make((2, 2)))
    with pytest.raises(ValueError):
        npy.write(io.BytesIO(), np.array([[{}, 1]], dtype=object))


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "is not a .npy file (bad magic bytes)"),
        (b"hello world, not numpy", "is not a .npy file (bad magic bytes)"),
        (b"\x93NUMPY\x01", "bad magic bytes"),
        (b"\x93NUMPY\x04\x00\x10\x00", "unsupported .npy format version 4.0"),
        (npy_bytes(make((2, 2)))[:20], "is truncated (incomplete .npy header)"),
        (b"\x93NUMPY\x01\x00\x08\x00{'a': (\n", "corrupt .npy header"),
        (raw_header("{'descr': '<f8', 'shape': (2, 2)}\n"), "corrupt .npy header"),
        (raw_header("[1, 2]\n"), "corrupt .npy header"),
        (raw_header("{'descr': '<f8', 'fortran_order': False, 'shape': (2, -1)}\n"), "bad shape"),
        (raw_header("{'descr': '<f8', 'fortran_order': False, 'shape': (True, 2)}\n"), "bad shape"),
        (raw_header("{'descr': 'zz9', 'fortran_order': False, 'shape': (2, 2)}\n"), "corrupt"),
        (raw_header("(" * 30_000 + ")" * 30_000 + "\n"), "corrupt .npy header"),
        (npy_bytes(make((10, 10)))[:-40], "truncated or corrupt"),
        (npy_bytes(np.zeros((2, 2), dtype="datetime64[s]")), "datetimes"),
        (npy_bytes(np.array([[{}, 1]], dtype=object), allow_pickle=True), "pickled files"),
    ],
    ids=[
        "empty",
        "garbage",
        "short-magic",
        "version-4",
        "truncated-header",
        "unparsable",
        "missing-key",
        "not-a-dict",
        "negative-dim",
        "bool-dim",
        "bad-descr",
        "deep-nesting",
        "truncated-data",
        "datetime",
        "object",
    ],
)
def test_header_errors(data, message):
    with pytest.raises(InputError) as info:
        load(data)
    assert message in str(info.value)
    assert str(info.value).startswith("A: 'x': ")


def test_an_absurd_header_never_allocates(monkeypatch):
    """A header declaring a huge shape is refused before any allocation, and so is a header
    whose declared length is huge (numpy would first read that many bytes)."""

    def boom(*a, **k):
        raise AssertionError("allocated")

    shape_header = raw_header(
        "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000, 1000000), }\n"
    )
    long_header = b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**31) + b"{"
    monkeypatch.setattr(np, "empty", boom)
    with pytest.raises(InputError, match=r"\(1000000000000, 1000000\).*truncated or corrupt"):
        load(shape_header + b"\0" * 24)
    with pytest.raises(InputError, match="implausibly large"):
        load(long_header)


def test_too_big_for_memory(monkeypatch):
    monkeypatch.setattr(validate, "memory_limit", lambda: 64)
    with pytest.raises(InputError, match="needs 128 bytes but this machine has 64 bytes"):
        load(npy_bytes(make((4, 4))))


def test_read_data_is_bounded(monkeypatch):
    """The data is read in pieces of at most READ_CHUNK bytes (a stream that returns less than
    asked is read until complete)."""
    monkeypatch.setattr(npy, "READ_CHUNK", 24)
    a = make((5, 7))
    sizes = []

    class Trickle(io.BytesIO):
        def readinto(self, b):
            sizes.append(len(b))
            return super().readinto(memoryview(b)[:5])

    data = npy_bytes(a)
    got = npy.load(Trickle(data), len(data), "A")
    np.testing.assert_array_equal(got, a)
    assert max(sizes) <= 24


def test_read_and_open_map(tmp_path):
    a = np.asfortranarray(make((4, 3, 2), np.complex64))
    np.save(tmp_path / "a.npy", a)
    np.testing.assert_array_equal(npy.read(str(tmp_path / "a.npy"), "A"), a)
    hdr, mm = npy.open_map(str(tmp_path / "a.npy"), "A")
    assert hdr.shape == (4, 3, 2) and hdr.fortran and hdr.dtype == np.complex64
    assert hdr.offset + hdr.nbytes == (tmp_path / "a.npy").stat().st_size
    np.testing.assert_array_equal(mm[1:3], a[1:3])
    with pytest.raises(InputError, match="file not found"):
        npy.read(str(tmp_path / "missing.npy"), "A")
