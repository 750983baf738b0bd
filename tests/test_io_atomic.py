"""svdgrad_cli.io.atomic: the one atomic writer (results, streamed results, --json)."""

from __future__ import annotations

import io
import json
import os
import pathlib
import tempfile

import pytest

from svdgrad_cli.io import AtomicTarget, OutputError, check_destination, open_atomic, write_text


def leftovers(directory: pathlib.Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_commit_and_discard(tmp_path):
    dest = tmp_path / "r.txt"
    dest.write_text("old")
    with AtomicTarget(dest, "output") as t:
        pathlib.Path(t.tmp).write_text("new")
        assert dest.read_text() == "old"  # not yet
    assert dest.read_text() == "new"
    with pytest.raises(KeyboardInterrupt):
        with AtomicTarget(dest, "output") as t:
            pathlib.Path(t.tmp).write_text("half")
            raise KeyboardInterrupt
    assert dest.read_text() == "new"
    assert leftovers(tmp_path) == []


def test_file_mode_kept_and_umask(tmp_path):
    dest = tmp_path / "r.txt"
    write_text(str(dest), "a")
    mask = os.umask(0)
    os.umask(mask)
    assert dest.stat().st_mode & 0o777 == 0o666 & ~mask
    os.chmod(dest, 0o640)
    write_text(str(dest), "b")
    assert dest.stat().st_mode & 0o777 == 0o640 and dest.read_text() == "b"


def test_mkstemp_permission_error(tmp_path, monkeypatch):
    def deny(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", deny)
    with pytest.raises(OutputError, match="not writable"):
        AtomicTarget(tmp_path / "x", "output 'x'")


def test_commit_failure_leaves_nothing(tmp_path, monkeypatch):
    def fail(src, dst):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OutputError, match="cannot write"):
        write_text(str(tmp_path / "r.json"), "{}")
    assert list(tmp_path.iterdir()) == []


def test_write_text(tmp_path, monkeypatch):
    report = {"passed": True, "cases": [1, 2]}
    write_text(str(tmp_path / "r.json"), json.dumps(report))
    assert json.loads((tmp_path / "r.json").read_text()) == report
    out = io.StringIO()
    write_text("-", "text\n", stdout=out)
    assert out.getvalue() == "text\n"
    with pytest.raises(OutputError) as info:
        write_text(str(tmp_path / "nodir" / "r.json"), "{}")
    assert str(info.value) == (
        f"--json '{tmp_path}/nodir/r.json': directory '{tmp_path}/nodir' does not exist; create "
        "it or choose another path"
    )
    (tmp_path / "x").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputError, match="--report 'x': 'x' is a directory; give a file name"):
        write_text("x", "{}", option="--report")
    assert leftovers(tmp_path) == []


def test_interrupted_text_write_keeps_the_old_file(tmp_path):
    dest = tmp_path / "r.json"
    dest.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with open_atomic(str(dest), "--json", "w") as f:
            f.write("new, half")
            raise KeyboardInterrupt
    assert dest.read_text() == "old"
    assert leftovers(tmp_path) == []


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


def test_check_destination(tmp_path, monkeypatch):
    (tmp_path / "in.npy").write_bytes(b"")
    (tmp_path / "in.h5").write_bytes(b"")
    assert check_destination(str(tmp_path / "o.npz"), "o") == tmp_path / "o.npz"
    with pytest.raises(OutputError, match="same file as the input"):
        check_destination(str(tmp_path / "in.npy"), "o", [f"{tmp_path}/./in.npy"])
    # an .h5 input may receive new datasets, never over an input dataset
    check_destination(str(tmp_path / "in.h5"), "o", [f"{tmp_path}/in.h5:/A"], ["/g/S"])
    with pytest.raises(OutputError, match="would overwrite the input dataset"):
        check_destination(str(tmp_path / "in.h5"), "o", [f"{tmp_path}/in.h5:A"], ["A"])
    with pytest.raises(OutputError, match="choose another output file"):
        check_destination(str(tmp_path / "in.h5"), "o", [f"{tmp_path}/in.h5"], ["/g/S"])
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(OutputError, match="is not a directory"):
        check_destination(str(tmp_path / "file" / "o.npz"), "o")
    (tmp_path / "ro").mkdir()
    _readonly(tmp_path, monkeypatch, "ro")
    try:
        with pytest.raises(OutputError, match="is not writable"):
            check_destination(str(tmp_path / "ro" / "o.npz"), "o")
    finally:
        (tmp_path / "ro").chmod(0o755)
