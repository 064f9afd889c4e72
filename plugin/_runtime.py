"""Everything --perf-monitor switches on: process roles, boundary counters, the ZeroMQ client.

Roles, chosen once in :func:`configure`:

* ``LocalSession``: plain pytest. Spawns and owns the monitor, measures every test, sends batches.
* ``ControllerSession``: the xdist controller. Spawns and owns the monitor, hands its endpoint to
  the workers, runs no tests.
* ``WorkerSession``: an xdist worker. Measures and sends to the controller's monitor; never spawns.

The measured path is ``Measurer.pytest_runtest_protocol`` and ``pytest_runtest_logreport``: a few
kernel counters read at the test's boundaries and one list appended per test; a batch is sent
every ``BATCH_RECORDS`` tests or ``BATCH_SECONDS`` seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import deque
from typing import Any, Callable, Optional

import pytest
import zmq
from pytest_perfmon.monitor import protocol as P
from pytest_perfmon.monitor import report as R

# The real clocks, captured at import: freezegun / time-machine in a user's tests patch module
# attributes named like these, never these bound references.
_time = time.time
_perf = time.perf_counter
_cpu = time.process_time

BATCH_RECORDS = 128
BATCH_SECONDS = 0.5
READY_TIMEOUT = 20.0  # first test waits at most this long for a monitor we spawned
DAEMON_READY_TIMEOUT = 5.0  # ... for a perfmon-daemon, which is up already or not at all
BYE_TIMEOUT = 10.0
DONE_TIMEOUT = 120.0  # the monitor writing the report (100k tests take a few seconds)
REAP_TIMEOUT = 5.0

PLUGIN_NAME = "perfmon-session"
IPC_PATH_MAX = 100  # sockaddr_un holds 104-108 bytes, depending on the system


# --- boundary counters --------------------------------------------------------------------------


def _none() -> None:
    return None


class Counters:
    """Kernel counters read at test boundaries: RSS, peak RSS since the last reset.

    Linux: /proc/self/statm for RSS, VmHWM of /proc/self/status for the peak, reset by writing
    "5" to /proc/self/clear_refs. Elsewhere (or where /proc refuses), every reader returns None
    and the monitor's samples decide; ``methods`` tells the monitor which is which.
    """

    def __init__(self) -> None:
        self.rss: Callable[[], Optional[int]] = _none
        self.peak: Callable[[], Optional[int]] = _none
        self.reset: Callable[[], Optional[int]] = _none
        self.fds: list = []
        self.methods = {"rss": False, "peak": False}
        if not sys.platform.startswith("linux"):
            return
        pread = os.pread
        try:
            statm = os.open("/proc/self/statm", os.O_RDONLY)
            self.fds.append(statm)
            page = os.sysconf("SC_PAGE_SIZE")

            def rss() -> int:
                return int(pread(statm, 96, 0).split()[1]) * page

            rss()
            self.rss = rss
            self.methods["rss"] = True
        except (OSError, ValueError, IndexError):
            return
        try:
            status = os.open("/proc/self/status", os.O_RDONLY)
            self.fds.append(status)
            clear = os.open("/proc/self/clear_refs", os.O_WRONLY)
            self.fds.append(clear)
            write = os.write

            def reset() -> int:
                return write(clear, b"5")

            def vmhwm() -> int:
                data = pread(status, 4096, 0)
                i = data.index(b"VmHWM:") + 6
                return int(data[i : data.index(b"kB", i)]) * 1024

            reset()
            if vmhwm() <= 0:
                raise ValueError("VmHWM not maintained")
            # getrusage's ru_maxrss is max(VmHWM, a floor the kernel set at exec from the
            # process we were spawned from), and costs a fraction of parsing /proc/self/status.
            # Read right after a reset it is an upper bound of that floor: any value above it
            # is VmHWM itself; at or below it, /proc/self/status decides.
            import resource

            getrusage = resource.getrusage
            me = resource.RUSAGE_SELF
            floor = getrusage(me).ru_maxrss

            def peak() -> int:
                kb = getrusage(me).ru_maxrss
                return kb * 1024 if kb > floor else vmhwm()

            self.reset, self.peak = reset, peak
            self.methods["peak"] = True
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []


# --- the ZeroMQ client --------------------------------------------------------------------------


class Client:
    """A DEALER socket to the monitor. Batches are fire-and-forget; hello/bye/finish wait (bounded).

    Every batch frame sent is kept until the end, so that nothing measured is lost if the
    monitor dies: the owner then writes the report itself from these frames.
    """

    def __init__(self, endpoint: str, daemon: bool = False) -> None:
        self.ctx = zmq.Context(io_threads=1)
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 100000)
        self.frames: list = []
        self.ready = False
        self.alive = True  # False once we know the monitor cannot take our data
        self.problem: Optional[str] = None
        # A perfmon-daemon bound to a non-loopback address speaks CURVE only; a monitor we
        # spawned never does.
        secret = os.environ.get("PERFMON_CURVE_SECRET_KEY") if daemon else None
        server = os.environ.get("PERFMON_CURVE_SERVER_KEY") if daemon else None
        if secret and server:
            try:
                from zmq.auth import load_certificate

                public, secret_key = load_certificate(secret)
                self.sock.curve_secretkey = secret_key
                self.sock.curve_publickey = public
                self.sock.curve_serverkey = load_certificate(server)[0]
            except (OSError, ValueError, zmq.ZMQError) as exc:
                self.alive = False
                self.problem = f"cannot use the CURVE keys in PERFMON_CURVE_*: {exc}"
        # We usually connect before the monitor has bound: retry every 10 ms, not every 100.
        self.sock.setsockopt(zmq.RECONNECT_IVL, 10)
        try:
            self.sock.connect(endpoint)
        except zmq.ZMQError as exc:  # a malformed endpoint, a path too long for ipc://
            self.alive = False
            self.problem = f"cannot connect to {endpoint}: {exc}"

    def send(self, frame: bytes) -> bool:
        try:
            self.sock.send(frame, zmq.NOBLOCK)
            return True
        except zmq.ZMQError:
            return False

    def batch(self, records: list) -> None:
        frame = P.pack(P.BATCH, [len(self.frames), records])
        self.frames.append(frame)
        if self.alive:
            self.send(frame)  # a frame that could not go now is resent after "bye" reports it

    def wait(
        self, kind: str, timeout: float, alive: Optional[Callable[[], bool]] = None
    ) -> Optional[Any]:
        """Wait at most ``timeout`` seconds for a reply of ``kind``; None on timeout/death."""
        deadline = _perf() + timeout
        while True:
            left = deadline - _perf()
            if left <= 0:
                return None
            if self.sock.poll(min(left, 0.1) * 1000, zmq.POLLIN):
                try:
                    got, body = P.unpack(self.sock.recv(zmq.NOBLOCK))
                except (P.ProtocolError, zmq.ZMQError):
                    continue
                if got == kind:
                    return body
                if got == P.ERROR and isinstance(body, dict):
                    self.problem = f"monitor refused: {body.get('message')}"
                    return None
            elif alive is not None and not alive():
                return None

    def bye(self, alive: Optional[Callable[[], bool]] = None) -> bool:
        """Say goodbye; resend whatever the monitor reports missing. True once all arrived."""
        for _ in range(3):
            if not self.send(P.pack(P.BYE, {"sent": len(self.frames)})):
                return False
            ack = self.wait(P.ACK, BYE_TIMEOUT, alive)
            if not isinstance(ack, dict):
                return False
            missing = ack.get("missing") or []
            if not missing:
                return True
            for seq in missing:
                if isinstance(seq, int) and 0 <= seq < len(self.frames):
                    self.send(self.frames[seq])
        return False

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


# --- the measuring role -------------------------------------------------------------------------


class Measurer:
    """Hooks that run in the process that runs tests (plain pytest, or an xdist worker)."""

    wid = "main"

    def start_measuring(self, client: Optional[Client]) -> None:
        self.client = client
        self.counters = Counters()
        self.buf: list = []
        self.phase: dict = {}
        self.outcome = "passed"
        self.last_flush = _perf()
        self.start = _time()

    session_id: Optional[str] = None

    def hello(self, role: str) -> None:
        if self.client is not None:
            self.client.send(
                P.pack(
                    P.HELLO,
                    {
                        "session": self.session_id,
                        "role": role,
                        "pid": os.getpid(),
                        "worker": self.wid,
                        "methods": self.counters.methods,
                        "python": ".".join(map(str, sys.version_info[:3])),
                    },
                )
            )

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: Optional[pytest.Item]) -> Any:
        counters = self.counters
        self.phase = phase = {}
        self.outcome = "passed"
        counters.reset()
        rss0 = counters.rss()
        t0 = _time()
        p0 = _perf()
        c0 = _cpu()
        self.cur = (rss0, p0, c0)
        result = yield
        if result.excinfo is not None:  # pytest.exit(), Ctrl-C: the test did not finish
            return
        c1 = _cpu()
        p1 = _perf()
        t1 = _time()
        peak = counters.peak()
        rss1 = counters.rss()
        buf = self.buf
        buf.append(
            [
                item.nodeid.encode("utf-8", "surrogateescape"),
                t0,
                t1,
                phase.get("setup"),
                phase.get("call"),
                phase.get("teardown"),
                self.outcome,
                rss0,
                peak,
                rss1,
                c1 - c0,
                p1 - p0,
            ]
        )
        if len(buf) >= BATCH_RECORDS or p1 - self.last_flush > BATCH_SECONDS:
            self.flush(p1)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.phase[report.when] = report.duration
        self.outcome = _outcome(report, self.outcome)

    def flush(self, now: Optional[float] = None) -> None:
        if self.buf:
            if self.client is not None:
                self.client.batch(self.buf)
            else:
                self.local_records.extend(self.buf)
            self.buf = []
        self.last_flush = _perf() if now is None else now

    @property
    def local_records(self) -> list:
        # Only used when no client could be made at all: records stay in this process.
        if not hasattr(self, "_local"):
            self._local: list = []
        return self._local

    def records(self) -> list:
        """Every record measured here, decoded (for a report written without the monitor)."""
        out = list(getattr(self, "_local", []))
        if self.client is not None:
            out.extend(frames_to_records(self.client.frames))
        return [P.check_record(r) for r in out]

    def wait_ready(self, timeout: float, alive: Optional[Callable[[], bool]] = None) -> None:
        client = self.client
        if client is None or client.ready or not client.alive:
            return
        if client.wait(P.READY, timeout, alive) is None:
            client.alive = False
            if client.problem is None:
                client.problem = f"no answer within {timeout:.0f} s"
        else:
            client.ready = True


_PHASE = {"setup": 3, "call": 4, "teardown": 5}


def _outcome(report: Any, current: str) -> str:
    """The test's outcome so far, after one more phase report."""
    if report.passed:
        if report.when == "call":
            return "xpassed" if hasattr(report, "wasxfail") else "passed"
        return current
    if report.failed:
        if report.when == "call" or current == "failed":
            return "failed"  # a teardown error after a failed call: pytest shows both
        return "error"
    if report.skipped:
        return "xfailed" if hasattr(report, "wasxfail") else "skipped"
    return current


