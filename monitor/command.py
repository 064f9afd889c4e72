"""The plumbing every ``perfmon`` command shares: exit statuses, the one-line error, output,
and the wrapper of the commands that open the history store.

The history store's modules (SQLAlchemy) are imported when such a command runs, so that
``perfmon`` works, and builds its parser, without the ``history`` extra.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from .history.url import INSTALL_HINT, URLError

EXIT_OK = 0
EXIT_REGRESSION = 1
EXIT_BAD_INPUT = 2


class UsageError(Exception):
    """Bad usage or bad input of a command: its message is one line, fit to print as is."""


def error(msg: str) -> int:
    """Print ``perfmon: error: MSG`` on stderr; the exit status of bad input."""
    print(f"perfmon: error: {msg}", file=sys.stderr)
    return EXIT_BAD_INPUT


def emit(text: str) -> None:
    """A command's output, on stdout."""
    sys.stdout.write(text)
    sys.stdout.flush()


def run_command(
    func: Callable[[argparse.Namespace, Any], int],
) -> Callable[[argparse.Namespace], int]:
    """A command over the history store: ``func(args, store)`` gets the store module; a missing
    extra, a bad store URL, a store that cannot be used and bad usage are one line, exit 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            import sqlalchemy  # noqa: F401

            from .history import store
        except ImportError as exc:
            return error(f"perfmon history needs {exc.name or 'its extra'}: {INSTALL_HINT}")
        try:
            return func(args, store)
        except (UsageError, URLError, store.HistoryError) as exc:
            return error(str(exc))
        except store.sa.exc.SQLAlchemyError as exc:
            return error(store.describe_error(exc, args.db))
        except OSError as exc:
            return error(f"{exc.strerror or exc}")

    return run
