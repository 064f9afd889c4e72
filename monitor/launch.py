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

Linux, a single-threaded pytest process: :func:`fork_monitor` starts the monitor without a new
interpreter (issue 25): pytest itself forks, the child calls ``setsid``, forks the monitor and
exits; the monitor, a copy of pytest, first becomes what a fresh interpreter would have been
(:func:`_become_monitor`) and then runs the collector. ``plugin/_handle.py`` decides which way.
"""

from __future__ import annotations

import os
import sys
import warnings
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
    launcher = os.getpid()  # pytest's child until pytest reaps it: none of the tests'
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

            code = monitor_main(rest, parent_fd=parent_fd, detached=True, launcher=launcher)
    except BaseException:  # noqa: BLE001 - said in the log, then the process ends here
        import traceback

        traceback.print_exc()
        code = 1
    # Everything is written and every socket closed: skip the interpreter's teardown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


#: The monitor's name in ``ps``/``top`` (``/proc/PID/comm``, 15 bytes at most) when forked: its
#: command line is its pytest's.
FORKED_NAME = "perfmon-monitor"

#: What the forked monitor must not drop (every object of pytest's it replaced: streams, root
#: logging handlers, import hooks, signal handlers, warning filters, hooks): released, a file
#: object would be flushed (pytest's data written twice) and close a descriptor number that the
#: monitor holds by then (pytest's pidfd, descriptor 3, or one of zmq's).
_kept: list = []


def one_thread() -> bool:
    """Whether this process runs one OS thread (Linux: counted by the kernel; a C extension's
    thread counts too). Raises OSError without ``/proc``."""
    return len(os.listdir("/proc/self/task")) == 1


def resident() -> int:
    """This process's resident size in bytes (Linux: ``/proc/self/statm``)."""
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


#: Packages the monitor may import after its ``ready`` (psutil to read a test's children, the
#: history extra to record the run). If pytest can import one that the forked monitor, with the
#: standard import finders only, cannot (an import hook of a frozen app serves it), the monitor
#: ends before its ``ready`` and the launcher starts one in its place.
LATER = ("psutil", "sqlalchemy", "psycopg", "numpy")


