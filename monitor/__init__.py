"""perfmon: the monitor side of pytest-perfmon (protocol, monitor process, report).

This package never imports pytest: the monitor starts fast and is usable on its own.
"""

__version__ = "0.1.0"
