"""svdgrad_cli.io.npz: .npz archives of .npy members."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from svdgrad_cli.io import InputError, npz


def make(shape, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        a = a + 1j * rng.standard_normal(shape)
    return a.astype(dtype)


def test_with_and_without_name(tmp_path):
    a, b = make((2, 3)), make((4, 3, 3), np.complex64, 1)
    np.savez(tmp_path / "one.npz", only=a)
    np.testing.assert_array_equal(npz.read(str(tmp_path / "one.npz"), None, "A"), a)
    np.savez(tmp_path / "two.npz", a=a, b=b)
    np.testing.assert_array_equal(npz.read(str(tmp_path / "two.npz"), "b", "A"), b)
    # members written by numpy itself are read with or without the .npy suffix
    np.testing.assert_array_equal(npz.read(str(tmp_path / "two.npz"), "a.npy", "A"), a)
    np.savez_compressed(tmp_path / "c.npz", b)
    np.testing.assert_array_equal(npz.read(str(tmp_path / "c.npz"), None, "A"), b)
    assert npz.names(str(tmp_path / "two.npz"), "A") == ["a", "b"]


@pytest.mark.parametrize(
    "build, name, message",
    [
        (lambda p: np.savez(p, a=make((2, 2)), b=make((2, 2))), None, "holds 2 arrays; name one"),
        (lambda p: np.savez(p, a=make((2, 2))), "c", "no array 'c' in"),
        (lambda p: np.savez(p), None, "holds no arrays"),
        (lambda p: open(p, "wb").write(b"PK\x03\x04 not a zip" * 3), None, "not a readable .npz"),
        (lambda p: np.savez(p, x=np.array([[None]], dtype=object)), None, "pickled files"),
    ],
    ids=["needs-name", "missing-name", "empty", "corrupt", "object"],
)
def test_errors(tmp_path, build, name, message):
    path = tmp_path / "z.npz"
    build(path)
    with pytest.raises(InputError, match=message):
        npz.read(str(path), name, "A")


def test_corrupt_member(tmp_path):
    np.savez(tmp_path / "c.npz", x=make((20, 20)))
    data = bytearray((tmp_path / "c.npz").read_bytes())
    data[400:420] = b"\xff" * 20  # damage the array bytes: CRC mismatch
    (tmp_path / "c.npz").write_bytes(bytes(data))
    with pytest.raises(InputError, match="cannot read member 'x.npy'.*corrupt"):
        npz.read(str(tmp_path / "c.npz"), None, "A")
    (tmp_path / "t.npz").write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(InputError, match="not a readable .npz"):
        npz.read(str(tmp_path / "t.npz"), None, "A")


def test_read_single_from_a_stream():
    buf = io.BytesIO()
    np.savez(buf, a=make((2, 2)))
    np.testing.assert_array_equal(npz.read_single(buf.getvalue(), "A"), make((2, 2)))
    buf = io.BytesIO()
    np.savez(buf, a=make((2, 2)), b=make((2, 2)))
    with pytest.raises(InputError, match=".npz stream with 2 arrays"):
        npz.read_single(buf.getvalue(), "A")
    with pytest.raises(InputError, match="neither a .npy nor a readable .npz"):
        npz.read_single(b"PK not zip", "A")


def test_written_members_are_stored_uncompressed():
    buf = io.BytesIO()
    npz.write(buf, {"S": np.ones((2, 2)), "file": np.eye(2)})  # 'file' clashes with np.savez
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
        assert sorted(zf.namelist()) == ["S.npy", "file.npy"]
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}
    with np.load(io.BytesIO(buf.getvalue())) as z:
        np.testing.assert_array_equal(z["file"], np.eye(2))


ARRAYS = st.dictionaries(
    st.text(alphabet="abcdefgUSVh_", min_size=1, max_size=6),
    st.tuples(
        st.lists(st.integers(1, 3), min_size=2, max_size=3),
        st.sampled_from([np.float32, np.float64, np.complex64, np.complex128]),
        st.integers(0, 2**16),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=40, deadline=None)
@given(spec=ARRAYS)
def test_round_trip(spec):
    """What npz.write writes, npz reads back by name: same arrays, dtypes and shapes."""
    arrays = {name: make(tuple(shape), dtype, seed) for name, (shape, dtype, seed) in spec.items()}
    buf = io.BytesIO()
    npz.write(buf, arrays)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
        found = npz.members(zf)
        assert sorted(found) == sorted(arrays)
        for name, a in arrays.items():
            b = npz.read_member(zf, found[name], f"A: '{name}'")
            assert b.dtype == a.dtype
            np.testing.assert_array_equal(a, b)
