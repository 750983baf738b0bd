"""svdgrad_cli.io.lazy: sources read piecewise along their first axis."""

from __future__ import annotations

import io

import h5py
import numpy as np
import pytest

from svdgrad_cli.io import InputError, LazySource, array_source, open_source_lazy


def make(shape, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        a = a + 1j * rng.standard_normal(shape)
    return a.astype(dtype)


def npy_bytes(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_every_kind(tmp_path):
    a = make((5, 3, 2))
    np.save(tmp_path / "a.npy", a.astype(np.int16))
    with open_source_lazy(str(tmp_path / "a.npy"), arg="A") as lazy:
        assert isinstance(lazy, LazySource)
        assert lazy.shape == (5, 3, 2) and lazy.dtype == np.float64 and len(lazy) == 5
        np.testing.assert_array_equal(lazy.read(1, 4), a.astype(np.int16)[1:4])
        with pytest.raises(InputError, match=r"rows \[3:9\] out of range \[0:5\]"):
            lazy.read(3, 9)
    with pytest.raises(InputError, match="already closed"):
        lazy.read(0, 1)
    with h5py.File(tmp_path / "b.h5", "w") as f:
        f["m"] = a[0]
        f["s"] = a
    lazy = open_source_lazy(f"{tmp_path}/b.h5:/m", arg="A")
    assert lazy.batch_len == 1
    np.testing.assert_array_equal(lazy.read(0, 1), a[0])
    lazy.close()
    with open_source_lazy(f"{tmp_path}/b.h5:/s", arg="A") as lazy:
        np.testing.assert_array_equal(lazy.read(4, 5), a[4:5])
    np.savez(tmp_path / "c.npz", x=a)
    with open_source_lazy(f"{tmp_path}/c.npz", arg="A") as lazy:
        np.testing.assert_array_equal(lazy.read(0, 2), a[:2])
    lazy = open_source_lazy("-", arg="A", stdin=io.BytesIO(npy_bytes(a)))
    np.testing.assert_array_equal(lazy.read(2, 5), a[2:])


def test_detects_nan_in_a_chunk(tmp_path):
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


@pytest.mark.parametrize("kind", ["npy", "h5", "npz"])
def test_vector_sources_have_a_batch_axis_from_2_d(tmp_path, kind):
    """A vector input (..., k) is cut along its first axis when it has one (ndim > 1)."""
    gS = make((7, 3))
    if kind == "npy":
        np.save(tmp_path / "g.npy", gS)
        spec = f"{tmp_path}/g.npy"
    elif kind == "h5":
        with h5py.File(tmp_path / "g.h5", "w") as f:
            f["g"] = gS
        spec = f"{tmp_path}/g.h5"
    else:
        np.savez(tmp_path / "g.npz", g=gS)
        spec = f"{tmp_path}/g.npz"
    with open_source_lazy(spec, arg="--gS", vector=True) as lazy:
        assert lazy.batch_len == 7
        np.testing.assert_array_equal(lazy.read(2, 5), gS[2:5])
    with open_source_lazy(spec, arg="--gS") as lazy:  # as a matrix: one (7, 3) item
        assert lazy.batch_len == 1
        np.testing.assert_array_equal(lazy.read(0, 1), gS)


def test_array_source():
    a = make((4, 2, 2))
    src = array_source(a, "x.npy", "A")
    assert src.shape == a.shape and src.batch_len == 4 and src.ndim == 3
    np.testing.assert_array_equal(src.read(1, 3), a[1:3])
    v = array_source(make(3), "-", "--gS", vector=True)
    assert v.batch_len == 1
    np.testing.assert_array_equal(v.read(0, 1), make(3))
    rows = array_source(make((5, 3)), "-", "--gS", vector=True)
    np.testing.assert_array_equal(rows.read(1, 2), make((5, 3))[1:2])
    assert "x.npy" in repr(src)


def test_read_failures_name_the_rows():
    def reader(start, stop):
        raise OSError("disk went away")

    src = LazySource("d.h5", "A", (4, 2, 2), np.float64, reader)
    with pytest.raises(InputError, match=r"A: 'd.h5': cannot read rows \[0:2\] \(disk went away\)"):
        src.read(0, 2)
