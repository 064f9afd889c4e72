"""The collector a session reports into: a monitor we spawned, or a perfmon-daemon we joined.

Both offer one interface, used by the roles without asking which one they hold:

``endpoint``        where to connect (None: nothing to connect to; ``problem`` says why)
``name``            how warnings name it ("the monitor", "the perfmon daemon at ENDPOINT")
``ready_timeout``   how long the first test waits for its ``ready``
``connect_grace``   how long to wait for a connection at all (None: as long as ``ready_timeout``)
``pid``             the process to watch (None: not ours to watch; the connection tells)
``alive()``         False once we know it is gone
``describe()``      a short account of its state, for a warning
``silence()``       a collector that failed to answer must not write over our report: stop it
``reap()``          end of session: wait for it to exit, remove its private directory
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Optional

from ._settings import Settings

_perf = time.perf_counter

READY_TIMEOUT = 20.0  # first test waits at most this long for a monitor we spawned
DAEMON_READY_TIMEOUT = 5.0  # ... for a perfmon-daemon that accepted our connection
REAP_TIMEOUT = 5.0
IPC_PATH_MAX = 100  # sockaddr_un holds 104-108 bytes, depending on the system


class SpawnedMonitor:
    """A ``perfmon-monitor`` process started for this session, in a private 0700 directory."""

    ready_timeout = READY_TIMEOUT
    connect_grace: Optional[float] = None
    name = "the monitor"

    def __init__(self, settings: Settings) -> None:
        import zmq  # for zmq.has("ipc") only; the client imports it anyway

        self.settings = settings
        self.proc: Optional[subprocess.Popen] = None
        self.problem: Optional[str] = None
        self.endpoint: Optional[str] = None
        self.tmpdir: Optional[str] = tempfile.mkdtemp(prefix="perfmon-")  # mode 0700
        self.log_path = os.path.join(self.tmpdir, "monitor.log")
        endpoint_file = None
        sock_path = os.path.join(self.tmpdir, "monitor.sock")
        if os.name == "posix" and zmq.has("ipc") and len(sock_path.encode()) < IPC_PATH_MAX:
            endpoint = "ipc://" + sock_path
        else:  # no ipc:// here, or a TMPDIR too long for a socket path
            endpoint = "tcp://127.0.0.1:0"
            endpoint_file = os.path.join(self.tmpdir, "endpoint")
        python = os.environ.get("PERFMON_MONITOR_PYTHON") or sys.executable
        cmd = [
            python,
            "-m",
            "pytest_perfmon.monitor.monitor",
            "--endpoint",
            endpoint,
            "--output",
            settings.output,
            "--interval",
            repr(settings.interval),
            "--parent",
            str(os.getpid()),
        ]
        if endpoint_file:
            cmd += ["--endpoint-file", endpoint_file]
        if not settings.system_info:
            cmd.append("--no-system-info")
        kwargs: dict = {}
        if os.name == "posix":
            kwargs["start_new_session"] = True  # Ctrl-C in the terminal is pytest's
        else:
            kwargs["creationflags"] = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
        try:
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    close_fds=True,
                    cwd=self.tmpdir,  # so that no package in the user's cwd shadows ours
                    **kwargs,
                )
        except OSError as exc:
            self.problem = f"cannot start the monitor: {exc}"
            return
        self.endpoint = self._read_endpoint(endpoint_file) if endpoint_file else endpoint

    @property
    def pid(self) -> Optional[int]:
        return None if self.proc is None else self.proc.pid

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
        return self.proc is not None and self.proc.poll() is None

    def describe(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").strip().splitlines()
        except OSError:
            lines = []
        if self.proc is None:
            code = "not started"
        elif self.proc.poll() is not None:
            code = f"exit code {self.proc.returncode}"
        else:
            code = "still running"
        return f"{lines[-1]} ({code})" if lines else code

    def silence(self) -> None:
        if self.alive() and self.proc is not None:  # alive() implies a process
            self.proc.kill()
            self.reap()

    def reap(self, wrote_report: bool = True) -> None:
        proc = self.proc
        if proc is not None:
            if not wrote_report and proc.poll() is None:
                proc.terminate()  # the session never finished (an error before the tests)
            try:
                proc.wait(REAP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(REAP_TIMEOUT)
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None


class JoinedDaemon:
    """A perfmon-daemon that runs on its own: not ours to start, watch or stop.

    Whether it is gone is told by the connection (the client's socket events), so a killed or
    stopped daemon ends every wait at once.
    """

    ready_timeout = DAEMON_READY_TIMEOUT
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

    def reap(self, wrote_report: bool = True) -> None:
        pass


def make_handle(settings: Settings) -> SpawnedMonitor | JoinedDaemon:
    if settings.daemon:
        return JoinedDaemon(settings.daemon)
    return SpawnedMonitor(settings)
