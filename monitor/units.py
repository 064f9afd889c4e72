"""Units and plain numbers, defined once for every side (plugin, monitor, daemon, ``perfmon``).

Standard library only and imports nothing: the monitor reads it at start-up and the plugin at
import time.
"""

from __future__ import annotations

from typing import Any, Optional

#: Bytes in a MB, as every figure of ours counts them (the kernel's and psutil's MiB).
MB = 1024.0 * 1024.0

#: The shortest sampling interval the plugin, the monitor and the daemon accept, seconds. Below
#: 10 ms the monitor spends a core on sampling and the samples say nothing more.
MIN_INTERVAL = 0.01
#: The longest (exclusive): an interval of an hour or more samples nothing a test could use.
MAX_INTERVAL = 3600.0

_FLOAT_MAX = 1.7976931348623157e308


def number(v: Any) -> Optional[float]:
    """``v`` when it is a finite number (an int or a float, not a bool), else None: NaN,
    infinity, an int beyond a float's range, text, null and a bool are not a figure."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    # (an int compares with a float exactly: one beyond a float's range is no figure either)
    return v if -_FLOAT_MAX <= v <= _FLOAT_MAX else None
