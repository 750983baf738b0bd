"""svdgrad_cli.io.h5stream: results written into an .h5 destination chunk by chunk."""

from __future__ import annotations

import pathlib

import h5py
import numpy as np
import pytest

from svdgrad_cli.io import H5StreamWriter, InputError, OutputError, write_results


def make(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def leftovers(directory: pathlib.Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


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
        with pytest.raises(InputError, match=r"expected \(k, 3, 2\)"):
            w.write("U", 0, a[:, 0])
        with h5py.File(dest, "r") as f:  # the destination is unchanged until the end
            assert f["res/S"].shape == (3,)
    with h5py.File(dest, "r") as f:
        np.testing.assert_array_equal(f["res/U"][()], a)
        np.testing.assert_array_equal(f["res/S"][()], a[:, 0])
        np.testing.assert_array_equal(f["other"][()], np.ones(2))
        assert f["res/U"].chunks is not None
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


def test_stream_writer_refusals(tmp_path):
    for dest in (str(tmp_path / "x.npz"), "-"):
        with pytest.raises(OutputError, match="needs an .h5"):
            H5StreamWriter(dest, {"S": ((4, 2), np.float64)})
    with pytest.raises(InputError, match="no outputs"):
        H5StreamWriter(str(tmp_path / "x.h5"), {})
    with pytest.raises(InputError, match="unsupported dtype"):
        H5StreamWriter(str(tmp_path / "x.h5"), {"S": ((2,), object)})
    w = H5StreamWriter(str(tmp_path / "x.h5"), {"S": ((2,), np.float64)})
    with pytest.raises(InputError, match="not open"):
        w.write("S", 0, np.ones(2))
    # an input dataset is never overwritten
    with h5py.File(tmp_path / "in.h5", "w") as f:
        f["S"] = np.ones(2)
    with pytest.raises(OutputError, match="would overwrite the input dataset"):
        H5StreamWriter(
            str(tmp_path / "in.h5"), {"S": ((2,), np.float64)}, inputs=[f"{tmp_path}/in.h5:/S"]
        ).__enter__()
    assert leftovers(tmp_path) == []
