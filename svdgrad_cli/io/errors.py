"""The two error types of the I/O layer and the pieces every message is built from.

Every problem with an input or a destination is raised as :class:`InputError` (a bad call or a
bad input) or :class:`OutputError` (a bad destination) with a single line that names the argument
or file and says what to do about it. The command line maps both to exit status 2.
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_LISTED = 12  # how many names a message lists before "..."


class InputError(Exception):
    """A bad call or a bad input file (the command line exits with status 2).

    The message is one line naming the argument or file and saying what to do.
    """

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


class OutputError(InputError):
    """A bad destination: missing directory, read-only, same file as an input, ..."""


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def short_exc(exc: BaseException) -> str:
    """The text of an exception on one line, at most 200 characters (its type when empty)."""
    text = one_line(str(exc)) or type(exc).__name__
    if len(text) > 200:
        text = text[:197] + "..."
    return text


def list_names(names: Iterable[str]) -> str:
    names = list(names)
    if not names:
        return "none"
    shown = ", ".join(names[:MAX_LISTED])
    if len(names) > MAX_LISTED:
        shown += f", ... ({len(names) - MAX_LISTED} more)"
    return shown


def source_label(arg: str, spec: str) -> str:
    """How a message names an input: ``A: 'x.npy'`` or ``A: '-' (standard input)``."""
    if spec == "-":
        return f"{arg}: '-' (standard input)"
    return f"{arg}: '{spec}'"


def dest_label(dest: str) -> str:
    """How a message names a destination of results."""
    return "output '-' (standard output)" if dest == "-" else f"output '{dest}'"


def fmt_bytes(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} bytes"  # pragma: no cover