def _findable(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def import_shared() -> None:
    """Import, before the fork, what both the monitor and the plugin import right after it
    (pyzmq, msgpack, the wire protocol, the report model, the crash slots): once in pytest, where
    the plugin needed it anyway, and shared with the monitor, instead of once in each. Importing
    them in the monitor was most of its CPU in a short run (a 1-test run's monitor: 28.6 -> 11.4
    ms, 2,566 -> 1,689 page faults; docs/benchmarks.md). What only the monitor uses (its serving
    loop, sampler, collector) stays out of pytest."""
    import zmq  # noqa: F401

    from . import protocol, report, slots  # noqa: F401


def fork_monitor(
    pid_file: str, argv: list, log_path: str, tmpdir: str, max_rss: Optional[int] = None
) -> Optional[int]:
    """In the pytest process: fork the launcher, which starts the monitor (``argv``: the
    collector's arguments) in a new session and exits after writing its pid to ``pid_file``.
    Returns the launcher's pid (reap it: ``os.waitpid``), or None without a fork when this
    process runs more than one thread by now or, with ``max_rss``, holds more than that many
    bytes resident (the imports since the caller's check, :func:`import_shared`'s included,
    went through the user's import hooks and added to its size). The caller checked that this
    process runs one thread, is not traced, and is on Linux."""
    import_shared()
    if max_rss is not None:
        try:
            if resident() > max_rss:
                return None
        except (OSError, ValueError, IndexError):
            return None
    parent_fd = None
    if hasattr(os, "pidfd_open"):
        try:  # our own pidfd, inherited: the monitor ends when this process does
            parent_fd = os.pidfd_open(os.getpid())
        except OSError:  # a kernel older than 5.3: by pid and create time
            pass
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        if not one_thread():
            return None
        with warnings.catch_warnings():  # one thread, so none is due; never to a -W error run
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the launcher; never returns into pytest
            code = 1
            try:
                os.setsid()  # Ctrl-C in the terminal is pytest's
                launcher = os.getpid()  # pytest's child until pytest reaps it
                pid = os.fork()
                if pid == 0:
                    code = _run_forked(argv, log_fd, parent_fd, tmpdir, launcher)
                else:
                    try:
                        write_pid(pid_file, pid)
                        code = 0
                    except OSError:
                        os.kill(pid, 9)  # nobody could find it to stop it: it must not run
            finally:
                os._exit(code)
        return pid
    finally:
        os.close(log_fd)
        if parent_fd is not None:
            os.close(parent_fd)


def _run_forked(
    argv: list, log_fd: int, parent_fd: Optional[int], tmpdir: str, launcher: int
) -> int:
    """The forked monitor's life (a copy of pytest until :func:`_become_monitor`)."""
    code = 1
    try:
        later = [m for m in LATER if m not in sys.modules and _findable(m)]  # pytest's finders
        parent_fd = _become_monitor(log_fd, parent_fd, tmpdir)
        lost = [m for m in later if not _findable(m)]
        if lost:
            sys.stderr.write(
                f"perfmon: the monitor forked from pytest cannot import {', '.join(lost)} "
                "without pytest's import hooks\n"
            )
            return code
        from .collector import main as monitor_main

        code = monitor_main(
            argv, parent_fd=parent_fd, detached=True, start="fork", launcher=launcher
        )
    except BaseException:  # noqa: BLE001 - said in the log, then the process ends here
        try:
            import traceback

            traceback.print_exc()
        except BaseException:  # noqa: BLE001
            pass
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001
        pass
    return code


def fresh_path(path: list, pythonpath: str) -> list:
    """``path`` without what a new interpreter in another directory would not have: the entries
    before the standard library (the current directory or the script's, the rootdir and
    conftest directories pytest inserts, its ``pythonpath`` ini) unless ``PYTHONPATH`` names
    them. So a module in the user's project (a ``psutil.py`` at its root) never shadows one the
    monitor imports, as with the launcher, which starts in its private directory."""
    named = {p for p in pythonpath.split(os.pathsep) if p}
    prefixes = {
        os.path.join(p, "")
        for p in (sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix)
    }
    first = next(
        (i for i, p in enumerate(path) if any(os.path.join(p, "").startswith(x) for x in prefixes)),
        len(path),
    )
    return [p for i, p in enumerate(path) if i >= first or p in named]


def _become_monitor(log_fd: int, parent_fd: Optional[int], tmpdir: str) -> Optional[int]:
    """Leave pytest behind: its descriptors, streams, signal handlers, import hooks, tracers,
    warning filters, logging handlers; nothing of it is ever flushed, closed or run at exit
    (the process ends with ``os._exit``). Returns the pidfd of pytest, now descriptor 3."""
    import gc

    gc.freeze()  # pytest's objects: never collected here (their finalizers would run)
    import fcntl
    import signal

    # Signals as a fresh interpreter has them: Python's handlers, faulthandler's (its fatal
    # signals, and those a conftest register()ed, which write to pytest's stderr), the wakeup
    # fd (an asyncio loop's), nothing blocked.
    for sig in signal.valid_signals():
        try:
            handler = signal.getsignal(sig)
        except (OSError, ValueError):
            continue
        if callable(handler) and handler is not signal.default_int_handler:
            _kept.append(signal.signal(sig, signal.SIG_DFL))
    _kept.append(signal.signal(signal.SIGINT, signal.default_int_handler))
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    try:
        signal.set_wakeup_fd(-1)
    except ValueError:  # not the main thread: nothing was set
        pass
    if "faulthandler" in sys.modules:
        faulthandler = sys.modules["faulthandler"]
        faulthandler.disable()
        for sig in signal.valid_signals():
            try:
                faulthandler.unregister(sig)
            except (OSError, ValueError, RuntimeError):  # one it cannot register at all
                pass
    # 0, 1, 2: /dev/null and the log, as the launcher's; pytest's own (its capture's temporary
    # files, a terminal, a pipe a test reads to its end) closed with every other descriptor.
    log_fd = fcntl.fcntl(log_fd, fcntl.F_DUPFD, 3)
    if parent_fd is not None:
        parent_fd = fcntl.fcntl(parent_fd, fcntl.F_DUPFD, 3)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(log_fd, 2)
    keep = 3
    if parent_fd is not None:
        os.dup2(parent_fd, 3, inheritable=False)
        parent_fd, keep = 3, 4
    for name in os.listdir("/proc/self/fd"):
        if int(name) >= keep:
            try:
                os.close(int(name))
            except OSError:  # the listing's own descriptor
                pass
    _kept.extend((sys.stdin, sys.stdout, sys.stderr, sys.__stdin__, sys.__stdout__))
    _kept.append(sys.__stderr__)
    streams = (
        open(0, closefd=False),  # noqa: SIM115
        open(1, "w", closefd=False, buffering=1),  # noqa: SIM115
        open(2, "w", closefd=False, buffering=1, errors="backslashreplace"),  # noqa: SIM115
    )
    for name, stream in zip(("stdin", "stdout", "stderr"), streams):
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)
    sys.path[:] = fresh_path(sys.path, os.environ.get("PYTHONPATH", ""))
    os.chdir(tmpdir)
    # pytest's import hooks (assertion rewriting) and any other plugin's: the standard finders
    # only (an editable install's finder kept), as in a fresh interpreter.
    import importlib.machinery as machinery

    plain = (machinery.BuiltinImporter, machinery.FrozenImporter, machinery.PathFinder)
    _kept.append(list(sys.meta_path))
    sys.meta_path[:] = [
        f
        for f in sys.meta_path
        if f in plain or getattr(f, "__module__", "").startswith("__editable__")
    ]
    import threading
    import warnings

    _kept.extend((sys.excepthook, sys.unraisablehook, threading.excepthook))
    sys.excepthook = sys.__excepthook__
    sys.unraisablehook = sys.__unraisablehook__
    threading.excepthook = threading.__excepthook__
    _kept.append(list(warnings.filters))
    warnings.resetwarnings()
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
        warnings.simplefilter("ignore", category)
    if "logging" in sys.modules:  # pytest's and the user's, writing to their streams
        root = sys.modules["logging"].root
        _kept.append(root.handlers)
        root.handlers = []
    try:
        with open("/proc/self/comm", "w") as f:
            f.write(FORKED_NAME)
    except OSError:
        pass
    return parent_fd


if __name__ == "__main__":
    sys.exit(main())
