"""``--version`` of every command: our version and those of the libraries a bug report needs.

Versions come from installed distributions' metadata (importlib.metadata), so that this never
imports pytest; libzmq's version is asked of pyzmq, which the monitor imports anyway.
"""

from __future__ import annotations

import argparse
import platform
from importlib import metadata
from typing import Any, Optional

from .. import __version__

#: (distribution, label) in the order printed; pytest-xdist and prometheus-client are optional.
DISTRIBUTIONS = (
    ("pytest", "pytest"),
    ("pytest-xdist", "pytest-xdist"),
    ("pyzmq", "pyzmq"),
    ("psutil", "psutil"),
    ("msgpack", "msgpack"),
    ("prometheus-client", "prometheus-client"),
)


def _dist_version(name: str) -> Optional[str]:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _libzmq_version() -> Optional[str]:
    try:
        import zmq
    except ImportError:
        return None
    return zmq.zmq_version()


def version_text() -> str:
    """The lines ``--version`` prints: ``pytest-perfmon VERSION``, then ``name: version`` each."""
    lines = [
        f"pytest-perfmon {__version__}",
        f"Python: {platform.python_version()} ({platform.python_implementation()}) "
        f"on {platform.platform(terse=True)}",
    ]
    for dist, label in DISTRIBUTIONS:
        found = _dist_version(dist)
        lines.append(f"{label}: {found or 'not installed'}")
        if dist == "pyzmq":
            lines.append(f"libzmq: {_libzmq_version() or 'not available'}")
    return "\n".join(lines)


class VersionAction(argparse.Action):
    """``--version`` that prints :func:`version_text` as it is (argparse's own reflows lines)."""

    def __init__(self, option_strings: Any, dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        kwargs.setdefault("help", "print the versions of pytest-perfmon and its libraries, exit")
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        print(version_text())
        parser.exit(0)


def add_version_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action=VersionAction)
