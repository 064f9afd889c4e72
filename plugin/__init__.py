"""pytest_perfmon: the thin pytest layer of pytest-perfmon (options, hooks, process roles)."""

from perfmon import __version__

__all__ = ["__version__"]
