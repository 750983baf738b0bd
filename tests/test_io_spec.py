"""svdgrad_cli.io.spec: the SOURCE / DEST / container grammar."""

from __future__ import annotations

import pathlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from svdgrad_cli.io import InputError, OutputError, spec
from svdgrad_cli.io.spec import (
    DEST_FORMS,
    SOURCE_FORMS,
    Spec,
    check_single_stdin,
    is_h5_dest,
    parse_container,
    parse_dest,
    parse_source,
    source_paths,
    split_spec,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a.npy", Spec("npy", "a.npy")),
        ("d/a.NPY", Spec("npy", "d/a.NPY")),
        ("a.npz", Spec("npz", "a.npz")),
        ("a.npz:x", Spec("npz", "a.npz", "x")),
        ("d.h5", Spec("h5", "d.h5")),
        ("d.h5:/g/x", Spec("h5", "d.h5", "/g/x")),
        ("d.hdf5:g/x", Spec("h5", "d.hdf5", "g/x")),
        ("d.h5:", Spec("h5", "d.h5")),
        ("-", Spec("std")),
    ],
)
def test_parse_source(text, expected):
    assert parse_source(text, "A") == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("", f"A: empty input spec; use {SOURCE_FORMS}"),
        ("a.csv", f"A: 'a.csv': unrecognised input form; use {SOURCE_FORMS}"),
        (".npy", "unrecognised input form"),
        ("a.npy:x", "A: 'a.npy:x': a .npy file holds a single array; drop ':x' from the spec"),
    ],
)
def test_parse_source_errors(text, message):
    with pytest.raises(InputError) as info:
        parse_source(text, "A")
    assert message in str(info.value)
    assert not isinstance(info.value, OutputError)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("o.npz", Spec("npz", "o.npz")),
        ("o.npy", Spec("npy", "o.npy")),
        ("o.h5", Spec("h5", "o.h5")),
        ("o.h5:/a/b/", Spec("h5", "o.h5", "/a/b")),
        ("o.hdf5:a", Spec("h5", "o.hdf5", "/a")),
        ("o.h5:/", Spec("h5", "o.h5", "/")),
        ("-", Spec("std")),
    ],
)
def test_parse_dest(text, expected):
    assert parse_dest(text) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("", f"output: empty destination; use {DEST_FORMS}"),
        ("o.csv", f"output 'o.csv': unrecognised destination form; use {DEST_FORMS}"),
        ("o.npz:/g", "only .h5/.hdf5 destinations take a ':/GROUP' suffix; drop ':/g'"),
        ("o.npy:x", "drop ':x'"),
    ],
)
def test_parse_dest_errors(text, message):
    with pytest.raises(OutputError) as info:
        parse_dest(text)
    assert message in str(info.value)


def test_an_existing_file_decides_an_ambiguous_split(tmp_path):
    odd = tmp_path / "x.npz:y.npz"  # a file name that holds the separator
    odd.write_bytes(b"")
    assert split_spec(str(odd)) == (str(odd), ".npz", None)
    assert split_spec(f"{odd}:A") == (str(odd), ".npz", "A")
    # without that file, the first extension followed by ':' splits
    assert split_spec(f"{tmp_path}/z.npz:y.npz:A") == (f"{tmp_path}/z.npz", ".npz", "y.npz:A")
    # 'a.npz:x.npy' is the member x.npy of a.npz when a.npz exists, else a .npy file
    assert split_spec(f"{tmp_path}/a.npz:x.npy")[1] == ".npy"
    (tmp_path / "a.npz").write_bytes(b"")
    assert split_spec(f"{tmp_path}/a.npz:x.npy") == (f"{tmp_path}/a.npz", ".npz", "x.npy")
    real = tmp_path / "d.h5"
    real.write_bytes(b"")
    assert split_spec(f"{real}:/g.npz:x") == (str(real), ".h5", "/g.npz:x")


NAMES = st.text(alphabet="abcxyz_-0189/", min_size=1, max_size=12).filter(
    lambda s: not s.startswith("/") and "." not in s
)
INNER = st.text(alphabet="abcxyz_/0189.", min_size=1, max_size=12).filter(
    lambda s: not any(e + ":" in s.lower() for e in spec.ALL_EXTS)
)


@given(name=NAMES, ext=st.sampled_from(spec.ALL_EXTS), inner=st.none() | INNER)
def test_split_round_trip(name, ext, inner):
    """PATH.ext[:INNER] splits back into its parts (no file of that name exists)."""
    text = name + ext + ("" if inner is None else ":" + inner)
    assert split_spec(text) == (name + ext, ext, inner)
    assert source_paths(text) == pathlib.Path(name + ext)
    if ext in spec.H5_EXTS:
        assert is_h5_dest(text)
        assert parse_dest(text).path == name + ext


def test_source_paths_and_single_stdin():
    assert source_paths("-") is None
    assert source_paths(None) is None
    assert source_paths("") is None
    assert source_paths("x/a.npz:name") == pathlib.Path("x/a.npz")
    assert source_paths("d.h5:/g/x") == pathlib.Path("d.h5")
    assert source_paths("d.HDF5") == pathlib.Path("d.HDF5")
    assert source_paths("a.csv") == pathlib.Path("a.csv")
    check_single_stdin(["-", "a.npy", None])
    with pytest.raises(InputError, match="only one"):
        check_single_stdin(["-", None, "-"])
    with pytest.raises(InputError, match="A, --dA"):
        check_single_stdin(["-", "-"], names=["A", "--dA"])


@pytest.mark.parametrize(
    "dest, h5",
    [
        (None, False),
        ("-", False),
        ("", False),
        ("o.h5", True),
        ("o.HDF5", True),
        ("o.h5:/g", True),
        ("o.npz", False),
        ("o.npz:/g", False),
        ("o.h5.npz", False),
        ("o.npy", False),
        ("o.csv", False),
    ],
)
def test_is_h5_dest(dest, h5):
    assert is_h5_dest(dest) is h5


def test_parse_container():
    assert parse_container("f.npz", "--factors", "U, S, Vh") == Spec("npz", "f.npz")
    assert parse_container("f.h5", "--factors", "U") == Spec("h5", "f.h5", "/")
    assert parse_container("f.h5:svd/", "--factors", "U") == Spec("h5", "f.h5", "/svd")
    for bad in ("-", "f.npy", "f.txt", ""):
        with pytest.raises(InputError, match="needs a .npz file or PATH.h5"):
            parse_container(bad, "--factors", "U, S, Vh")
    with pytest.raises(InputError, match="give the .npz file alone"):
        parse_container("f.npz:U", "--factors", "U, S, Vh")
