"""Process roles, one class each, chosen once (:func:`configure`, :func:`configure_worker`):

* :class:`LocalSession`: plain pytest. Owns the collector (a monitor it spawns, or a daemon it
  joins), measures every test, sends batches, ends the session.
* :class:`ControllerSession`: the xdist controller. Owns the collector, hands its endpoint to
  the workers, runs no tests, ends the session.
* :class:`WorkerSession`: an xdist worker. Measures and sends to its controller's collector;
  never spawns anything.

The parts are composed, not inherited: a :class:`~._handle.SpawnedMonitor` or
:class:`~._handle.JoinedDaemon` (the collector), a :class:`~._client.Client` (the socket), a
:class:`~._measure.Measurer` (the measured path) and a :class:`~._owner.SessionOwner` (the end).
"""

from __future__ import annotations

import os
import sys
from collections import deque
from typing import Any, Callable, Optional

import pytest
from pytest_perfmon.monitor import protocol
from pytest_perfmon.monitor import report as report_model
from pytest_perfmon.monitor import slots as slot_files

from . import _clock, _endings
from ._client import CONNECT_GRACE, Client, frames_to_records
from ._handle import DAEMON_READY_TIMEOUT, READY_TIMEOUT, Early, make_handle
from ._measure import JUnitProperties, Measurer, outcome_after
from ._owner import MAX_RESTARTS, SessionOwner
from ._settings import Settings

PLUGIN_NAME = "perfmon-session"

_time = _clock.now  # the real clock (._clock)

_PHASE = {"setup": protocol.SETUP, "call": protocol.CALL, "teardown": protocol.TEARDOWN}


def wait_ready(
    client: Optional[Client],
    timeout: float,
    alive: Optional[Callable[[], bool]],
    connect_grace: Optional[float],
) -> bool:
    """Wait (bounded) for the collector's ``ready``; True when it answered."""
    if client is None or not client.alive:
        return False
    if client.ready:
        return True
    if client.wait(protocol.READY, timeout, alive, connect_grace) is None:
        client.alive = False
        if alive is None or alive():  # else the monitor ended: its handle says how
            client.problem = client.problem or f"no answer within {timeout:.0f} s"
        return False
    client.ready = True
    return True


def fell_back(owner: SessionOwner) -> bool:
    """The forked monitor ended before its ready: the launcher's in its place (once), the
    client connected to it again (our hello re-sent); True when its ready can be awaited."""
    client = owner.client
    if client is None or not owner.handle.fall_back():
        return False
    client.alive, client.problem = True, None
    return client.reconnect()


def hello(client: Optional[Client], session: Optional[str], role: str, **fields: Any) -> None:
    if client is not None and client.alive:
        body = {"session": session, "role": role, "pid": os.getpid(), **fields}
        if body.get("host") is None:
            body.pop("host", None)
        client.send_kept(protocol.pack(protocol.HELLO, body))  # a replacing monitor hears it again


def _python() -> str:
    return ".".join(map(str, sys.version_info[:3]))


def _private_dir(handle: Any) -> Optional[str]:
    """The spawned monitor's private directory (where the slots go); None for a daemon."""
    return getattr(handle, "tmpdir", None)


def _idle(endings: Optional[_endings.Endings]) -> None:
    if endings is not None:
        endings.slot.idle(_time())


def _close(endings: Optional[_endings.Endings], measurer: Optional[Measurer] = None) -> None:
    if measurer is not None:
        measurer.slot = None
    if endings is not None:
        endings.uninstall()
        endings.slot.close()


def _profile_fields(settings: Settings, owner: SessionOwner, handle: Any) -> dict:
    """--perf-profile: the hello's ``profile`` field ({} when off), and the warning when a daemon
    collects (it does not sample). ``handle``: the collector's, whose monitor pid py-spy needs
    (None: not asked). Its pid is read only when profiling: reading it waits for the launcher to
    exit (tens of ms), which without a profile happens off the critical path, before the first
    test."""
    if settings.profile is None:
        return {}
    from . import _profile

    monitor_pid = handle.pid if handle is not None else None

    warning = _profile.daemon_warning(settings)
    if warning is not None:
        owner.warnings.append(warning)
    return _profile.hello_fields(_profile.request(settings), monitor_pid)


