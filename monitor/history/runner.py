"""``run_command``: the wrapper of every ``perfmon`` command over the history store
(``perfmon history ...``, ``perfmon predict``).

The store's modules (SQLAlchemy) are imported when such a command runs, so that ``perfmon``
works, and builds its parser, without the ``history`` extra.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable

from ..command import UsageError, error
from .url import INSTALL_HINT, URLError


def run_command(
    func: Callable[[argparse.Namespace, Any], int],
) -> Callable[[argparse.Namespace], int]:
    """A command over the history store: ``func(args, store)`` gets the store module; a missing
    extra, a bad store URL, a store that cannot be used and bad usage are one line, exit 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            import sqlalchemy  # noqa: F401

            from . import store
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
        except (ValueError, TypeError, ArithmeticError, KeyError) as exc:  # a corrupt value
            return error(store.unreadable(exc, args.db))

    return run
