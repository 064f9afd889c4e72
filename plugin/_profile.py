"""--perf-profile in a measured process: what its ``hello`` asks of the monitor, and the
permission its sampler needs.

The monitor starts a sampler (py-spy) on each process whose ``hello`` carries ``profile``; the
sampler is a child of the monitor, not an ancestor of this process, so where Linux's Yama
(``ptrace_scope`` 1) allows tracing only by ancestors, this process names the monitor as its
tracer (``PR_SET_PTRACER``, which also covers the monitor's children). Imported only when
profiling is on.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Optional

#: prctl(2) option of Yama: let this pid (and its descendants) trace us.
PR_SET_PTRACER = 0x59616D61


def request(settings: Any) -> Optional[dict]:
    """What the monitor is asked to profile, or None (off, or a daemon, which does not)."""
    if settings.profile is None or settings.daemon:
        return None
    return {"mode": settings.profile, "over": settings.profile_over}


def hello_fields(profile: Optional[dict], monitor_pid: Optional[int]) -> dict:
    """The ``profile`` field of this process's hello ({} when off); allows the monitor's
    sampler to read this process first."""
    if not profile:
        return {}
    if monitor_pid:
        allow_tracer(monitor_pid)
    return {"profile": profile}


def allow_tracer(pid: int) -> bool:
    """Linux: ``prctl(PR_SET_PTRACER, pid)``; True when done (False elsewhere, without Yama, or
    refused: the sampler then says why it cannot read us)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_PTRACER, ctypes.c_ulong(pid), 0, 0, 0) == 0)
    except Exception:
        return False


def daemon_warning(settings: Any) -> Optional[str]:
    """--perf-profile with --perf-daemon: the one line saying there will be no profiles."""
    if settings.profile is None or not settings.daemon:
        return None
    return "--perf-profile: no profiles with --perf-daemon (only a monitor pytest spawns samples)"


#: How many of the slowest profiled tests the terminal names.
TERMINAL_TESTS = 5


def write_terminal(tr: Any, report: Optional[dict], path: str) -> None:
    """The profiles' problems, then the hottest function of each of the slowest profiled tests,
    one line each (read from the report's ``session.profile``)."""
    if report is None:
        try:
            with open(path, encoding="utf-8") as f:
                report = json.load(f)
        except (OSError, ValueError) as exc:
            tr.write_line(f"perfmon: warning: cannot read the report back: {exc}", yellow=True)
            return
    session = report.get("session") or {}
    for w in session.get("warnings") or []:
        if isinstance(w, str) and w.startswith("--perf-profile:"):
            tr.write_line(f"perfmon: warning: {w}", yellow=True)
    block = session.get("profile")
    if not isinstance(block, dict):
        return
    for h in (block.get("hottest") or [])[:TERMINAL_TESTS]:
        where = os.path.basename(str(h.get("file")))
        if h.get("line") is not None:
            where += f":{h['line']}"
        tr.write_line(
            f"perfmon: profile: {h['nodeid']} ({h['duration']:.2f} s): hottest {h['function']} "
            f"({where}), {h['share']:.0%} of its samples"
        )
    tr.write_line(
        f"perfmon: {block.get('tests', 0)} profile(s) written to {block.get('path')} "
        "(perfmon profile NODEID)"
    )
