"""The machine a run measures on: what its CPU is (for the report's ``system`` block and the
history store's machine fingerprint). Standard library only, imports nothing of the project."""

from __future__ import annotations

import platform
import subprocess
import sys

#: How long ``sysctl`` may take to answer, seconds.
SYSCTL_TIMEOUT = 2.0


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, sysctl on macOS, else platform.processor)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "cpu model", "Processor"):
                    if value.strip():
                        return value.strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True,
                text=True,
                timeout=SYSCTL_TIMEOUT,
            )
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"
