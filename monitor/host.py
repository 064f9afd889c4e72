"""Where a process runs: the identity that tells an xdist worker on another host (or in another
PID namespace: a container) from one beside its controller (standard library only).

``identity()`` is the kernel's boot id, the PID namespace and the host name (Linux); elsewhere
the host name alone. ``PERFMON_HOST_ID`` overrides it: for hosts whose identity is ambiguous
(cloned machines with one host name), and for tests (a socket server on this machine marked as
another host). ``label()`` is the name reports show.
"""

from __future__ import annotations

import os
import socket

#: Overrides the identity (and the name reports show) of every process started with it.
ENV = "PERFMON_HOST_ID"


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
    except (OSError, AttributeError):  # no /proc (macOS, Windows), or refused
        return ""


def identity() -> str:
    """This process's host identity: equal for two processes that see one another's pids."""
    override = os.environ.get(ENV)
    if override:
        return override
    boot = _read("/proc/sys/kernel/random/boot_id")
    return "|".join((socket.gethostname(), boot, _pid_namespace()))


def label() -> str:
    """The host's name in a report: ``PERFMON_HOST_ID`` when set, else the host name."""
    return os.environ.get(ENV) or socket.gethostname()