def _worker_profile(workerinput: dict, monitor_pid: Optional[int]) -> dict:
    """An xdist worker's ``profile`` field, as its controller asked ({} when off)."""
    profile = workerinput.get("perfmon_profile")
    if not profile:
        return {}
    from . import _profile

    return _profile.hello_fields(profile, monitor_pid)


def _register_measurer(config: pytest.Config, measurer: Measurer, junit: bool) -> None:
    config.pluginmanager.register(measurer, PLUGIN_NAME + "-measure")
    if junit:
        config.pluginmanager.register(JUnitProperties(measurer), PLUGIN_NAME + "-junit")


def _relay_setting_problem() -> Optional[str]:
    """A remote worker's word on its host's relay setting (only where it is set at all)."""
    if not os.environ.get("PERFMON_RELAY_GRACE"):
        return None
    from .monitor.relay import grace_problem

    return grace_problem(os.environ)


class LocalSession:
    """Plain pytest: one process that owns the collector and runs the tests."""

    def __init__(
        self, config: pytest.Config, settings: Settings, early: Optional[Early] = None
    ) -> None:
        self.pid = os.getpid()  # a test's fork that runs on is another (_copy)
        handle = make_handle(settings, early)
        client = Client(handle.endpoint, bool(settings.daemon)) if handle.endpoint else None
        self.owner = owner = SessionOwner(settings, handle, client)
        self.measurer = Measurer("main", client)
        owner.collect = self._data
        owner.running_at = self._running_at
        self.endings = _endings.install(_private_dir(handle), "main", "local", self.measurer.queue)
        if self.endings is not None:
            self.measurer.slot = self.endings.slot
        hello(
            client,
            owner.session_id,
            "local",
            worker="main",
            methods=self.measurer.counters.methods,
            python=_python(),
            **_profile_fields(settings, owner, handle),
        )

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection(self, session: pytest.Session) -> None:
        self.owner.began = True  # past pytest_sessionstart: whatever ends it, a report

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Any:
        # Inside the session's timer: the time pytest reports includes this wait.
        owner = self.owner
        handle = owner.handle
        ok = wait_ready(owner.client, handle.ready_timeout, handle.alive, handle.connect_grace)
        if not ok and fell_back(owner):
            ok = wait_ready(owner.client, handle.ready_timeout, handle.alive, handle.connect_grace)
        handle.settle()  # the launcher reaped: no process of ours is a child of this one
        if ok:
            owner.joined = True
            self.measurer.start_sending(owner.replace_collector if handle.spawned else None)
        elif owner.client is not None:
            absent = "is not running" if handle.spawned else "is not answering"
            owner.warnings.append(
                f"{handle.name} {absent} ({owner.problem()}); measuring in pytest, without "
                "sampling; report written by the plugin"
            )
        yield
        _idle(self.endings)

    def pytest_keyboard_interrupt(self, excinfo: Any) -> None:
        self.owner.ended_by = _endings.what_ended(excinfo.value)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: Any) -> None:
        if _copy(self):
            return
        owner = self.owner
        running = [self.measurer.interrupted] if self.measurer.interrupted else []
        owner.note_ending(running, after=self.measurer.ended_after)
        owner.begin_finish(exitstatus, self._deliver)

    def _deliver(self) -> bool:
        """Hand the last records over; True when the collector acknowledged them all."""
        self.measurer.stop_sending()
        owner = self.owner
        client = owner.client
        if client is None or not client.ready:
            return False
        if owner.usable() and client.bye(owner.handle.alive):
            return True
        # A monitor that died after the sender's last look (in the last tests, or as we said
        # goodbye): replaced now, so that the report is still the monitor's, with its history.
        since = self.measurer.checked
        if since is None or not client.alive or client.abandoned:
            return False  # never sent, a replacement that failed, or a stuck sender
        if not owner.replace_collector(_time(), since):
            return False
        return client.bye(owner.handle.alive)

    def _running_at(self, since: float, until: float) -> list:
        """The tests that ran at some moment from ``since`` to ``until`` (where a monitor
        died), from our own records."""
        frames = self.measurer.frames()
        return [
            protocol.decode_nodeid(r[protocol.NODEID])
            for r in frames_to_records(frames)
            if r[protocol.START] <= until and r[protocol.STOP] >= since
        ]

    def _data(self) -> report_model.RunData:
        data = report_model.RunData()
        m = self.measurer
        w = report_model.Worker("main", os.getpid(), m.start, records=m.records())
        w.boundary_methods = m.counters.methods
        data.workers["main"] = w
        return data

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not _copy(self):
            self.owner.terminal_summary(terminalreporter)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if _copy(self):
            return
        try:
            self.measurer.stop_sending()  # a session that never reached sessionfinish
            _close(self.endings, self.measurer)
            self.owner.unconfigure()
        finally:
            self.measurer.counters.close()


