"""Rendered help pages kept on disk, so that ``svdgrad --help`` starts as fast as Python does.

Building the Typer application and rendering its help with rich costs about a third of a second
(typer prepares every parameter, rich loads its Markdown support); the pages themselves change
only with svdgrad's sources, the libraries and the terminal. ``main()`` asks this module first:
a help request (``-h``/``--help`` after at most one command name, or no arguments at all) whose
page was rendered before under the same key is written out again as it was, byte for byte,
with its exit status, and neither typer nor rich is imported. Otherwise the application runs as
usual while :meth:`HelpPage.recording` notes what it writes, and the page is stored for the next
time.

The key holds everything the page depends on: svdgrad's version, the size and modification
time of the command line's sources and of typer's and rich's, the Python version, the words
after ``svdgrad``, the width rich would use (COLUMNS, else the first standard stream that is a
terminal, else 80), whether standard output and error are terminals and their encodings, and
the environment variables rich and typer read (NO_COLOR, FORCE_COLOR, TERM, ...). The pages
live in ``<cache directory>/help``, one file each; ``--no-cache`` or SVDGRAD_NO_CACHE=1 skip
them, and any trouble with them (an unwritable directory, a damaged file) only means that typer
renders the page itself.

This module imports nothing beyond the standard library's basics: it runs before anything else.
"""

import os
import sys

from .._pipes import silence_stdout

#: the commands whose ``--help`` is kept (their names are the only words allowed before it)
COMMANDS = ("svd", "jvp", "vjp", "check", "bench")
HELP_WORDS = ("-h", "--help")

#: environment variables that change what typer and rich print
_ENVIRON = (
    "COLUMNS",
    "TERMINAL_WIDTH",
    "NO_COLOR",
    "FORCE_COLOR",
    "PY_COLORS",
    "GITHUB_ACTIONS",
    "TERM",
    "COLORTERM",
    "TTY_COMPATIBLE",
    "TTY_INTERACTIVE",
    "JUPYTER_COLUMNS",
    "DATABRICKS_RUNTIME_VERSION",
    "TYPER_USE_RICH",
    "_TYPER_FORCE_DISABLE_TERMINAL",
    "LANGUAGE",
    "LC_ALL",
    "LC_MESSAGES",
    "LANG",
)

_MAGIC = "svdgrad help page 1\n"
_KEEP = 200  # pages kept; the oldest beyond that are removed when a new one is stored


def cache_dir() -> str:
    """The command line's cache directory: SVDGRAD_CACHE_DIR, else
    $XDG_CACHE_HOME/svdgrad/jax, else ~/.cache/svdgrad/jax (JAX's compilation cache lives
    there, the help pages in its ``help`` subdirectory)."""
    explicit = os.environ.get("SVDGRAD_CACHE_DIR")
    if explicit:
        return os.path.expanduser(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "svdgrad", "jax")


def disabled() -> bool:
    """SVDGRAD_NO_CACHE set to anything but '' or '0'."""
    return os.environ.get("SVDGRAD_NO_CACHE", "") not in ("", "0")


def is_help_request(words: list[str]) -> bool:
    """No arguments, or ``[COMMAND] -h|--help`` (nothing after it)."""
    if not words:
        return True
    *head, last = words
    return last in HELP_WORDS and len(head) <= 1 and all(w in COMMANDS for w in head)


def _width() -> int:
    """The width rich gives a console of its own choosing (rich.console.Console.size)."""
    width = 0
    for fd in (0, 1, 2):
        try:
            width = os.get_terminal_size(fd).columns
        except (AttributeError, ValueError, OSError):
            continue
        break
    columns = os.environ.get("COLUMNS")
    if columns is not None and columns.isdigit():
        width = int(columns)
    return width or 80


def _stream(stream) -> str:
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError, OSError):
        tty = False
    return f"{bool(tty)}:{getattr(stream, 'encoding', None)}:{getattr(stream, 'errors', None)}"


