"""What every module of the daemon shares: its name, its errors, its logger."""

from __future__ import annotations

import logging
import sys
from typing import Optional, TextIO

from ..units import MB

PROG = "perfmon-daemon"

log = logging.getLogger(PROG)


class DaemonError(Exception):
    """A problem the user can fix: printed as one line; ``status`` is the exit status."""

    status = 2  # a usage error


class NoDaemon(DaemonError):
    """Nobody answers at the endpoint (or the daemon refused): exit status 1."""

    status = 1


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record."""

    @property
    def stream(self) -> TextIO:  # noqa: D102
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def setup_logging() -> None:
    """One timestamped line per event, with its level, on stderr (once per process)."""
    if any(isinstance(h, _Stderr) for h in log.handlers):
        return
    handler = _Stderr()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def mb(v: Optional[float]) -> Optional[float]:
    return None if v is None else round(v / MB, 3)
