"""The measured path: hooks that run in the process that runs the tests (plain pytest or an
xdist worker), and the JUnit properties built from the same counters.

Per test: a few kernel counters read at the test's boundaries, one list appended to a deque.
Sending is the :class:`~._client.Sender` thread's job, never this path's.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from typing import Any, Optional

import pytest
from pytest_perfmon.monitor import protocol as P

from ._client import BATCH_RECORDS, Client, Sender, frames_to_records
from ._counters import Counters

# The real clocks, captured at import: freezegun / time-machine in a user's tests patch module
# attributes named like these, never these bound references.
_time = time.time
_perf = time.perf_counter
_cpu = time.process_time

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
    return current


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
        self.local_frames: list = []  # batches packed here when there is no client at all
        self.phase: dict = {}
        self.outcome = "passed"
        # The record's EXTRA: None, or a dict that others (the limits) fill during the test.
        self.extra: Optional[dict] = None
        self.cur: tuple = (None, _perf(), _cpu())
        self.start = _time()

    # -- the hot path -----------------------------------------------------------------------
    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: Optional[pytest.Item]) -> Any:
        counters = self.counters
        self.phase = phase = {}
        self.outcome = "passed"
        self.extra = None
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
        queue = self.queue
        queue.append(
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
                counters.extra(self.extra),  # + children's CPU, shared fixtures (H9)
            ]
        )
        if len(queue) >= self.limit:
            self.wake.set()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.phase[report.when] = report.duration
        self.outcome = outcome_after(report, self.outcome)

    # -- sending ------------------------------------------------------------------------------
    def start_sending(self) -> None:
        """The collector answered: from now on the sender thread owns the socket."""
        client = self.client
        if client is None or not client.ready or not client.alive or self.sender is not None:
            return
        self.sender = Sender(client, self.queue, self.wake)
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
            frames.append(P.pack(P.BATCH, [len(frames), records]))

    def frames(self) -> list:
        """Every batch frame measured here (kept for a report written without the collector)."""
        return self.client.frames if self.client is not None else self.local_frames

    def records(self) -> list:
        """Every record measured here, decoded and checked."""
        return [P.check_record(r) for r in frames_to_records(self.frames())]


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
                ("perf_memory_start_mb", f"{rss0 / MB:.3f}"),
                ("perf_memory_end_mb", f"{rss1 / MB:.3f}"),
                ("perf_memory_delta_mb", f"{(rss1 - rss0) / MB:.3f}"),
            ]
            if peak is not None:
                props.append(("perf_memory_peak_mb", f"{max(peak, rss0, rss1) / MB:.3f}"))
        if wall > 0:
            props.append(("perf_cpu_percent", f"{100.0 * cpu / wall:.1f}"))
        report.user_properties.extend(props)
