"""Start the monitor outside the family of the process that measures tests (standard library
only: this runs before anything heavy is imported).

``python -m pytest_perfmon.monitor.launch PID_FILE MONITOR_ARGS...``

POSIX: the launcher forks at once; the child goes on to be the monitor, the launcher writes the
child's pid to ``PID_FILE`` and exits, so the monitor is reparented (to init or the nearest
subreaper) and is never a child of pytest: a test that lists or terminates its process's
children never sees or touches it. The plugin reaps the short-lived launcher before the first
test. On Linux the launcher opens a pidfd of its parent (pytest) before forking, while that is
still its parent: the monitor, no longer its child, watches that descriptor to end with pytest
(no pid can be mistaken for another).

Windows (and anywhere without ``fork``): the launcher starts the monitor as a detached process
(``DETACHED_PROCESS``, a new process group) and exits; the monitor watches pytest by pid and
create time.
"""

from __future__ import annotations

import os
import sys
from typing import Optional


def _parent(argv: list) -> Optional[int]:
    try:
        return int(argv[argv.index("--parent") + 1])
    except (ValueError, IndexError):
        return None


def _pidfd(pid: Optional[int]) -> Optional[int]:
    """A pidfd of our parent ``pid`` (Linux 5.3+), or None."""
    if pid is None or not hasattr(os, "pidfd_open") or os.getppid() != pid:
        return None
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    if os.getppid() != pid:  # it died between the check and the open: the fd may be another's
        os.close(fd)
        return None
    return fd


def write_pid(path: str, pid: int) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(str(pid))
    os.replace(tmp, path)


def main(argv: Optional[list] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: python -m pytest_perfmon.monitor.launch PID_FILE ARGS...", file=sys.stderr)
        return 2
    pid_file, rest = argv[0], argv[1:]
    # ``--relay DIR ...``: a remote worker's relay (monitor/relay.py) instead of a monitor.
    relay = bool(rest) and rest[0] == "--relay"
    module = "pytest_perfmon.monitor.relay" if relay else "pytest_perfmon.monitor.collector"
    parent = _parent(rest)
    if not hasattr(os, "fork"):
        import subprocess  # here only: 5 ms of the launcher's start-up before the fork

        flags = getattr(subprocess, "DETACHED_PROCESS", 0) | getattr(
            subprocess, "CREATE_NEW_PROCESS_GROUP", 0
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *rest],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=sys.stderr,
            close_fds=True,
            creationflags=flags,
        )
        write_pid(pid_file, proc.pid)
        return 0
    if parent is not None and os.getppid() != parent:
        return 0  # pytest is gone already
    parent_fd = _pidfd(parent)
    pid = os.fork()
    if pid:
        try:
            write_pid(pid_file, pid)
        except OSError:
            os.kill(pid, 9)  # nobody could find it to stop it: it must not run
            os._exit(1)
        os._exit(0)
    # The monitor (or relay), from here on.
    try:
        if relay:
            from .relay import main as relay_main  # imports zmq and psutil: after the fork

            code = relay_main(rest)
        else:
            from .collector import main as monitor_main

            code = monitor_main(rest, parent_fd=parent_fd, detached=True)
    except BaseException:  # noqa: BLE001 - said in the log, then the process ends here
        import traceback

        traceback.print_exc()
        code = 1
    # Everything is written and every socket closed: skip the interpreter's teardown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