def _stats(directory: str, names=None) -> list[str]:
    out = []
    try:
        names = sorted(os.listdir(directory)) if names is None else names
    except OSError:
        return [f"{directory}:?"]
    for name in names:
        if not name.endswith(".py"):
            continue
        try:
            st = os.stat(os.path.join(directory, name))
        except OSError:
            out.append(f"{name}:-")
            continue
        out.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
    return out


def _library(name: str, files: tuple[str, ...]) -> list[str]:
    """Size and modification time of a few of an installed library's files (they change when
    it is upgraded), found without importing it."""
    from importlib.machinery import PathFinder

    spec = PathFinder.find_spec(name)
    if spec is None or not spec.origin:
        return [f"{name}:-"]
    return [name, *_stats(os.path.dirname(spec.origin), files)]


def key(words: list[str]) -> str:
    """Everything the rendered page for ``svdgrad WORDS`` depends on, as one string."""
    from .. import __version__

    here = os.path.dirname(os.path.abspath(__file__))
    parts = [
        f"svdgrad {__version__}",
        sys.version,
        sys.platform,
        repr(list(words)),
        f"width {_width()}",
        "stdout " + _stream(sys.stdout),
        "stderr " + _stream(sys.stderr),
        *(f"{name}={os.environ.get(name)!r}" for name in _ENVIRON),
        *_stats(here),
        *_stats(os.path.dirname(here), ["__init__.py"]),
        *_library("typer", ("__init__.py", "core.py", "main.py", "rich_utils.py")),
        *_library("rich", ("__init__.py", "console.py", "text.py", "table.py")),
    ]
    return "\n".join(p.replace("\n", " ") for p in parts)


def _file_name(text: str) -> str:
    import zlib

    data = text.encode("utf-8", "surrogatepass")
    return f"{zlib.crc32(data):08x}{zlib.adler32(data):08x}.txt"


class HelpPage:
    """The stored page for one help request: ``replay()`` it when it is there, else run the
    application inside ``recording()`` and ``store()`` what it wrote."""

    def __init__(self, words: list[str]) -> None:
        self.key = key(words)
        self.directory = os.path.join(cache_dir(), "help")
        self.path = os.path.join(self.directory, _file_name(self.key))
        self.no_args = not words
        self.status: int | None = None
        self.chunks: list[tuple[str, str]] | None = None
        self._recorded: list[tuple[str, str]] = []

    # ------------------------------------------------------------------ reading

    def load(self) -> bool:
        """Read the stored page; False when there is none, or it is not whole, or its key
        differs."""
        try:
            with open(self.path, encoding="utf-8", errors="surrogatepass", newline="") as fh:
                text = fh.read()
        except (OSError, UnicodeError):
            return False
        parsed = _parse(text)
        if parsed is None or parsed[0] != self.key:
            return False
        _, self.status, self.chunks = parsed
        return True

    def replay(self) -> int:
        """Write the stored page out as the application wrote it; its exit status (EXIT_PIPE
        when standard output's reader went away)."""
        assert self.chunks is not None and self.status is not None
        try:
            for stream, text in self.chunks:
                (sys.stdout if stream == "o" else sys.stderr).write(text)
            sys.stdout.flush()
        except BrokenPipeError:
            silence_stdout()
            return 128 + 13
        except OSError as exc:  # as the application reports a refused write
            try:
                sys.stderr.write(f"error: the system refused an operation ({exc})\n")
            except Exception:
                pass
            return 1
        return self.status

    # ------------------------------------------------------------------ writing

    def recording(self) -> "_Recording":
        return _Recording(self._recorded)

    def store(self, status: int) -> None:
        """Keep what the application wrote, when it is a help page: exit status 0 (2 for the
        page shown for no arguments) and something on standard output. Written to a temporary
        file and renamed, so that a reader sees a whole page or none; errors are ignored."""
        chunks = self._recorded
        if status != (2 if self.no_args else 0) or not any(s == "o" and t for s, t in chunks):
            return
        body = [_MAGIC, f"{len(self.key)}\n", self.key, f"\n{status}\n{len(chunks)}\n"]
        for stream, text in chunks:
            body += [f"{stream} {len(text)}\n", text]
        try:
            import tempfile

            os.makedirs(self.directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".page-", suffix=".tmp", dir=self.directory)
            try:
                with open(fd, "w", encoding="utf-8", errors="surrogatepass", newline="") as fh:
                    fh.write("".join(body))
                os.replace(tmp, self.path)
            except BaseException:
                try:
                    os.remove(tmp)
                except OSError:
                    pass
                raise
            _prune(self.directory)
        except Exception:
            pass


