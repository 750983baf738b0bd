"""The help pages: their form at 80 columns, and the help cache (svdgrad_cli.cli._helpcache),
which must give the very bytes typer writes, and the same exit status."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading

import pytest

from svdgrad_cli.cli import _helpcache

COMMANDS = ["svd", "jvp", "vjp", "check", "bench"]


def svdgrad(*argv, cache, columns="80", no_cache=False, stdin=subprocess.DEVNULL, **kw):
    """Run `svdgrad ARGV` in a fresh process, standard output a pipe; (status, stdout, stderr)."""
    env = dict(os.environ, SVDGRAD_CACHE_DIR=str(cache))
    env.pop("SVDGRAD_NO_CACHE", None)
    env.pop("COLUMNS", None)
    if columns is not None:
        env["COLUMNS"] = columns
    if no_cache:
        env["SVDGRAD_NO_CACHE"] = "1"
    p = subprocess.run(
        [sys.executable, "-m", "svdgrad_cli", *argv],
        stdin=stdin,
        capture_output=True,
        env=env,
        timeout=120,
        **kw,
    )
    return p.returncode, p.stdout, p.stderr


def pages(cache):
    d = cache / "help"
    return sorted(p.name for p in d.iterdir() if p.suffix == ".txt") if d.is_dir() else []


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_page_at_80_columns(tmp_path, command):
    argv = ["--help"] if command is None else [command, "--help"]
    code, out, err = svdgrad(*argv, cache=tmp_path)
    assert code == 0, err.decode()
    text = out.decode()
    for placeholder in ("<bool>", "<str>", "<int", "<float", "<text>", "x>="):
        assert placeholder not in text, placeholder
    assert not re.search(r"\{[A-Z][A-Za-z]*\}", text)
    assert "Example" in text
    assert re.search(r"^\s*\$ svdgrad ", text, re.M)
    wide = [line for line in text.splitlines() if len(line) > 80]
    assert not wide, wide
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    if command in ("svd", "check"):
        assert usage.split() == ["Usage:", "svdgrad", command, "[OPTIONS]", "A"]
    elif command == "jvp":
        assert usage.split() == ["Usage:", "svdgrad", "jvp", "[OPTIONS]", "A", "DA"]

    # stored on the first run; the second is served from the cache, byte for byte
    assert len(pages(tmp_path)) == 1
    assert svdgrad(*argv, cache=tmp_path) == (code, out, err)
    assert svdgrad(*argv, cache=tmp_path, no_cache=True) == (code, out, err)


def test_option_forms():
    """Flags show no placeholder, options their metavar, choices their values."""
    code, out, _ = svdgrad("bench", "--help", cache="/nonexistent", no_cache=True)
    assert code == 0
    lines = {line.split()[1]: line for line in out.decode().splitlines() if "│ --" in line}
    assert lines["--no-torch"].split()[2] == "Leave"
    assert lines["--repeat"].split()[2] == "N"
    assert lines["--device"].split()[2] == "cpu|gpu|auto"
    assert "'all'" in out.decode()  # --cases is not cut off


@pytest.mark.parametrize("argv", [["jvp", "--help"], ["-h"], []])
def test_cache_hit_equals_miss_at_each_width(tmp_path, argv):
    """COLUMNS=80, COLUMNS=120 and a pipe without COLUMNS (80): each its own page, each the
    bytes typer writes (and, with no arguments, its status 2 and newline on stderr)."""
    seen = []
    for columns in ("80", "120", None):
        reference = svdgrad(*argv, cache=tmp_path, columns=columns, no_cache=True)
        assert reference[0] == (2 if not argv else 0)
        before = pages(tmp_path)
        miss = svdgrad(*argv, cache=tmp_path, columns=columns)
        assert miss == reference
        hit = svdgrad(*argv, cache=tmp_path, columns=columns)
        assert hit == reference
        seen.append(reference[1])
        if columns == "120":  # a new key: a new page, not the 80-column one
            assert len(pages(tmp_path)) == len(before) + 1
    assert seen[0] != seen[1]
    assert all(len(line) <= 120 for line in seen[1].decode().splitlines())
    assert any(len(line) > 80 for line in seen[1].decode().splitlines())


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_cache_hit_equals_miss_on_a_terminal(tmp_path):
    """On a terminal rich adds colours: the stored page keeps them."""

    def on_terminal(no_cache):
        master, slave = os.openpty()
        env = dict(os.environ, SVDGRAD_CACHE_DIR=str(tmp_path), COLUMNS="100", TERM="xterm")
        env.pop("NO_COLOR", None)
        env.pop("FORCE_COLOR", None)
        if no_cache:
            env["SVDGRAD_NO_CACHE"] = "1"
        else:
            env.pop("SVDGRAD_NO_CACHE", None)
        chunks = []

        def read():
            while True:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    return
                if not data:
                    return
                chunks.append(data)

        reader = threading.Thread(target=read)
        reader.start()
        p = subprocess.run(
            [sys.executable, "-m", "svdgrad_cli", "vjp", "--help"],
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=subprocess.PIPE,
            env=env,
            timeout=120,
        )
        os.close(slave)
        reader.join(timeout=30)
        os.close(master)
        return p.returncode, b"".join(chunks), p.stderr

    reference = on_terminal(no_cache=True)
    assert reference[0] == 0 and b"\x1b[" in reference[1]
    assert on_terminal(no_cache=False) == reference
    assert len(pages(tmp_path)) == 1
    assert on_terminal(no_cache=False) == reference


def test_no_cache_skips_it(tmp_path):
    reference = svdgrad("--help", cache=tmp_path / "other")
    code, out, err = svdgrad("--no-cache", "--help", cache=tmp_path)
    assert (code, out, err) == reference
    assert svdgrad("--help", cache=tmp_path, no_cache=True) == reference
    assert pages(tmp_path) == []


def test_unwritable_cache_still_prints_help(tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    reference = svdgrad("jvp", "--help", cache=tmp_path / "fine")
    assert svdgrad("jvp", "--help", cache=blocked) == reference
    assert svdgrad("jvp", "--help", cache=blocked / "below") == reference


def test_damaged_page_is_rendered_again(tmp_path):
    reference = svdgrad("svd", "--help", cache=tmp_path)
    (name,) = pages(tmp_path)
    page = tmp_path / "help" / name
    whole = page.read_bytes()
    for damaged in (b"", b"junk", whole[: len(whole) // 2]):
        page.write_bytes(damaged)
        assert svdgrad("svd", "--help", cache=tmp_path) == reference
        assert page.read_bytes() == whole


def test_hit_after_closed_pipe_is_quiet(tmp_path):
    """`svdgrad --help | head -0` served from the cache: status 141, nothing on stderr."""
    svdgrad("--help", cache=tmp_path)
    env = dict(os.environ, SVDGRAD_CACHE_DIR=str(tmp_path), COLUMNS="80")
    env.pop("SVDGRAD_NO_CACHE", None)
    p = subprocess.Popen(
        [sys.executable, "-m", "svdgrad_cli", "--help"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    p.stdout.close()
    err = p.stderr.read()
    assert (p.wait(timeout=120), err) == (141, b"")


def test_a_hit_imports_neither_typer_nor_rich(tmp_path):
    svdgrad("jvp", "--help", cache=tmp_path)  # stores the page
    code = (
        "import sys\n"
        "sys.argv = ['svdgrad', 'jvp', '--help']\n"
        "from svdgrad_cli.cli.app import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    heavy = sorted({'typer', 'rich', 'click', 'pydantic', 'numpy', 'jax'} & set(sys.modules))\n"
        "    sys.stderr.write(f'{exc.code} {heavy}')\n"
    )
    env = dict(os.environ, SVDGRAD_CACHE_DIR=str(tmp_path), COLUMNS="80")
    env.pop("SVDGRAD_NO_CACHE", None)
    p = subprocess.run(
        [sys.executable, "-c", code],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=env,
        timeout=120,
    )
    assert p.stderr.decode() == "0 []"
    assert b"Usage: svdgrad jvp [OPTIONS] A DA" in p.stdout


def test_light_modules_import_nothing_heavy():
    code = (
        "import sys\n"
        "import svdgrad_cli, svdgrad_cli.cli.app, svdgrad_cli.cli._helpcache\n"
        "heavy = {'typer', 'rich', 'click', 'pydantic', 'numpy', 'jax', 'h5py'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert p.stdout.decode().strip() == "[]", p.stderr.decode()


def test_help_requests():
    ask = _helpcache.is_help_request
    assert ask([]) and ask(["--help"]) and ask(["-h"]) and ask(["jvp", "--help"])
    assert ask(["bench", "-h"])
    assert not ask(["--version"])
    assert not ask(["--no-cache", "--help"])
    assert not ask(["jvp", "A.npy", "--help"])
    assert not ask(["jvp", "--help", "--full"])
    assert not ask(["jvp", "svd", "--help"])
    assert not ask(["nope", "--help"])


def test_key_follows_width_environment_and_sources(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    base = _helpcache.key(["--help"])
    assert _helpcache.key(["--help"]) == base
    assert _helpcache.key(["jvp", "--help"]) != base
    monkeypatch.setenv("COLUMNS", "81")
    assert _helpcache.key(["--help"]) != base
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("NO_COLOR", "1")
    assert _helpcache.key(["--help"]) != base
    monkeypatch.delenv("NO_COLOR")
    assert _helpcache.key(["--help"]) == base
    # the command line's sources and the package's __init__.py are in the key
    for name in ("app.py", "jvp.py", "_common.py", "__init__.py"):
        st = os.stat(
            os.path.join(os.path.dirname(_helpcache.__file__), name)
            if name != "__init__.py"
            else os.path.join(os.path.dirname(os.path.dirname(_helpcache.__file__)), name)
        )
        assert f"{name}:{st.st_size}:{st.st_mtime_ns}" in base
    assert "\ntyper\n" in base and "\nrich\n" in base


def test_cache_dir_is_the_clis(monkeypatch, tmp_path):
    from svdgrad_cli.cli import _common

    monkeypatch.setenv("SVDGRAD_CACHE_DIR", str(tmp_path / "x"))
    assert _common.cache_dir() == tmp_path / "x"
    monkeypatch.delenv("SVDGRAD_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert _common.cache_dir() == tmp_path / "svdgrad" / "jax"
    assert _helpcache.cache_dir() == str(tmp_path / "svdgrad" / "jax")
