"""svdgrad_cli.io.h5 and io.containers: HDF5 datasets and groups, arrays found by name."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from svdgrad_cli.io import InputError, OutputError, h5, named_sources


def make(shape, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        a = a + 1j * rng.standard_normal(shape)
    return a.astype(dtype)


def test_paths(tmp_path):
    a, g = make((5, 3)), make((2, 5, 3), seed=1)
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f["A"] = a
        f.create_group("grads")["gA"] = g
    np.testing.assert_array_equal(h5.read(str(path), "/A", "A"), a)
    np.testing.assert_array_equal(h5.read(str(path), "A", "A"), a)
    np.testing.assert_array_equal(h5.read(str(path), "/grads/gA", "A"), g)
    with h5py.File(path, "r") as f:
        assert h5.datasets(f) == ["/A", "/grads/gA"]
        assert h5.datasets(f["grads"]) == ["/grads/gA"]
    single = tmp_path / "s.hdf5"
    with h5py.File(single, "w") as f:
        f.create_group("deep/er")["x"] = g
    np.testing.assert_array_equal(h5.read(str(single), None, "A"), g)


@pytest.mark.parametrize(
    "build, inner, message",
    [
        (lambda f: f.create_dataset("A", data=make((2, 2))), "/gS", "no dataset '/gS' in"),
        (
            lambda f: f.create_group("g").create_dataset("x", data=make((2, 2))),
            "/g",
            "its datasets: /g/x",
        ),
        (
            lambda f: (
                f.create_dataset("a", data=make((2, 2))),
                f.create_dataset("b", data=make((2, 2))),
            ),
            None,
            "holds 2 datasets",
        ),
        (lambda f: f.create_group("g"), None, "holds no datasets"),
        (lambda f: f.create_dataset("s", data=np.array([[b"a"]])), None, "byte strings"),
        (lambda f: f.create_dataset("v", data=np.ones(3)), None, "is 1-D"),
        (lambda f: f.create_dataset("e", shape=None, dtype="f8"), None, "empty dataspace"),
    ],
    ids=["missing", "group", "several", "none", "strings", "1-D", "null-dataspace"],
)
def test_read_errors(tmp_path, build, inner, message):
    with h5py.File(tmp_path / "d.h5", "w") as f:
        build(f)
    with pytest.raises(InputError, match=message):
        h5.read(str(tmp_path / "d.h5"), inner, "A")


@pytest.mark.parametrize("data", [b"\x89HDF\r\n\x1a\n" + b"\x00" * 100, b"plain text"])
def test_not_hdf5(tmp_path, data):
    (tmp_path / "c.h5").write_bytes(data)
    with pytest.raises(InputError, match="cannot read as HDF5"):
        h5.read(str(tmp_path / "c.h5"), None, "A")


def test_writing_updates_a_copy(tmp_path):
    dest = tmp_path / "o.h5"
    with h5py.File(dest, "w") as f:
        f["keep"] = np.arange(3.0)
        f["res"] = np.zeros(2)  # a dataset where a group is wanted
    tmp = str(tmp_path / "t.h5")
    f = h5.open_update(dest, tmp, "output")
    try:
        with pytest.raises(
            OutputError, match="'/res' already exists in the file and is not a group"
        ):
            h5.require_group(f, "/res", "output")
        grp = h5.require_group(f, "/new/sub", "output")
        h5.put(grp, "S", np.ones(2))
        h5.put(grp, "S", np.full(3, 2.0))  # replaced
        assert h5.require_group(f, "/", "output") is f
    finally:
        f.close()
    with h5py.File(tmp, "r") as g:
        np.testing.assert_array_equal(g["keep"][()], np.arange(3.0))
        np.testing.assert_array_equal(g["new/sub/S"][()], np.full(3, 2.0))
    with h5py.File(dest, "r") as g:  # the destination itself is unchanged
        assert "new" not in g
    (tmp_path / "x.h5").write_text("not hdf5")
    with pytest.raises(OutputError, match="not an HDF5 file"):
        h5.open_update(tmp_path / "x.h5", str(tmp_path / "t2.h5"), "output")


def test_row_chunks():
    assert h5.row_chunks((), np.float64) is None
    assert h5.row_chunks((0, 3), np.float64) is None
    assert h5.row_chunks((10, 4, 4), np.float64) == (10, 4, 4)
    rows = h5.row_chunks((10_000, 100, 100), np.float64)
    assert rows == (13, 100, 100)  # about 1 MiB of whole rows


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    shape=st.lists(st.integers(1, 3), min_size=2, max_size=4).map(tuple),
    dtype=st.sampled_from([np.float32, np.float64, np.complex64, np.complex128]),
    group=st.sampled_from(["/", "/g", "/a/b"]),
    seed=st.integers(0, 2**16),
)
def test_round_trip(tmp_path, shape, dtype, group, seed):
    a = make(shape, dtype, seed)
    path = tmp_path / "r.h5"
    with h5py.File(path, "w") as f:
        h5.put(h5.require_group(f, group, "output"), "X", a)
    b = h5.read(str(path), f"{group.rstrip('/')}/X", "A")
    assert b.dtype == a.dtype
    np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- containers


def test_named_sources(tmp_path):
    np.savez(tmp_path / "f.npz", U=np.eye(2), S=np.ones(2))
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f["/svd/U"] = np.eye(2)
        f["/svd/Vh"] = np.eye(2)
        f["/svd/S/deeper"] = np.ones(2)  # a group named S holds no dataset S
        f["top"] = np.ones(2)
    names = ("U", "S", "Vh")
    assert named_sources(f"{tmp_path}/f.npz", "--factors", names, "U, S, Vh") == {
        "U": f"{tmp_path}/f.npz:U",
        "S": f"{tmp_path}/f.npz:S",
    }
    assert named_sources(f"{tmp_path}/f.h5:/svd/", "--factors", names, "U, S, Vh") == {
        "U": f"{tmp_path}/f.h5:/svd/U",
        "Vh": f"{tmp_path}/f.h5:/svd/Vh",
    }
    assert named_sources(f"{tmp_path}/f.h5", "--against", ("top",), "top") == {
        "top": f"{tmp_path}/f.h5:/top"
    }
    for spec, message in [
        (f"{tmp_path}/nope.npz", "--factors '.*nope.npz': file not found"),
        (f"{tmp_path}/f.h5:/nope", "'/nope' is not a group in .*; name the group that holds U"),
        (f"{tmp_path}/f.h5:/top", "'/top' is not a group"),
        (f"{tmp_path}/f.npy", "needs a .npz file or PATH.h5"),
    ]:
        with pytest.raises(InputError, match=message):
            named_sources(spec, "--factors", names, "U, S, Vh")
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 broken" * 3)
    with pytest.raises(InputError, match="not a readable .npz"):
        named_sources(f"{tmp_path}/bad.npz", "--factors", names, "U, S, Vh")