def _parse(text: str):
    """(key, status, chunks) from a stored page, or None when it is damaged."""
    try:
        if not text.startswith(_MAGIC):
            return None
        pos = len(_MAGIC)
        end = text.index("\n", pos)
        size = int(text[pos:end])
        page_key = text[end + 1 : end + 1 + size]
        pos = end + 1 + size
        if text[pos] != "\n":
            return None
        lines = []
        for _ in range(2):
            end = text.index("\n", pos + 1)
            lines.append(int(text[pos + 1 : end]))
            pos = end
        status, count = lines
        pos += 1
        chunks = []
        for _ in range(count):
            end = text.index("\n", pos)
            stream, size = text[pos:end].split(" ")
            if stream not in ("o", "e"):
                return None
            size = int(size)
            chunk = text[end + 1 : end + 1 + size]
            if len(chunk) != size:
                return None
            chunks.append((stream, chunk))
            pos = end + 1 + size
        if pos != len(text):
            return None
        return page_key, status, chunks
    except (ValueError, IndexError):
        return None


def _prune(directory: str) -> None:
    pages = []
    with os.scandir(directory) as it:
        for entry in it:
            if entry.name.endswith(".txt"):
                pages.append((entry.stat().st_mtime_ns, entry.path))
    if len(pages) > _KEEP:
        for _, path in sorted(pages)[: len(pages) - _KEEP]:
            try:
                os.remove(path)
            except OSError:
                pass


class _Tee:
    """A standard stream that also notes what is written to it."""

    def __init__(self, stream, name: str, record: list) -> None:
        self._stream = stream
        self._name = name
        self._record = record

    def write(self, text):
        written = self._stream.write(text)
        if isinstance(text, str):
            self._record.append((self._name, text))
        else:  # bytes cannot be replayed through a text stream: nothing is stored
            self._record.append(("?", ""))
        return written

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name):
        return getattr(self._stream, name)


class _Recording:
    """Within it, sys.stdout and sys.stderr note what is written to them (and write it)."""

    def __init__(self, record: list) -> None:
        self._record = record
        self._saved = None

    def __enter__(self) -> "_Recording":
        self._saved = (sys.stdout, sys.stderr)
        sys.stdout = _Tee(sys.stdout, "o", self._record)
        sys.stderr = _Tee(sys.stderr, "e", self._record)
        return self

    def __exit__(self, *exc) -> None:
        out, err = self._saved
        # typer may have wrapped a stream in the meantime (its PacifyFlushWrapper on a closed
        # pipe): a stream still recording is put back, one typer wrapped is left to it
        if isinstance(sys.stdout, _Tee):
            sys.stdout = out
        if isinstance(sys.stderr, _Tee):
            sys.stderr = err
        if any(s == "?" for s, _ in self._record):
            self._record.clear()


def lookup(words: list[str]) -> "HelpPage | None":
    """The HelpPage for a help request (loaded when stored), or None: not a help request, the
    cache is off, or the key cannot be computed."""
    if not is_help_request(words) or disabled() or sys.stdout is None or sys.stderr is None:
        return None
    try:
        page = HelpPage(words)
        page.load()
    except Exception:
        return None
    return page
