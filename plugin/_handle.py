"""The collector a session reports into: a monitor we spawned, or a perfmon-daemon we joined.

Both offer one interface, used by the roles without asking which one they hold:

``endpoint``        where to connect (None: nothing to connect to; ``problem`` says why)
``name``            how warnings name it ("the monitor", "the perfmon daemon at ENDPOINT")
``ready_timeout``   how long the first test waits for its ``ready``
``connect_grace``   how long to wait for a connection at all (None: as long as ``ready_timeout``)
``spawned``         True for a monitor we started (it is ours to watch and stop)
``pid``             the process to watch (None: not ours to watch; the connection tells)
``alive()``         False once we know it is gone
``settle()``        before the first test: reap the launcher of a monitor we started
``describe()``      a short account of its state, for a warning
``silence()``       a collector that failed to answer must not write over our report: stop it
``reap()``          end of session: wait for it to exit, remove its private directory
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional

from ._settings import Settings

_perf = time.perf_counter

READY_TIMEOUT = 20.0  # first test waits at most this long for a monitor we spawned
DAEMON_READY_TIMEOUT = 5.0  # ... for a perfmon-daemon that accepted our connection
REAP_TIMEOUT = 5.0
#: The monitor is forked from a pytest process of at most this resident size, bytes; a larger
#: one starts the launcher (a new interpreter), whose cost does not grow with pytest's memory.
#: pytest's next full garbage collection after the fork writes into every object it tracks, so
#: each page the monitor still shares is copied then, in whichever test triggers it: measured
#: not above the run-to-run spread up to 46 MB (pytest alone is ~42), up to +26 ms at 51-71 MB
#: (one set of two at 51), +106 ms at 131 MB (docs/benchmarks.md, issue 25 session 4,
#: scripts/bench_fork_gc.py).
FORK_MAX_RSS = 48 * 1024 * 1024
IPC_PATH_MAX = 100  # sockaddr_un holds 104-108 bytes, depending on the system


class SpawnedMonitor:
    """A monitor process started for this session, in a private 0700 directory.

    It is started through ``pytest_perfmon.monitor.launch``, which forks and exits, or, where
    :func:`fork_start_ok`, by a fork of this process (``launch.fork_monitor``: the child forks
    the monitor and exits, issue 25): the monitor itself is never a child of this process (a
    test that lists or terminates its process's children never sees it). The short-lived
    launcher is reaped before the first test (:meth:`settle`, from the first ``pid``/``alive()``);
    from then on the monitor is known by its pid and, on Linux, a pidfd (:class:`_Process`), so
    that a reused pid is never taken for it. How it ended is read from the note it leaves
    (``monitor.exit``), since the kernel tells only a parent.
    """

    ready_timeout = READY_TIMEOUT
    connect_grace: Optional[float] = None
    name = "the monitor"
    spawned = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.launcher: Any = None  # a subprocess.Popen, or a _Forked
        self.forked = False  # the monitor running now was forked from this process
        self.proc: Optional[_Process] = None  # the monitor, once the launcher has told its pid
        self.launch_status: Optional[int] = None
        self.problem: Optional[str] = None
        self.endpoint: Optional[str] = None
        self.tmpdir: Optional[str] = tempfile.mkdtemp(prefix="perfmon-")  # mode 0700
        self.log_path = os.path.join(self.tmpdir, "monitor.log")
        self.pid_path = os.path.join(self.tmpdir, "monitor.pid")
        self.note_path = os.path.join(self.tmpdir, "monitor.exit")
        # The launcher is started before zmq is imported here (tens of ms that run beside its
        # start-up; a forked monitor shares them: launch.import_shared): whether this libzmq has
        # ipc:// is asked after the launch, and the monitor, asking the same libzmq, binds TCP
        # instead and says where in ENDPOINT_FILE.
        endpoint_file = os.path.join(self.tmpdir, "endpoint")
        sock_path = os.path.join(self.tmpdir, "monitor.sock")
        ipc = os.name == "posix" and len(sock_path.encode()) < IPC_PATH_MAX
        if ipc:
            endpoint = "ipc://" + sock_path
        else:  # no ipc:// here, or a TMPDIR too long for a socket path
            endpoint = "tcp://127.0.0.1:0"
        python = os.environ.get("PERFMON_MONITOR_PYTHON") or sys.executable
        cmd = [
            python,
            "-m",
            "pytest_perfmon.monitor.launch",
            self.pid_path,
            "--endpoint",
            endpoint,
            "--output",
            settings.output,
            "--interval",
            repr(settings.interval),
            "--parent",
            str(os.getpid()),
            "--exit-note",
            self.note_path,
            "--endpoint-file",
            endpoint_file,
        ]
        if not settings.system_info:
            cmd.append("--no-system-info")
        #: The session's CURVE keys for remote workers' relays (None: no TCP listener).
        self.keys: Optional[dict] = None
        self.remote_endpoint: Optional[str] = None
        self.listen_problem: Optional[str] = None
        if settings.listen:
            from pytest_perfmon.monitor.remote import make_keys

            self.keys = make_keys(self.tmpdir)
            cmd += ["--listen", f"{self.tmpdir},{settings.listen}"]
        self.cmd = cmd
        self.problem = self._launch()
        if self.problem is None:
            if ipc:
                import zmq  # after the launch; the client imports it anyway

                ipc = zmq.has("ipc")
            self.endpoint = endpoint if ipc else self._read_endpoint(endpoint_file)
            if self.endpoint is None and self.fall_back():  # it died before it told its port
                self.problem = None
                self.endpoint = self._read_endpoint(endpoint_file)

    def _launch(self) -> Optional[str]:
        """Start the launcher; the problem, in words, if it could not be started."""
        assert self.tmpdir is not None
        self.forked = False
        if fork_start_ok() and not self.unforked:
            from pytest_perfmon.monitor.launch import fork_monitor

            from ._counters import not_counted

            try:
                with not_counted():  # ours, not a process a test started
                    pid = fork_monitor(
                        self.pid_path, self.cmd[4:], self.log_path, self.tmpdir, FORK_MAX_RSS
                    )
            except OSError as exc:  # out of processes or memory: as the launcher would
                return f"cannot start the monitor: {exc}"
            if pid is not None:
                self.launcher = _Forked(pid)
                self.forked = True
                return None
            # a thread started meanwhile (an import hook's): the launcher
        kwargs: dict = {}
        if os.name == "posix":
            kwargs["start_new_session"] = True  # Ctrl-C in the terminal is pytest's
        else:
            kwargs["creationflags"] = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
        try:
            with open(self.log_path, "ab") as log:
                self.launcher = subprocess.Popen(
                    self.cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    close_fds=True,
                    cwd=self.tmpdir,  # so that no package in the user's cwd shadows ours
                    **kwargs,
                )
        except OSError as exc:
            return f"cannot start the monitor: {exc}"
        return None

    def relaunch(self) -> bool:
        """Start a new monitor in place of one that died: the same private directory and, with
        the endpoint it had bound, the same address (peers reconnect by themselves; a forked one
        that died before it told a TCP port: the port the new one picks). True once it runs."""
        if self.tmpdir is None:
            return False
        for path in (self.pid_path, self.note_path):
            try:
                os.unlink(path)
            except OSError:
                pass
        if self.proc is not None:
            self.proc.close()
        self.proc = None
        self.launch_status = None
        if self.endpoint is not None:  # a tcp port bound by the first one: the same port
            i = self.cmd.index("--endpoint")
            self.cmd[i + 1] = self.endpoint
        if self.remote_endpoint is not None:  # remote workers' relays reconnect there too
            i = self.cmd.index("--listen")
            self.cmd[i + 1] = f"{self.tmpdir},{self.remote_endpoint}"
        if "--replacing" not in self.cmd:  # its report over the aborted one the dead one wrote
            self.cmd.append("--replacing")
        from ._counters import not_counted

        with not_counted():  # ours, not a process the running test started
            if self._launch() is not None:
                return False
        return self.alive()

    #: The launcher only, from the fall-back on: the forked monitor ended before its ready.
    unforked = False

    def fall_back(self) -> bool:
        """The forked monitor ended before it was ready (it is a copy of pytest: a project's
        module that shadows one of its dependencies on pytest's ``sys.path``, an import hook it
        dropped that a frozen app needs): once, a monitor started by the launcher (a new
        interpreter) in its place, said in the log. True once it runs."""
        if not self.forked or self.unforked or self.alive():
            return False
        self.unforked = True
        try:
            with open(self.log_path, "a", encoding="utf-8") as log:
                log.write(  # how it ended, it said above if it could (no note: not its child)
                    "perfmon: the monitor forked from pytest ended before it was ready; "
                    "started again by the launcher (a new interpreter)\n"
                )
        except OSError:
            pass
        return self.relaunch()

    def settle(self) -> None:
        """Reap the launcher (it exits a moment after it started) and learn the monitor's pid.
        Called before the first test: after this no process of ours is a child of pytest."""
        launcher = self.launcher
        if launcher is None:
            return
        try:
            self.launch_status = launcher.wait(READY_TIMEOUT)
        except subprocess.TimeoutExpired:  # never seen: a launcher that does not fork
            launcher.kill()
            self.launch_status = launcher.wait(None)
        self.launcher = None
        try:
            with open(self.pid_path) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return
        self.proc = _Process(pid)

    @property
    def pid(self) -> Optional[int]:
        self.settle()
        return None if self.proc is None else self.proc.pid

    def listening(self) -> Optional[str]:
        """The TCP endpoint remote workers' relays reach (read once the monitor bound it)."""
        if self.keys is not None and self.remote_endpoint is None and self.tmpdir:
            said = self._read_endpoint(os.path.join(self.tmpdir, "listen"))
            if said is not None and said.startswith("error: "):
                self.listen_problem = said[len("error: ") :]
                self.keys = None  # nothing listens: ask no more
            else:
                self.remote_endpoint = said
        return self.remote_endpoint

    def _read_endpoint(self, path: str) -> Optional[str]:
        deadline = _perf() + READY_TIMEOUT
        while _perf() < deadline and self.alive():
            try:
                with open(path) as f:
                    return f.read().strip()
            except OSError:
                time.sleep(0.01)
        self.problem = "the monitor did not publish its endpoint: " + self.describe()
        return None

    def alive(self) -> bool:
        self.settle()
        return self.proc is not None and self.proc.alive()

    def ended(self) -> Optional[str]:
        """How the monitor ended (``exit code 2``, ``killed by SIGTERM``), None while it runs."""
        if self.launcher is None and self.proc is None and self.launch_status is None:
            return "not started"
        if self.alive():
            return None
        if self.proc is None:  # the launcher never told a pid
            return f"did not start (exit code {self.launch_status})"
        return self.note()[0]

    def note(self) -> tuple:
        """(how the monitor ended, when if it said so) from the note it left at its exit."""
        try:
            with open(self.note_path) as f:
                lines = f.read().split("\n")
        except OSError:
            return "killed by SIGKILL, or crashed", None  # the one end that leaves no note
        try:
            at: Optional[float] = float(lines[1])
        except (IndexError, ValueError):
            at = None
        return lines[0].strip() or "ended", at

    def describe(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").strip().splitlines()
        except OSError:
            lines = []
        code = self.ended() or "still running"
        return f"{lines[-1]} ({code})" if lines else code

    def silence(self) -> None:
        if self.alive() and self.proc is not None:  # alive() implies a process
            self.proc.kill()
            self.reap()

    def reap(self, wrote_report: bool = True) -> None:
        self.settle()
        proc = self.proc
        if proc is not None:
            if not wrote_report and proc.alive():
                proc.terminate()  # the session never finished (an error before the tests)
            if not proc.wait(REAP_TIMEOUT):
                proc.kill()
                proc.wait(REAP_TIMEOUT)
            proc.close()
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None


def fork_start_ok() -> bool:
    """Whether the monitor may be forked from this process instead of a new interpreter: Linux
    (macOS's system frameworks make a fork without exec unsafe; Windows has no fork), one OS
    thread at this moment (a thread's locks would be held forever in the copy; counted by the
    kernel, so that a C extension's thread counts too; counted again just before the fork), no
    tracer or profiler (coverage, a debugger, tracemalloc: the copy would go on tracing), and
    neither PERFMON_MONITOR_PYTHON nor PERFMON_MONITOR_START=exec set; and a resident size of
    at most FORK_MAX_RSS, measured again just before the fork, after the imports the monitor
    shares (a fork copies the page tables, and every page either process writes
    while the monitor shares it is copied then, pytest's first full collection after it
    included: docs/benchmarks.md, issue 25 session 4)."""
    env = os.environ
    if env.get("PERFMON_MONITOR_START") == "exec" or env.get("PERFMON_MONITOR_PYTHON"):
        return False
    if not sys.platform.startswith("linux") or sys.gettrace() or sys.getprofile():
        return False
    monitoring = getattr(sys, "monitoring", None)  # 3.12+: coverage's sys.monitoring core
    if monitoring is not None and any(monitoring.get_tool(i) for i in range(6)):
        return False
    import _tracemalloc  # built in; tracing (-X tracemalloc, a conftest's start()): the copy
    # would trace every allocation of the monitor, and stopping it there frees every trace

    if _tracemalloc.is_tracing():
        return False
    try:
        if len(os.listdir("/proc/self/task")) != 1 or _python_threads() != 1:
            return False
        from pytest_perfmon.monitor.launch import resident

        return resident() <= FORK_MAX_RSS
    except (OSError, ValueError, IndexError):
        return False


def _python_threads() -> int:
    """The threads ``threading`` counts (Python 3.12's fork warning counts these when it
    knows of more than one, which a foreign thread's stale entry can make)."""
    import threading

    return threading.active_count()


class _Forked:
    """The launcher forked from this process (:func:`monitor.launch.fork_monitor`), as much of
    subprocess.Popen as :meth:`SpawnedMonitor.settle` uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: Optional[int] = None

    def wait(self, timeout: Optional[float]) -> int:
        deadline = None if timeout is None else _perf() + timeout
        delay = 0.0005
        while self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, 0 if deadline is None else os.WNOHANG)
            except ChildProcessError:  # reaped by someone else's os.wait(): as Popen does
                pid, status = self.pid, 0
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
            elif deadline is not None and _perf() >= deadline:
                raise subprocess.TimeoutExpired(["monitor launcher"], timeout or 0.0)
            else:
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except OSError:
                pass


class _Process:
    """A process that is not our child, known for sure: through a pidfd on Linux (signals and
    waits reach that process only, never one that reused its pid), else through psutil, which
    checks the create time before each signal."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.fd: Optional[int] = None
        self.ps: Any = None
        self.gone = False
        if hasattr(os, "pidfd_open"):
            try:
                self.fd = os.pidfd_open(pid)
                return
            except ProcessLookupError:
                self.gone = True
                return
            except OSError:  # a kernel older than 5.3, or a seccomp filter
                pass
        import psutil  # only without pidfds

        try:
            self.ps = psutil.Process(pid)
        except psutil.Error:
            self.gone = True

    def alive(self) -> bool:
        return not self.wait(0)

    def wait(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for the process to end; True once it has."""
        if self.gone:
            return True
        if self.fd is not None:
            self.gone = bool(select.select([self.fd], [], [], timeout)[0])
            return self.gone
        import psutil

        try:
            if self.ps.status() == psutil.STATUS_ZOMBIE:
                self.gone = True
                return True
            self.ps.wait(timeout)
        except psutil.TimeoutExpired:
            return False
        except psutil.Error:
            pass
        self.gone = True
        return True

    def _signal(self, signum: int) -> None:
        if self.gone:
            return
        try:
            if self.fd is not None:
                signal.pidfd_send_signal(self.fd, signum)
            elif self.ps.is_running():  # False when the pid is another process's now
                self.ps.send_signal(signum)
        except (OSError, ImportError) as exc:
            if isinstance(exc, ProcessLookupError):
                self.gone = True
        except Exception:  # psutil.NoSuchProcess / AccessDenied
            self.gone = True

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(getattr(signal, "SIGKILL", signal.SIGTERM))

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
            self.gone = True


class JoinedDaemon:
    """A perfmon-daemon that runs on its own: not ours to start, watch or stop.

    Whether it is gone is told by the connection (the client's socket events), so a killed or
    stopped daemon ends every wait at once.
    """

    ready_timeout = DAEMON_READY_TIMEOUT
    spawned = False
    connect_grace: Optional[float] = None  # set from the client module's CONNECT_GRACE
    pid: Optional[int] = None
    problem: Optional[str] = None

    def __init__(self, endpoint: str) -> None:
        from ._client import CONNECT_GRACE

        self.endpoint = endpoint
        self.name = f"the perfmon daemon at {endpoint}"
        self.connect_grace = CONNECT_GRACE

    def alive(self) -> bool:
        return True

    def describe(self) -> str:
        return f"daemon {self.endpoint}"

    def silence(self) -> None:
        pass

    def settle(self) -> None:
        pass

    def relaunch(self) -> bool:
        return False  # not ours to start

    def fall_back(self) -> bool:
        return False

    def note(self) -> tuple:
        return "it closed the connection", None

    def reap(self, wrote_report: bool = True) -> None:
        pass


class Early:
    """A monitor started by :func:`spawn_early`, handed to the role that owns the session
    (:func:`make_handle`) by the configure that started it: passed, not kept in a module global,
    so that a second copy of these modules in one process (pytester's in-process runs hand
    ``sys.modules`` back after each run) can never start a second monitor and leave the first
    running. The role claims it once it is registered (its unconfigure stops it from then on)."""

    def __init__(self, monitor: SpawnedMonitor) -> None:
        self.monitor: Optional[SpawnedMonitor] = monitor  # None once a role claimed it

    def claim(self) -> None:
        self.monitor = None

    def drop(self) -> None:
        """When pytest unconfigures (a config cleanup): a monitor that no registered role
        claimed (the configure failed in between, or the role's set-up raised) is stopped
        before it could write."""
        monitor, self.monitor = self.monitor, None
        if monitor is not None:
            monitor.silence()
            monitor.reap(wrote_report=False)


def spawn_early(settings: Settings) -> Optional[Early]:
    """Start the monitor as soon as the settings are known, before this process imports the
    plugin's runtime (zmq, msgpack: about 30 ms), which then runs beside the launcher's start
    (a new interpreter) instead of before it. A forked monitor is a copy: pytest imports what
    both need just before the fork (``launch.import_shared``). A perfmon-daemon is joined
    later, as before."""
    if settings.daemon:
        return None
    return Early(SpawnedMonitor(settings))


def make_handle(settings: Settings, early: Optional[Early] = None) -> SpawnedMonitor | JoinedDaemon:
    """The session's monitor: the one started early for it (the role claims it once registered),
    else a new one (or the daemon joined)."""
    if early is not None and early.monitor is not None:
        return early.monitor
    if settings.daemon:
        return JoinedDaemon(settings.daemon)
    return SpawnedMonitor(settings)