def _copy(role: Any) -> bool:
    """Is this process a fork of the one the role measures in, running pytest on (a test that
    forks and whose child returns instead of exiting)? Its session's end is not ours: the
    collector's socket, the monitor, the slot and the report are the parent's (ZeroMQ's
    sockets do not survive a fork; touching one there spun forever)."""
    return os.getpid() != role.pid


def _worker_id(node: Any) -> Optional[str]:
    workerinput = getattr(node, "workerinput", None)
    if isinstance(workerinput, dict) and "workerid" in workerinput:
        return str(workerinput["workerid"])
    return getattr(getattr(node, "gateway", None), "id", None)


def _monitor_alive(directory: Optional[str], pid: int) -> bool:
    """Is the controller's monitor running? The one named in its private directory's pid file
    (a replacement has another pid), else the one the controller named at the start."""
    if directory:
        try:
            with open(os.path.join(directory, "monitor.pid")) as f:
                pid = int(f.read())
        except (OSError, ValueError):
            pass
    return _pid_alive(pid)


def _pid_alive(pid: int) -> bool:
    """Is this process (the monitor the xdist controller spawned) still running?"""
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


class ControllerSession:
    """The xdist controller: owns the collector, tells workers where it is, runs no tests."""

    def __init__(
        self, config: pytest.Config, settings: Settings, early: Optional[Early] = None
    ) -> None:
        self.config = config
        self.pid = os.getpid()
        handle = make_handle(settings, early)
        client = Client(handle.endpoint, bool(settings.daemon)) if handle.endpoint else None
        self.owner = owner = SessionOwner(settings, handle, client)
        owner.collect = self._data
        self.checked = False
        self.worker_data: dict = {}  # wid -> what the worker sent back through workeroutput
        self.crashed: list = []
        self.started: dict = {}  # nodeid -> time the controller heard it start
        self.running: dict = {}  # nodeid -> record being filled from the workers' reports
        self.where: dict = {}  # nodeid -> the worker running it (from its first report)
        self.recent: dict = {}  # worker id -> deque of its latest finished records
        #: The tests that finished since the last look at the collector's connection, as
        #: "NODEID (WORKER)": a monitor lost at the next look may have died during one of them.
        self.since_look: list = []
        self.measuring: set = set()  # workers that finished at least one test
        self.finished: dict = {}  # worker id -> how many tests it finished (as we saw them)
        #: Workers that died and whose every finished test we hold (the crash told them).
        self.covered: set = set()
        #: Watch our monitor's connection at each test's last report (its socket's events and
        #: its pidfd, a few microseconds in this process, which runs no test): set once the
        #: workers can use it.
        self.watching = False
        self.endings = _endings.install(_private_dir(handle), "controller", "controller")
        from pytest_perfmon.monitor.host import identity

        self.host = identity()
        self.handed_back: list = []  # remote workers whose records came back through xdist
        self.said_listen = False
        self.said_setting: set = set()  # hosts whose bad relay setting was said
        #: (the latest monitor_restarts entry, when its loss was noticed): a test that began
        #: before then, but whose first report this process reads only after, is named too
        self.lost_at: Optional[tuple] = None
        #: What pytest_internalerror said of the controller's own internal error, in words.
        self.internal_error: Optional[str] = None
        hello(client, owner.session_id, "controller")
        _profile_fields(settings, owner, None)

    def _check_collector(self) -> None:
        """Before the first worker starts: can the collector take the workers' data?

        Called from pytest_configure_node, which xdist calls from its pytest_sessionstart after
        the terminal's: the time pytest reports includes this wait.
        """
        self.checked = True
        owner = self.owner
        handle = owner.handle
        handle.settle()
        client = owner.client
        if not handle.spawned:  # a daemon: it answers at once, or is not there
            ok = wait_ready(client, handle.ready_timeout, handle.alive, handle.connect_grace)
            absent = "is not answering"
        else:  # our own monitor: the workers wait for its ready
            ok = owner.usable() or (fell_back(owner) and owner.usable())
            absent = "is not running"
        owner.joined = ok
        self.watching = ok and handle.spawned and client is not None
        if not ok and client is not None:
            owner.warnings.append(
                f"{handle.name} {absent} ({owner.problem()}); the workers measure on their "
                "own, report written by the plugin"
            )

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection(self, session: pytest.Session) -> None:
        self.owner.began = True  # past pytest_sessionstart: whatever ends it, a report

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        if not self.checked:
            self._check_collector()
        owner = self.owner
        # An empty endpoint still switches measuring on: the worker then hands its records
        # back through workeroutput, and this process writes the report.
        usable = owner.joined and owner.usable()
        wi = node.workerinput
        wi["perfmon_endpoint"] = (owner.handle.endpoint or "") if usable else ""
        wi["perfmon_monitor_pid"] = owner.handle.pid
        wi["perfmon_session"] = owner.session_id
        wi["perfmon_daemon"] = bool(owner.settings.daemon)
        wi["perfmon_slots"] = _private_dir(owner.handle) if usable else None
        wi["perfmon_junit"] = bool(getattr(self.config.option, "xmlpath", None))
        if owner.settings.profile is not None:
            from . import _profile

            wi["perfmon_profile"] = _profile.request(owner.settings) if usable else None
        wi["perfmon_host"] = self.host
        wi["perfmon_interval"] = owner.settings.interval
        listening = getattr(owner.handle, "listening", None)
        endpoint = listening() if usable and listening is not None else None
        keys = getattr(owner.handle, "keys", None)
        wi["perfmon_remote"] = {"endpoint": endpoint, **keys} if endpoint and keys else None
        problem = getattr(owner.handle, "listen_problem", None)
        if problem and not self.said_listen:
            self.said_listen = True
            owner.warnings.append(
                f"the collector {problem}; workers on other hosts hand their records back at "
                "the end (no sampling): check --perf-listen HOST[:PORT]"
            )

    # The controller sees every test start and every report as the workers send them. It keeps
    # each worker's latest tests, so that a worker that dies mid-test loses nothing it had not
    # yet sent: pytest's own times and outcome, with memory from the collector's samples.
    def pytest_runtest_logstart(self, nodeid: str, location: Any) -> None:
        self.started[nodeid] = _time()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        node = getattr(report, "node", None)
        when = report.when
        phase = _PHASE.get(when)
        if node is None or phase is None:
            return
        nodeid = report.nodeid  # read once (a property of pytest's reports)
        rec = self.running.get(nodeid)
        if rec is None:
            # pytest's own start of the first phase (the worker's clock, as its own record's)
            # before the moment the controller heard of it: the two copies of one execution
            # must start together (Worker.add_told)
            heard = self.started.pop(nodeid, None)
            start = getattr(report, "start", None) or heard or _time()
            rec = self.running[nodeid] = [None] * protocol.N_FIELDS
            rec[protocol.NODEID] = protocol.encode_nodeid(nodeid)
            rec[protocol.START] = rec[protocol.STOP] = start
            rec[protocol.OUTCOME] = "passed"
            self.where[nodeid] = wid = _worker_id(node)
            if self.lost_at is not None and start <= self.lost_at[1]:
                self._named_late(f"{nodeid} ({wid})")
        rec[phase] = report.duration
        rec[protocol.OUTCOME] = outcome_after(report, rec[protocol.OUTCOME])
        if when != "teardown":
            return
        # A look at the collector's connection at the test's last report, with the test still
        # among the running (this process may read a test's reports after the monitor died
        # during it): once a test, not at each of its three reports. A monitor that died
        # between tests is found at the end of the next one, which is named with it.
        client = self.owner.client
        if self.watching and client is not None:
            seen = client.disconnects
            client.read_events()
            # The socket's event comes a moment after the monitor's end (ZeroMQ's I/O thread):
            # its pidfd tells at once (a select of a few microseconds), so a monitor that died
            # during a test is found at that test's last report, not one test later.
            if client.disconnects != seen or not self.owner.handle.alive():
                self._lost()
            self.since_look = []
        del self.running[nodeid]
        self.where.pop(nodeid, None)
        rec[protocol.STOP] = getattr(report, "stop", None) or _time()
        wid = _worker_id(node)
        if self.watching:
            self.since_look.append(f"{nodeid} ({wid})")
        self.measuring.add(wid)
        self.finished[wid] = self.finished.get(wid, 0) + 1
        recent = self.recent.get(wid)
        if recent is None:
            recent = self.recent[wid] = deque(maxlen=protocol.CRASH_RECENT)
        recent.append(rec)

    # trylast: pytest-rerunfailures' own implementation has set the report's outcome to
    # "rerun" when it will run the test again.
    @pytest.hookimpl(optionalhook=True, trylast=True)
    def pytest_handlecrashitem(self, crashitem: str, report: Any, sched: Any) -> None:
        wid = _worker_id(getattr(report, "node", None))
        rec = self.running.pop(crashitem, None)
        self.where.pop(crashitem, None)
        start = self.started.pop(crashitem, None)
        if self.watching:  # it never reaches a last report: the next look names it
            self.since_look.append(f"{crashitem} ({wid})")
        crash = {
            "nodeid": crashitem,
            "worker": wid,
            "time": _time(),
            "start": start if start is not None or rec is None else rec[protocol.START],
            "recent": list(self.recent.pop(wid, ())),
        }
        if rec is not None and rec[protocol.SETUP] is not None:
            crash["setup"] = rec[protocol.SETUP]  # pytest measured the setup before the crash
        if getattr(report, "outcome", None) == "rerun":
            crash["rerun"] = True
        self._crash(crash)
        self.measuring.add(wid)
        if self.finished.get(wid, 0) <= protocol.CRASH_RECENT:
            self.covered.add(wid)  # it finished no test whose copy we dropped

    def _crash(self, crash: dict) -> None:
        self.crashed.append(crash)
        client = self.owner.client
        if client is not None and client.alive:
            client.send_kept(protocol.pack(protocol.CRASH, crash))

    def _lost(self) -> None:
        """Our monitor closed the connection mid-run: start another at the same address (the
        workers reconnect by themselves), naming the tests the workers were running and those
        that finished since the last look."""
        now = _time()
        restarts = self.owner.restarts
        before = len(restarts)
        if not self.owner.replace_collector(now, now, self._died_during()):
            self.watching = False
        if len(restarts) > before:
            self.lost_at = (restarts[-1], now)

    def _named_late(self, name: str) -> None:
        """A test its worker began before the loss was noticed here, read only now (this
        process reads the workers' reports a moment after they are sent: a monitor killed
        as a test begins is noticed at the end of the one before): it may have died during it."""
        named = self.lost_at[0]["died_during"] if self.lost_at is not None else None
        if isinstance(named, list) and name not in named:
            named.append(name)

    def _died_during(self) -> list:
        """The tests a monitor lost at this look may have died during: those that finished
        since the last look, and those running, as "NODEID (WORKER)"."""
        running = [f"{nodeid} ({self.where.get(nodeid)})" for nodeid in self.running]
        return self.since_look + [r for r in running if r not in self.since_look]

    def _interrupted(self) -> list:
        """The tests that began and never ended (Ctrl-C, pytest.exit(), a worker stopped):
        each reported once, as interrupted, with the time it had run."""
        now = _time()
        out = []
        for nodeid, rec in list(self.running.items()):
            self.started.pop(nodeid, None)
            crash = {
                "nodeid": nodeid,
                "worker": self.where.get(nodeid),
                "time": now,
                "start": rec[protocol.START],
                "recent": [],
                "outcome": "interrupted",
            }
            if rec[protocol.SETUP] is not None:
                crash["setup"] = rec[protocol.SETUP]
            out.append(crash)
        for nodeid, start in self.started.items():
            out.append(
                {
                    "nodeid": nodeid,
                    "worker": None,
                    "time": now,
                    "start": start,
                    "recent": [],
                    "outcome": "interrupted",
                }
            )
        self.running.clear()
        self.started.clear()
        self.where.clear()
        return out

    def pytest_keyboard_interrupt(self, excinfo: Any) -> None:
        self.owner.ended_by = _endings.what_ended(excinfo.value)

    def pytest_internalerror(self, excrepr: Any, excinfo: Any) -> None:
        # Before pytest_sessionfinish, which names the tests this process had not seen end
        # with it when the session ends with pytest's INTERNALERROR (else "the end of the
        # session"); a worker's, relayed by xdist, ends nothing here.
        self.internal_error = self.internal_error or _endings.internal_error(excinfo)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        out = getattr(node, "workeroutput", None) or {}
        data = out.get("perfmon")
        if isinstance(data, dict):
            self.worker_data[data.get("worker")] = data
            setting = data.get("setting")
            if setting and data.get("host") and data["host"] not in self.said_setting:
                self.said_setting.add(data["host"])  # once a host: its workers share a relay
                self.owner.warnings.append(f"remote workers on {data['host']}: {setting}")
            if data.get("host") and not data.get("delivered") and not self.owner.settings.daemon:
                self._hand_back(data)

    def _hand_back(self, data: dict) -> None:
        """A remote worker whose relay could not deliver its records: they came back through
        xdist's workeroutput; the collector gets them from here (no live sampling)."""
        client = self.owner.client
        if client is None or not client.alive:
            return
        body = {
            "worker": str(data.get("worker")),
            "pid": int(data.get("pid") or 0),
            "host": str(data["host"]),
            "methods": data.get("methods"),
            "records": frames_to_records(data.get("frames", [])),
        }
        client.send_kept(protocol.pack(protocol.HANDBACK, body))
        if not self.handed_back and not self.said_listen:  # one warning says why
            self.owner.warnings.append(
                f"remote worker {body['worker']} on {body['host']}: "
                f"{data.get('problem') or 'its relay could not reach the collector'}; its "
                "records came back at the end through xdist (no sampling, no live status): "
                "let the remote host reach the collector's port, or name a reachable address "
                "with --perf-listen HOST[:PORT]"
            )
        self.handed_back.append(body["worker"])

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: Any) -> None:
        if _copy(self):
            return
        if exitstatus == pytest.ExitCode.INTERNAL_ERROR and self.owner.ended_by is None:
            self.owner.ended_by = self.internal_error
        try:
            self._end_running()
        except Exception as exc:  # never let our failure become the session's
            self.owner.warnings.append(f"internal error while finishing: {exc!r}")
        self.owner.begin_finish(exitstatus, self._deliver)

    def _end_running(self) -> None:
        # The tests still running now, as interrupted (before "finish", on the same socket).
        interrupted = self._interrupted()
        for crash in interrupted:
            self._crash(crash)
        # What the workers say ended a test of theirs (pytest.exit(), Ctrl-C in a worker).
        told = [
            tuple(d["interrupted"])
            for d in self.worker_data.values()
            if isinstance(d.get("interrupted"), (list, tuple)) and len(d["interrupted"]) == 2
        ]
        running = told + [
            (c["nodeid"], None) for c in interrupted if c["nodeid"] not in {n for n, _ in told}
        ]
        self.owner.note_ending(running, seen=True)

    def _deliver(self) -> bool:
        # A monitor that died after our last look (in the last tests): the workers are gone,
        # their records are here (workeroutput), so it is not replaced: the report is ours,
        # and the warning says when and how it died.
        client, handle = self.owner.client, self.owner.handle
        if self.watching and client is not None and client.alive:
            seen = client.disconnects
            client.read_events()
            if client.disconnects != seen or not handle.alive():
                proc = getattr(handle, "proc", None)
                if proc is None or proc.wait(0.5):  # gone, not merely slow to close
                    self.owner.note_lost(_time(), _time(), self._died_during())
                    client.alive = False
        # Only records a collector said it lacked after the worker's resends are known lost;
        # a worker that died, or whose goodbye went unanswered, may have lost its last batch
        # (the collector marks its session possibly incomplete).
        self.owner.info["records_dropped"] = sum(
            int(d.get("lost") or 0) for d in self.worker_data.values()
        )
        # In our own report: a worker that measured tests but never handed its records back,
        # unless we hold a copy of every test it finished (it crashed: see pytest_handlecrashitem).
        self.owner.possibly_incomplete = bool(self.measuring - set(self.worker_data) - self.covered)
        return True

    def _data(self) -> report_model.RunData:
        data = report_model.RunData()
        for wid, d in self.worker_data.items():
            recs = [protocol.check_record(r) for r in frames_to_records(d.get("frames", []))]
            w = report_model.Worker(str(wid), int(d.get("pid", 0)), float(d.get("joined", 0)))
            w.records = recs
            w.boundary_methods = d.get("methods")
            if isinstance(d.get("host"), str):  # a remote worker
                w.host = d["host"]
                data.hosts.setdefault(w.host, {"system": None, "peak": None})
            data.workers[w.wid] = w
        # A worker that died gave nothing back: what the controller saw of its last tests.
        for crash in self.crashed:
            wid = crash["worker"]
            recent = [protocol.check_record(list(r)) for r in crash["recent"]]
            dead = data.workers.get(wid)
            if dead is None:
                joined = min((r[protocol.START] for r in recent), default=crash["time"])
                dead = data.workers[wid] = report_model.Worker(str(wid), 0, joined)
            dead.add_told(recent)
        data.crashed = [{k: v for k, v in c.items() if k != "recent"} for c in self.crashed]
        slot_files.drop_duplicate_interruptions(data)
        return data

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not _copy(self):
            self.owner.terminal_summary(terminalreporter)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if _copy(self):
            return
        _close(self.endings)
        self.owner.unconfigure()


