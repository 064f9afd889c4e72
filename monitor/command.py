"""The plumbing every ``perfmon`` command shares: exit statuses, bad usage, the one-line error,
output. The wrapper of the commands over the history store: :mod:`.history.runner`.
Standard library only, imports nothing else of the project.
"""

from __future__ import annotations

import sys

EXIT_OK = 0
EXIT_REGRESSION = 1
EXIT_BAD_INPUT = 2


class UsageError(Exception):
    """Bad usage or bad input of a command: its message is one line, fit to print as is."""


def printable(text: str) -> str:
    """``text`` with a path's undecodable bytes (os.fsdecode's lone surrogates: a file name
    that is not UTF-8, in a node id or a path) as their escapes (``\\udcff``): it encodes in
    UTF-8, which a strict terminal, a log or an HTTP answer requires."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def error(msg: str) -> int:
    """Print ``perfmon: error: MSG`` on stderr; the exit status of bad input."""
    print(f"perfmon: error: {printable(msg)}", file=sys.stderr)
    return EXIT_BAD_INPUT


def emit(text: str) -> None:
    """A command's output, on stdout."""
    sys.stdout.write(printable(text))
    sys.stdout.flush()