def _worker_id(node: Any) -> Optional[str]:
    workerinput = getattr(node, "workerinput", None)
    if isinstance(workerinput, dict) and "workerid" in workerinput:
        return str(workerinput["workerid"])
    return getattr(getattr(node, "gateway", None), "id", None)


def _add_missing(w: R.Worker, recent: list) -> None:
    """Add the controller's records of tests this worker finished but never sent."""
    have = {r[0] for r in w.records}
    for rec in recent:
        rec = P.check_record(list(rec))
        if rec[0] not in have:
            w.records.append(rec)


def _pid_alive(pid: int) -> bool:
    """Is this process (our monitor, spawned by the xdist controller) still running?"""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except FileNotFoundError:
        return False
    except OSError:
        pass
    import psutil  # no /proc: only here, and only while waiting

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def frames_to_records(frames: list) -> list:
    out: list = []
    for frame in frames:
        _, (_, recs) = P.unpack(frame)
        out.extend(recs)
    return out


# --- the owning roles ---------------------------------------------------------------------------


class Owner:
    """Spawns the monitor process, finishes the session through it, reaps it."""

    config: pytest.Config
    settings: dict

    def spawn(self) -> Optional[str]:
        """Start the monitor; return its endpoint, or None (with self.warnings set) on failure.

        With --perf-daemon nothing is started: the daemon's endpoint is returned.
        """
        self.warnings: list = []
        self.proc: Optional[subprocess.Popen] = None
        self.tmpdir: Optional[str] = None
        self.report: Optional[dict] = None
        self.report_path: Optional[str] = None
        self.session_id = uuid.uuid4().hex
        if self.settings.get("daemon"):
            return self.settings["daemon"]
        self.tmpdir = tempfile.mkdtemp(prefix="perfmon-")  # mode 0700
        endpoint_file = None
        sock_path = os.path.join(self.tmpdir, "monitor.sock")
        if os.name == "posix" and zmq.has("ipc") and len(sock_path.encode()) < IPC_PATH_MAX:
            endpoint = "ipc://" + sock_path
        else:  # no ipc:// here, or a TMPDIR too long for a socket path
            endpoint = "tcp://127.0.0.1:0"
            endpoint_file = os.path.join(self.tmpdir, "endpoint")
        s = self.settings
        python = os.environ.get("PERFMON_MONITOR_PYTHON") or sys.executable
        cmd = [
            python,
            "-m",
            "pytest_perfmon.monitor.monitor",
            "--endpoint",
            endpoint,
            "--output",
            s["output"],
            "--interval",
            repr(s["interval"]),
            "--parent",
            str(os.getpid()),
        ]
        if endpoint_file:
            cmd += ["--endpoint-file", endpoint_file]
        if not s["system_info"]:
            cmd.append("--no-system-info")
        self.log_path = os.path.join(self.tmpdir, "monitor.log")
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
                    cwd=self.tmpdir,  # so that no package in the user's cwd shadows perfmon
                    **kwargs,
                )
        except OSError as exc:
            self.warnings.append(f"cannot start the monitor: {exc}")
            return None
        if endpoint_file:
            endpoint = self._read_endpoint(endpoint_file)
        return endpoint

    def _read_endpoint(self, path: str) -> Optional[str]:
        deadline = _perf() + READY_TIMEOUT
        while _perf() < deadline and self.monitor_alive():
            try:
                with open(path) as f:
                    return f.read().strip()
            except OSError:
                time.sleep(0.01)
        self.warnings.append("the monitor did not publish its endpoint: " + self._log_tail())
        return None

    def monitor_alive(self) -> bool:
        if self.settings.get("daemon"):
            return True  # not ours to watch: every wait on it is bounded by its timeout
        return self.proc is not None and self.proc.poll() is None

    def _log_tail(self) -> str:
        if self.settings.get("daemon"):
            return f"daemon {self.settings['daemon']}"
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").strip().splitlines()
        except OSError:
            lines = []
        if self.proc is not None and self.proc.poll() is not None:
            code = f"exit code {self.proc.returncode}"
        else:
            code = "still running"
        return f"{lines[-1]} ({code})" if lines else code

    def session_info(self, exitstatus: Any) -> dict:
        return {
            "session": self.session_id,
            "start": self.start,
            "stop": _time(),
            "exit_status": int(exitstatus),
            "pytest_version": pytest.__version__,
            "warnings": list(self.warnings),
            # for a daemon, which writes each session's own report as well as its combined one
            "output": self.settings["output"],
            "system_info": self.settings["system_info"],
        }

    def send_finish(self, client: Optional[Client], info: dict) -> bool:
        """Ask the monitor to write the report; :meth:`complete` waits for its answer."""
        if client is None or not client.alive or not self.monitor_alive():
            return False
        return client.send(P.pack(P.FINISH, info))

    def await_done(self, client: Client) -> bool:
        """Wait (bounded) for the monitor's answer to finish. True when it wrote the report."""
        done = client.wait(P.DONE, DONE_TIMEOUT, self.monitor_alive)
        if not isinstance(done, dict):
            return False
        if done.get("ok"):
            self.report_path = done.get("path")
            return True
        # The monitor could not write where asked; it says where the report went instead.
        self.warnings.append(str(done.get("error")))
        if done.get("saved_to"):
            self.report_path = done["saved_to"]
            return True
        return False  # no report anywhere: the plugin writes its own

    # The session ends in two steps, so that the monitor writes the report while pytest does
    # its own end-of-session work (other plugins' sessionfinish, the terminal summary):
    # pytest_sessionfinish (tryfirst) sends "finish"; complete() waits for "done" just before
    # our terminal summary (trylast), or in pytest_unconfigure without a terminal.
    finishing = False
    completed = False
    info: dict = {}
    warned = 0  # warnings already shown in the terminal summary

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: Any) -> None:
        try:
            self.finishing = self.start_finish(exitstatus)
        except Exception as exc:  # never let our failure become the session's
            self.finishing = False
            self.info = self.info or self.session_info(exitstatus)
            self.warnings.append(f"internal error while finishing: {exc!r}")

    def start_finish(self, exitstatus: Any) -> bool:
        raise NotImplementedError

    def write_fallback(self) -> None:
        raise NotImplementedError

    def complete(self) -> None:
        if self.completed:
            return
        self.completed = True
        client = self.client
        ok = False
        try:
            if self.finishing and client is not None:
                ok = self.await_done(client)
            if not ok:
                # A monitor that is alive but not answering must not write (its aborted
                # report) over ours: stop it first, without letting it write.
                if self.proc is not None and self.proc.poll() is None:
                    self.proc.kill()
                    self.reap()
                self.write_fallback()
        except Exception as exc:  # never let our failure become the session's
            self.warnings.append(f"internal error while writing the report: {exc!r}")
        finally:
            if client is not None:
                client.close()
            if isinstance(self, Measurer):
                self.counters.close()
            # The monitor exits by itself after "done": reaped in pytest_unconfigure, after the
            # terminal summary, so its exit overlaps our own output.

    def fallback(self, data: R.RunData, info: dict) -> None:
        """Write the report from the plugin's own measurements (the monitor is gone)."""
        data.collector = "plugin-fallback"
        info["warnings"] = list(self.warnings)
        data.warnings = list(self.warnings)
        system = R.system_info() if self.settings["system_info"] else None
        report = R.build(data, info, system)
        path = self.settings["output"]
        try:
            R.write_atomic(report, path)
        except OSError as exc:
            self.warnings.append(f"cannot write {path}: {exc.strerror or exc}")
            path = R.save_elsewhere(report)
            if path:
                self.warnings.append(f"report saved to {path} instead")
        self.report_path = path
        self.report = report

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self.info:  # the session ran; without a terminal summary, complete it here
            self.complete()
            for w in self.warnings[self.warned :]:
                print(f"perfmon: warning: {w}", file=sys.stderr)
        if self.proc is not None and self.proc.poll() is None and self.report_path is None:
            self.proc.terminate()  # the session never finished (an error before the tests)
        self.reap()

    def reap(self) -> None:
        proc = self.proc
        if proc is not None:
            try:
                proc.wait(REAP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(REAP_TIMEOUT)
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    # -- terminal output --------------------------------------------------------------------
    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        tr = terminalreporter
        if self.info:
            self.complete()
        for w in self.warnings:
            tr.write_line(f"perfmon: warning: {w}", yellow=True)
        self.warned = len(self.warnings)
        if self.report_path is None:
            return
        if self.settings["print_summary"]:
            report = self.report
            if report is None:
                try:
                    with open(self.report_path, encoding="utf-8") as f:
                        report = json.load(f)
                except (OSError, ValueError) as exc:
                    tr.write_line(f"perfmon: warning: cannot read the report back: {exc}")
                    return
            from ._summary import write_summary

            write_summary(tr, report)
            self._step_summary(tr, report)
        if tr.config.option.verbose >= 0:
            tr.write_line(f"perfmon: report written to {self.report_path}")

    def _step_summary(self, tr: Any, report: dict) -> None:
        """On GitHub Actions, the summary also goes to the job's step summary, as Markdown."""
        path = os.environ.get("GITHUB_STEP_SUMMARY")
        if not path:
            return
        from pytest_perfmon.monitor import cli

        try:
            data = cli.report_data(report, self.report_path or "", 10, 10.0, 80.0)
            with open(path, "a", encoding="utf-8") as f:
                f.write(cli.report_doc(data).markdown() + "\n")
        except Exception as exc:
            tr.write_line(
                f"perfmon: warning: cannot append to GITHUB_STEP_SUMMARY {path}: "
                f"{getattr(exc, 'strerror', None) or exc}",
                yellow=True,
            )


class JUnitProperties:
    """With --junitxml: each test's metrics also as <property> elements of its <testcase>.

    pytest's junitxml plugin reads ``report.user_properties`` of the teardown report, which is
    logged before our measurement of the test ends; the values here are read at that moment
    (microseconds before the report's own), from the same counters.
    """

    def __init__(self, measurer: Measurer) -> None:
        self.m = measurer

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "teardown":
            return
        m = self.m
        rss0, p0, c0 = m.cur
        wall = _perf() - p0
        cpu = _cpu() - c0
        phase = m.phase
        total = (phase.get("setup") or 0) + (phase.get("call") or 0) + (report.duration or 0)
        props = [("perf_duration", f"{total:.6f}")]
        if rss0 is not None:
            peak = m.counters.peak()
            rss1 = m.counters.rss()
            props += [
                ("perf_memory_start_mb", f"{rss0 / R.MB:.3f}"),
                ("perf_memory_end_mb", f"{rss1 / R.MB:.3f}"),
                ("perf_memory_delta_mb", f"{(rss1 - rss0) / R.MB:.3f}"),
            ]
            if peak is not None:
                props.append(("perf_memory_peak_mb", f"{max(peak, rss0, rss1) / R.MB:.3f}"))
        if wall > 0:
            props.append(("perf_cpu_percent", f"{100.0 * cpu / wall:.1f}"))
        report.user_properties.extend(props)


class LocalSession(Measurer, Owner):
    """Plain pytest: one process that owns the monitor and runs the tests."""

    def __init__(self, config: pytest.Config, settings: dict) -> None:
        self.config = config
        self.settings = settings
        endpoint = self.spawn()
        self.start_measuring(Client(endpoint, bool(settings["daemon"])) if endpoint else None)
        self.hello("local")

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Any:
        self.wait_ready(
            DAEMON_READY_TIMEOUT if self.settings["daemon"] else READY_TIMEOUT, self.monitor_alive
        )
        if self.client is not None and not self.client.ready:
            what = (
                f"the perfmon daemon at {self.settings['daemon']} is not answering"
                if self.settings["daemon"]
                else "the monitor is not running"
            )
            self.warnings.append(
                f"{what} ({self.client.problem or self._log_tail()}); "
                "measuring in pytest, without sampling"
            )
        yield

    def start_finish(self, exitstatus: Any) -> bool:
        self.info = self.session_info(exitstatus)
        self.flush()
        client = self.client
        if client is None or not client.ready or not client.alive or not self.monitor_alive():
            return False
        return client.bye(self.monitor_alive) and self.send_finish(client, self.info)

    def write_fallback(self) -> None:
        if self.client is not None and self.client.ready:
            self.warnings.append(
                f"the monitor stopped during the run ({self._log_tail()}); "
                "report written by the plugin from its own measurements"
            )
        data = R.RunData()
        w = R.Worker("main", os.getpid(), self.start, records=self.records())
        w.boundary_methods = self.counters.methods
        data.workers["main"] = w
        self.fallback(data, self.info)


class ControllerSession(Owner):
    """The xdist controller: owns the monitor, tells workers where it is, runs no tests."""

    def __init__(self, config: pytest.Config, settings: dict) -> None:
        self.config = config
        self.settings = settings
        self.start = _time()
        endpoint = self.spawn()
        self.endpoint = endpoint
        self.client = Client(endpoint, bool(settings["daemon"])) if endpoint else None
        self.worker_data: dict = {}  # wid -> (pid, joined, methods, frames) from workeroutput
        self.crashed: list = []
        self.started: dict = {}  # nodeid -> time the controller heard it start
        self.running: dict = {}  # nodeid -> record being filled from the workers' reports
        self.recent: dict = {}  # worker id -> deque of its latest finished records
        if self.client is not None:
            hello = {"session": self.session_id, "role": "controller", "pid": os.getpid()}
            self.client.send(P.pack(P.HELLO, hello))

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """With a daemon, learn before the workers start whether it answers (bounded)."""
        client = self.client
        if not self.settings["daemon"] or client is None or not client.alive:
            return
        if client.wait(P.READY, DAEMON_READY_TIMEOUT) is None:
            client.alive = False
            self.warnings.append(
                f"the perfmon daemon at {self.settings['daemon']} is not answering "
                f"({client.problem or f'no answer within {DAEMON_READY_TIMEOUT:.0f} s'}); "
                "the workers measure on their own, report written by the plugin"
            )
        else:
            client.ready = True

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        # An empty endpoint still switches measuring on: the worker then hands its records
        # back through workeroutput, and this process writes the report.
        usable = self.client is not None and self.client.alive and self.monitor_alive()
        node.workerinput["perfmon_endpoint"] = (self.endpoint or "") if usable else ""
        node.workerinput["perfmon_monitor_pid"] = None if self.proc is None else self.proc.pid
        node.workerinput["perfmon_session"] = self.session_id
        node.workerinput["perfmon_daemon"] = bool(self.settings["daemon"])
        node.workerinput["perfmon_junit"] = bool(getattr(self.config.option, "xmlpath", None))

    # The controller sees every test start and every report as the workers send them. It keeps
    # each worker's latest tests, so that a worker that dies mid-test loses nothing it had not
    # yet sent: pytest's own times and outcome, with memory from the monitor's samples.
    def pytest_runtest_logstart(self, nodeid: str, location: Any) -> None:
        self.started[nodeid] = _time()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        node = getattr(report, "node", None)
        if node is None or report.when not in ("setup", "call", "teardown"):
            return
        rec = self.running.get(report.nodeid)
        if rec is None:
            start = self.started.pop(report.nodeid, None) or getattr(report, "start", _time())
            rec = self.running[report.nodeid] = [
                report.nodeid.encode("utf-8", "surrogateescape"),
                start,
                start,
                None,
                None,
                None,
                "passed",
                None,
                None,
                None,
                None,
                None,
            ]
        rec[_PHASE[report.when]] = report.duration
        rec[6] = _outcome(report, rec[6])
        if report.when == "teardown":
            del self.running[report.nodeid]
            rec[2] = getattr(report, "stop", None) or _time()
            wid = _worker_id(node)
            recent = self.recent.get(wid)
            if recent is None:
                recent = self.recent[wid] = deque(maxlen=2 * BATCH_RECORDS + 64)
            recent.append(rec)

    @pytest.hookimpl(optionalhook=True)
    def pytest_handlecrashitem(self, crashitem: str, report: Any, sched: Any) -> None:
        wid = _worker_id(getattr(report, "node", None))
        self.running.pop(crashitem, None)
        crash = {
            "nodeid": crashitem,
            "worker": wid,
            "time": _time(),
            "start": self.started.pop(crashitem, None),
            "recent": list(self.recent.pop(wid, ())),
        }
        self.crashed.append(crash)
        if self.client is not None:
            self.client.send(P.pack(P.CRASH, crash))

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        out = getattr(node, "workeroutput", None) or {}
        data = out.get("perfmon")
        if isinstance(data, dict):
            self.worker_data[data.get("worker")] = data

    def start_finish(self, exitstatus: Any) -> bool:
        self.info = self.session_info(exitstatus)
        # Tests of workers whose goodbye the monitor never acknowledged may not have reached it.
        self.info["records_dropped"] = sum(
            len(frames_to_records(d.get("frames", [])))
            for d in self.worker_data.values()
            if not d.get("delivered", True)
        )
        return self.send_finish(self.client, self.info)

    def write_fallback(self) -> None:
        if self.proc is not None:
            self.warnings.append(
                f"the monitor stopped during the run ({self._log_tail()}); "
                "report written by the plugin from the workers' own measurements"
            )
        data = R.RunData()
        for wid, d in self.worker_data.items():
            recs = [P.check_record(r) for r in frames_to_records(d.get("frames", []))]
            w = R.Worker(str(wid), int(d.get("pid", 0)), float(d.get("joined", 0)))
            w.records = recs
            w.boundary_methods = d.get("methods")
            data.workers[w.wid] = w
        for crash in self.crashed:
            w = data.workers.get(crash["worker"])
            if w is not None:
                _add_missing(w, crash["recent"])
        data.crashed = list(self.crashed)
        self.fallback(data, self.info)


class WorkerSession(Measurer):
    """An xdist worker: measures its tests and sends them to the controller's monitor."""

    def __init__(
        self, config: pytest.Config, endpoint: str, wid: str, session_id: Optional[str]
    ) -> None:
        self.config = config
        self.wid = wid
        self.session_id = session_id
        self.daemon = bool(config.workerinput.get("perfmon_daemon"))  # type: ignore[attr-defined]
        self.monitor_pid = config.workerinput.get("perfmon_monitor_pid")  # type: ignore[attr-defined]
        self.start_measuring(Client(endpoint, self.daemon) if endpoint else None)
        self.hello("worker")

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Any:
        self.wait_ready(
            DAEMON_READY_TIMEOUT if self.daemon else READY_TIMEOUT,
            None if self.monitor_pid is None else (lambda: _pid_alive(self.monitor_pid)),
        )
        yield

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: Any) -> None:
        self.flush()
        client = self.client
        try:
            delivered = False
            if client is not None and client.ready and client.alive:
                alive = None if self.monitor_pid is None else lambda: _pid_alive(self.monitor_pid)
                delivered = client.bye(alive)
            # The controller keeps these in case the monitor dies before writing the report.
            frames = client.frames if client is not None else []
            if self.local_records:
                frames = frames + [P.pack(P.BATCH, [len(frames), self.local_records])]
            self.config.workeroutput["perfmon"] = {  # type: ignore[attr-defined]
                "worker": self.wid,
                "pid": os.getpid(),
                "joined": self.start,
                "methods": self.counters.methods,
                "frames": frames,
                "delivered": delivered,
            }
        finally:
            if client is not None:
                client.close()
            self.counters.close()


