"""The measured path: hooks that run in the process that runs the tests (plain pytest or an
xdist worker), and the JUnit properties built from the same counters.

Per test: a few kernel counters read at the test's boundaries, one list appended to a deque.
Sending is the :class:`~._client.Sender` thread's job, never this path's.
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from typing import Any, Callable, Optional

import pytest
from pytest_perfmon.monitor import protocol

from . import _clock
from ._client import BATCH_RECORDS, Client, Sender, frames_to_records
from ._counters import Counters
from ._endings import what_ended

# The real clocks (._clock): a user's freezegun or time-machine bends none of them.
_time = _clock.real_time
_perf = _clock.perf
_cpu = _clock.cpu
_moment = _clock.moment


def own_phases(reports: list, marks: list, p0: float) -> tuple:
    """The last attempt's (setup, call, teardown) by this plugin's clock: from the protocol's
    start (or the previous report) to each phase's report (``marks``: perf_counter as each of
    ``reports`` was logged)."""
    phase: dict = {}
    prev = p0
    for r, m in zip(reports, marks):
        if type(r).__name__ not in SUBTEST_REPORTS:  # a subtest's report is inside the call
            if r.when == "setup" and phase:
                phase = {}
            phase[r.when] = max(0.0, m - prev)
            prev = m
    return phase.get("setup"), phase.get("call"), phase.get("teardown")


MB = 1024.0 * 1024.0


def outcome_after(report: Any, current: str) -> str:
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
    if report.outcome == "rerun":  # pytest-rerunfailures: this attempt is run again
        return "rerun"
    return current


#: The report classes of subtests: pytest 9's built-in ``subtests`` fixture, pytest-subtests.
SUBTEST_REPORTS = frozenset(("SubtestReport", "SubTestReport"))
_SUBTEST_SLOT = {"passed": 0, "failed": 1, "skipped": 2}


def settle(reports: list) -> tuple:
    """What pytest reported for one run of the test protocol, read once it has ended (other
    plugins change reports in their own hooks: pytest's subtests marks the call "failed" in
    ``pytest_report_teststatus``, after ours saw it "passed").

    Returns ``(setup, call, teardown, outcome, subtests, attempts)``: the last attempt's phase
    durations and outcome; ``subtests`` None or ``[passed, failed, skipped]``; ``attempts``
    None, or when pytest-rerunfailures ran the test more than once in this protocol call every
    attempt, the last included, each ``[outcome, setup, call, teardown, start]``.
    """
    phase: dict = {}
    outcome = "passed"
    start = None
    subtests = attempts = None
    for r in reports:
        if type(r).__name__ in SUBTEST_REPORTS:
            if subtests is None:
                subtests = [0, 0, 0]
            i = _SUBTEST_SLOT.get(r.outcome)
            if i is not None:
                subtests[i] += 1
            continue
        when = r.when
        if when == "setup" and phase:  # the setup of a new attempt
            if attempts is None:
                attempts = []
            attempts.append(
                [outcome, phase.get("setup"), phase.get("call"), phase.get("teardown"), start]
            )
            phase = {}
            outcome = "passed"
        if not phase:
            start = getattr(r, "start", None)
        phase[when] = r.duration
        outcome = outcome_after(r, outcome)
    setup, call, teardown = phase.get("setup"), phase.get("call"), phase.get("teardown")
    if subtests is not None and subtests[1] and outcome == "passed":
        # pytest-subtests and unittest's subTest pass the test itself while a subtest failed
        # (pytest exits 1); pytest 9's subtests fixture fails it. A failed subtest fails it here.
        outcome = "failed"
    if attempts is not None:
        attempts.append([outcome, setup, call, teardown, start])
    return setup, call, teardown, outcome, subtests, attempts


class Measurer:
    """Measures every test of this process; registered as a plugin by the role that runs tests."""

    def __init__(self, wid: str, client: Optional[Client]) -> None:
        self.wid = wid
        self.client = client
        self.counters = Counters()
        self.queue: deque = deque()
        self.wake = threading.Event()
        # No sender yet: never wake one. Set to BATCH_RECORDS while a sender runs.
        self.limit = sys.maxsize
        self.sender: Optional[Sender] = None
        #: When the sender last found the collector's connection whole (None: never sent).
        self.checked: Optional[float] = None
        self.local_frames: list = []  # batches packed here when there is no client at all
        self.reports: list = []  # this test's reports so far (read when its protocol ends)
        self.marks: list = []  # perf_counter as each of them was logged
        # Set by the role: an object whose begin(nodeid_bytes, t0) notes each test's start
        # where the collector can read it after a hard exit.
        self.slot: Any = None
        # (node id, what ended the run) when a test's protocol ended by an exception
        self.interrupted: Optional[tuple] = None
        # (node id, outcome) when the run ended in the interaction with a test's failure
        self.ended_after: Optional[tuple] = None
        # the current test's phase report whose pytest_exception_interact ended the run
        self.interacted: Any = None
        # The record's EXTRA: None, or a dict that others (the limits) fill during the test.
        self.extra: Optional[dict] = None
        self.cur: tuple = (None, _perf(), _cpu())
        self.start = _clock.now()

    # -- the hot path -----------------------------------------------------------------------
    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: Optional[pytest.Item]) -> Any:
        counters = self.counters
        reports: list = []
        self.reports = reports
        marks: list = []
        self.marks = marks
        self.extra = None
        self.interacted = None
        try:
            nodeid = item.nodeid.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a lone surrogate: protocol.encode_nodeid's way
            nodeid = protocol.encode_nodeid(item.nodeid)
        counters.reset()
        rss0 = counters.rss()
        p0 = _perf()
        t0 = _moment(_time())
        if self.slot is not None:
            self.slot.begin(nodeid, t0)
        c0 = _cpu()
        self.cur = (rss0, p0, c0)
        result = yield
        c1 = _cpu()
        p1 = _perf()
        t1 = _moment(_time())
        peak = counters.peak()
        rss1 = counters.rss()
        setup, call, teardown, outcome, subtests, attempts = settle(reports)
        extra = counters.extra(self.extra)  # + children's CPU, shared fixtures (H9)
        # pytest's phase times off the real clock (a clock patched in the user's fixtures:
        # freezegun's setup of years, a negative teardown): a negative one, or more in all
        # than the protocol call that holds them lasted. Then this plugin's own marks.
        s_, c_, d_ = setup or 0.0, call or 0.0, teardown or 0.0
        if s_ < 0.0 or c_ < 0.0 or d_ < 0.0 or s_ + c_ + d_ > p1 - p0 + 0.001:
            setup, call, teardown = own_phases(reports, marks, p0)
            if extra is None:
                extra = {}
            extra["phases_timed"] = "perfmon"
        if subtests is not None or attempts is not None:
            if extra is None:
                extra = {}
            if subtests is not None:
                extra["subtests"] = subtests
            if attempts is not None:
                extra["attempts"] = attempts
        if result.excinfo is not None:  # Ctrl-C, pytest.exit(): the test did not finish
            exc = result.excinfo[1]
            why = what_ended(exc) or type(exc).__name__
            last = reports[-1] if reports else None
            if last is not None and last is self.interacted and last.failed:
                # The run ended in the interaction with the failure of the phase that reported
                # last (--pdb's quit): that phase had ended, and pytest counts the test as it
                # reported it. (Not a subtest's: its test was still running.)
                self.ended_after = (item.nodeid, outcome)
            else:
                outcome = "interrupted"
                # the phase that was running gets the time it had run (by our clock)
                ran = p1 - p0 - sum(p for p in (setup, call, teardown) if p is not None)
                if setup is None:
                    setup = max(0.0, ran)
                elif call is None and teardown is None:
                    call = max(0.0, ran)
                elif teardown is None:
                    teardown = max(0.0, ran)
                self.interrupted = (item.nodeid, why)
        queue = self.queue
        queue.append(
            [
                nodeid,
                t0,
                t1,
                setup,
                call,
                teardown,
                outcome,
                rss0,
                peak,
                rss1,
                c1 - c0,
                p1 - p0,
                extra,
            ]
        )
        if len(queue) >= self.limit:
            self.wake.set()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.reports.append(report)
        self.marks.append(_perf())

    @pytest.hookimpl(hookwrapper=True)
    def pytest_exception_interact(self, node: Any, call: Any, report: Any) -> Any:
        # Called at every failure; raises out when the interaction ended the run (--pdb's
        # quit). A phase's report, not a subtest's (SubtestReport: its test was running on).
        outcome = yield
        if outcome.excinfo is not None and type(report).__name__ not in SUBTEST_REPORTS:
            self.interacted = report

    # The current test so far, for the limits and the fixture timing (read a few times a test
    # at most, and only by those).
    @property
    def phase(self) -> dict:
        """The phases of the current attempt reported so far: {when: duration}."""
        setup, call, teardown = settle(self.reports)[:3]
        done = (("setup", setup), ("call", call), ("teardown", teardown))
        return {when: d for when, d in done if d is not None}

    @property
    def outcome(self) -> str:
        """The current attempt's outcome so far."""
        return settle(self.reports)[3]

    # -- sending ------------------------------------------------------------------------------
    def start_sending(self, on_lost: Optional[Callable[[float, float], Any]] = None) -> None:
        """The collector answered: from now on the sender thread owns the socket. ``on_lost``
        is called in that thread when the collector closes our connection (see Sender)."""
        client = self.client
        if client is None or not client.ready or not client.alive or self.sender is not None:
            return
        self.sender = Sender(client, self.queue, self.wake, on_lost)
        self.sender.start()
        self.limit = BATCH_RECORDS
        if len(self.queue) >= self.limit:
            self.wake.set()

    def stop_sending(self) -> None:
        """Send what is queued; the socket is the main thread's again (or written off)."""
        self.limit = sys.maxsize
        client = self.client
        if self.sender is not None:
            sender, self.sender = self.sender, None
            self.checked = sender.checked
            if not sender.stop() and client is not None:
                client.alive = False  # the thread still holds the socket: leave it alone
                client.abandoned = True
                client.problem = "the sender thread did not stop"
            elif sender.error is not None and client is not None:
                client.problem = f"the sender thread failed: {sender.error!r}"
        records = list(self.queue)
        self.queue.clear()
        if not records:
            return
        if client is not None:
            for i in range(0, len(records), BATCH_RECORDS):
                client.batch(records[i : i + BATCH_RECORDS])
        else:
            frames = self.local_frames
            frames.append(protocol.pack(protocol.BATCH, [len(frames), records]))

    def frames(self) -> list:
        """Every batch frame measured here (kept for a report written without the collector)."""
        return self.client.frames if self.client is not None else self.local_frames

    def records(self) -> list:
        """Every record measured here, decoded and checked."""
        return [protocol.check_record(r) for r in frames_to_records(self.frames())]


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
        setup, call = settle(m.reports)[:2]
        total = (setup or 0) + (call or 0) + (report.duration or 0)
        props = [("perf_duration", f"{total:.6f}")]
        if rss0 is not None:
            peak = m.counters.peak()
            rss1 = m.counters.rss()
            if rss1 is not None:  # always: the reader that gave rss0
                props += [
                    ("perf_memory_start_mb", f"{rss0 / MB:.3f}"),
                    ("perf_memory_end_mb", f"{rss1 / MB:.3f}"),
                    ("perf_memory_delta_mb", f"{(rss1 - rss0) / MB:.3f}"),
                ]
                if peak is not None:
                    props.append(("perf_memory_peak_mb", f"{max(peak, rss0, rss1) / MB:.3f}"))
        if wall > 0:
            props.append(("perf_cpu_percent", f"{100.0 * cpu / wall:.1f}"))
        report.user_properties.extend(props)