class WorkerSession:
    """An xdist worker: measures its tests and sends them to the controller's collector."""

    def __init__(self, config: pytest.Config, workerinput: dict) -> None:
        self.config = config
        endpoint = workerinput["perfmon_endpoint"]
        self.daemon = bool(workerinput.get("perfmon_daemon"))
        pid = workerinput.get("perfmon_monitor_pid")
        slots = workerinput.get("perfmon_slots")
        self.host: Optional[str] = None  # set on another host than the controller's
        self.relay: Optional[str] = None  # that host's relay directory
        self.problem: Optional[str] = None
        self.interval = float(workerinput.get("perfmon_interval") or 0.1)
        remote = False
        # (A perfmon-daemon takes every worker's connection itself, as before.)
        if workerinput.get("perfmon_host") is not None and not self.daemon:
            from pytest_perfmon.monitor import host as host_identity

            if workerinput["perfmon_host"] != host_identity.identity():
                remote = True
                endpoint = self._remote(workerinput, endpoint)
                pid = slots = None  # the controller's monitor and slots are on its own host
        self.alive: Optional[Callable[[], bool]] = (
            None if pid is None else (lambda: _monitor_alive(slots, pid))
        )
        self.reconnects = 0
        self.pid = os.getpid()
        self.client = Client(endpoint, self.daemon) if endpoint else None
        self.measurer = Measurer(str(workerinput["workerid"]), self.client)
        self.endings = _endings.install(slots, self.measurer.wid, "worker", self.measurer.queue)
        if self.endings is not None:
            self.measurer.slot = self.endings.slot
        hello(
            self.client,
            workerinput.get("perfmon_session"),
            "worker",
            worker=self.measurer.wid,
            methods=self.measurer.counters.methods,
            python=_python(),
            # A remote worker is not profiled: the monitor's py-spy would sample a pid of its
            # own host (the relay samples memory and CPU, not stacks).
            **({} if remote else _worker_profile(workerinput, pid)),
            host=self.host,
        )

    def _remote(self, workerinput: dict, endpoint: str) -> str:
        """On another host: this host's relay's endpoint ("" when there is none to use)."""
        from pytest_perfmon.monitor.host import label

        from ._remote import join_relay

        self.host = label()
        up = workerinput.get("perfmon_remote")
        if not endpoint or not isinstance(up, dict):
            self.problem = (
                "the collector does not listen for remote workers (a perfmon-daemon, or no "
                "--perf-listen with only popen specs)"
            )
            return ""
        keys = {k: up[k] for k in ("server", "public", "secret")}
        # Behind NAT the collector is reached at another address than the one it bound.
        via = os.environ.get("PERFMON_RELAY_UPSTREAM")
        target = f"tcp://{via}" if via and "://" not in via else (via or up["endpoint"])
        got, where = join_relay(
            str(workerinput.get("perfmon_session")), target, keys, self.interval
        )
        if got is None:
            self.problem = where
            return ""
        self.relay = where
        return str(got)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Any:
        timeout, grace = (
            (DAEMON_READY_TIMEOUT, CONNECT_GRACE) if self.daemon else (READY_TIMEOUT, None)
        )
        if wait_ready(self.client, timeout, self.alive, grace):
            self.measurer.start_sending(None if self.daemon else self._lost)
        yield
        _idle(self.endings)

    def _lost(self, noticed: float, since: float) -> None:
        """(The sender thread.) The controller's monitor closed our connection: the
        controller starts another at the same address; hand it everything again, once it
        binds (a connecting socket queues until then)."""
        client = self.client
        assert client is not None
        self.reconnects += 1
        if self.reconnects > MAX_RESTARTS:
            client.alive = False
            return
        if self.relay is not None:  # a remote worker: our host's relay died; one of us restarts it
            from ._remote import relay_alive, replace_relay

            if not relay_alive(self.relay):
                replace_relay(self.relay, self.interval)
        client.reconnect()

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: Any) -> None:
        if _copy(self):
            return
        m = self.measurer
        client = self.client
        try:
            m.stop_sending()
            delivered = False
            if client is not None and client.ready and client.alive and not client.gone():
                delivered = client.bye(self.alive)
            # The controller keeps these in case the collector cannot write the report.
            # xdist sets workeroutput on a worker's config: pytest's Config declares none
            self.config.workeroutput["perfmon"] = {  # type: ignore[attr-defined]
                "worker": m.wid,
                "pid": os.getpid(),
                "joined": m.start,
                "methods": m.counters.methods,
                "frames": m.frames(),
                "delivered": delivered,
                "lost": client.records_known_lost() if client is not None else 0,
                "interrupted": list(m.interrupted) if m.interrupted else None,
                "host": self.host,
                "problem": self.problem or (client.problem if client is not None else None),
                "setting": _relay_setting_problem() if self.host else None,
            }
        finally:
            if client is not None:
                client.close()
            if self.relay is not None:
                from ._remote import forget_dead_relay

                forget_dead_relay(self.relay)
            _close(self.endings, m)
            m.counters.close()


def configure(config: pytest.Config, settings: Settings, early: Optional[Early] = None) -> None:
    """Pick this process's role once: xdist controller, or plain pytest (``early``: the monitor
    started for these settings, :func:`._handle.spawn_early`)."""
    # xdist distributes only with a mode and somewhere to run (-n/--tx), as its own check does:
    # `--dist loadscope` in addopts without -n runs the tests in this process.
    if getattr(config.option, "dist", "no") != "no" and getattr(config.option, "tx", None):
        config.pluginmanager.register(ControllerSession(config, settings, early), PLUGIN_NAME)
        if early is not None:
            early.claim()
        return
    role = LocalSession(config, settings, early)
    config.pluginmanager.register(role, PLUGIN_NAME)
    if early is not None:
        early.claim()
    _register_measurer(config, role.measurer, bool(getattr(config.option, "xmlpath", None)))


def configure_worker(config: pytest.Config, workerinput: dict) -> None:
    """An xdist worker whose controller monitors: measure and report to its collector."""
    role = WorkerSession(config, workerinput)
    config.pluginmanager.register(role, PLUGIN_NAME)
    _register_measurer(config, role.measurer, bool(workerinput.get("perfmon_junit")))
