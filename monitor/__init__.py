"""pytest_perfmon.monitor: the monitor side of pytest-perfmon (protocol, monitor, daemon, report).

This package never imports pytest: the monitor starts fast and is usable on its own.
"""

from .. import __version__

__all__ = ["__version__"]
