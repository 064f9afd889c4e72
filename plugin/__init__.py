"""pytest_perfmon: the pytest layer of pytest-perfmon (options, hooks, process roles).

The monitor side lives in the subpackage :mod:`pytest_perfmon.monitor`, which never imports
pytest. This module imports nothing at all, so that a user's folder cannot shadow anything that
pytest's plugin loading reaches.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