def configure(config: pytest.Config, settings: dict) -> None:
    """Pick this process's role once: xdist controller, or plain pytest."""
    # xdist distributes only with a mode and somewhere to run (-n/--tx), as its own check does:
    # `--dist loadscope` in addopts without -n runs the tests in this process.
    if getattr(config.option, "dist", "no") != "no" and getattr(config.option, "tx", None):
        role: Any = ControllerSession(config, settings)
    else:
        role = LocalSession(config, settings)
    config.pluginmanager.register(role, PLUGIN_NAME)
    if isinstance(role, Measurer):
        _junit(config, role)


def _junit(config: pytest.Config, measurer: Measurer) -> None:
    if getattr(config.option, "xmlpath", None) or getattr(config, "workerinput", {}).get(
        "perfmon_junit"
    ):
        config.pluginmanager.register(JUnitProperties(measurer), PLUGIN_NAME + "-junit")


def configure_worker(config: pytest.Config, workerinput: dict) -> None:
    """An xdist worker whose controller monitors: measure and report to its monitor."""
    role = WorkerSession(
        config,
        workerinput["perfmon_endpoint"],
        str(workerinput["workerid"]),
        workerinput.get("perfmon_session"),
    )
    config.pluginmanager.register(role, PLUGIN_NAME)
    _junit(config, role)
