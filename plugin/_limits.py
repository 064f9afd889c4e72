"""Performance limits (``@pytest.mark.perf_limit``, ``--perf-limit-*``, ``--perf-limits``).

Checked in the process that ran the test (plain pytest or an xdist worker), from the same
counters the :class:`~._measure.Measurer` reads: no round trip to the monitor, and a test's
violation is its own. Where each metric is final in pytest's protocol, and so which report a
violation fails:

* ``call``: the call phase's duration, final when the call report is made: the test FAILS.
* ``duration`` (setup + call + teardown), ``peak_mb``, ``delta_mb``, ``cpu_time``: they include
  teardown, so they are final only when the teardown report is made, and fail that report, as
  pytest-timeout does: pytest shows the test as passed, then ERROR at teardown.

A skipped test is never checked. A test marked xfail is expected to fail: a violation never turns
it into a failure (action ``xfail``). A test that already failed keeps its own failure; the
violation is a note (action ``note``), shown under the failure when the failure is in the same
report (a call-phase failure and the call limit), else only in the limits section, the JSON
report and JUnit XML. With ``--perf-limits warn`` nothing changes (action ``warn``).

Each violation goes to the record's EXTRA (``{"limits": [...]}``: the report's ``limits``
field), and to the report's ``user_properties`` as ``("perf_limit", "ACTION: MESSAGE")``:
JUnit XML shows it as a property, and the process that prints the terminal summary (plain
pytest, or the xdist controller) reads it from the teardown report.

When no collected test has a limit, the checking plugin unregisters itself: no cost per test.

History-relative limits (``--perf-limit-history FACTOR`` with ``--perf-history``): before the
tests run, each process that runs tests asks a short-lived child process
(``python -m pytest_perfmon.monitor.history.medians``: the database layer is never imported
here) for each test's medians over the newest runs of this machine. A metric with a median
gets the limit ``max(FACTOR x median, median + floor)``, where no marker and no
``--perf-limit-*`` default sets that metric.

The noise discount (issue 21; ``PERFMON_NOISE=off`` turns it off): the medians of ``duration``
and ``call`` are of the times without the wait for a CPU (the store's noise certificates), and a
test is judged by its time less what its thread waited for a CPU in that span (its
``/proc/self/schedstat`` run_delay, read at the test's start, the end of its setup, its call
report and its teardown report, only in a run with such a limit). Over the limit as measured but
not without the wait: "contended, not judged", never a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Optional

import pytest
from pytest_perfmon.monitor.units import MB

from . import _clock
from ._settings import LIMIT_METRICS, limit_value

PROPERTY = "perf_limit"
MARKER = "perf_limit"
#: What a violation did (the report's ``limits[].action``).
NOT_YET = {
    "children_peak_mb": "children_peak_mb is not available yet: child processes are not "
    "measured in the test's process",
}

_cpu = _clock.cpu  # the real clocks (._clock)
_perf = _clock.perf


def item_limits(item: pytest.Item, defaults: dict) -> Optional[dict]:
    """The test's limits: the nearest marker sets each metric (function > class > module),
    then the defaults. None: no limit. Raises pytest.UsageError naming the test."""
    limits = dict(defaults)
    seen: set = set()
    for mark in item.iter_markers(MARKER):
        where = f"perf_limit on {item.nodeid}"
        if mark.args:
            raise pytest.UsageError(
                f"{where}: takes keyword arguments only (metric=limit), got {mark.args!r}"
            )
        for name, value in mark.kwargs.items():
            if name not in LIMIT_METRICS:
                raise pytest.UsageError(
                    f"{where}: "
                    + NOT_YET.get(
                        name,
                        f"unknown metric {name!r} (known: {', '.join(LIMIT_METRICS)})",
                    )
                )
            try:
                number = limit_value(value, name)
            except ValueError as exc:
                raise pytest.UsageError(f"{where}: {exc}") from None
            if name in seen:
                continue  # a nearer marker set it
            seen.add(name)
            if number is None:
                limits.pop(name, None)
            else:
                limits[name] = number
    return limits or None


def _own_mark(node: Any) -> bool:
    """Whether ``node`` itself carries a perf_limit marker (what iter_markers reads)."""
    marks = node.own_markers
    return bool(marks) and any(getattr(m, "name", None) == MARKER for m in marks)


def _marked(node: Any) -> bool:
    """Whether ``node`` or a node above it carries a perf_limit marker."""
    while node is not None:
        if _own_mark(node):
            return True
        node = node.parent
    return False


#: How long the medians may take to come (a locked or remote store): then no history limits.
MEDIANS_TIMEOUT = 30.0


def fetch_medians(history: Any, timeout: float = MEDIANS_TIMEOUT) -> tuple:
    """(medians or None, problem or None) from the history store, through a child process."""
    cmd = [sys.executable, "-m", "pytest_perfmon.monitor.history.medians"]
    cmd += [history.url, str(history.runs)]
    if not getattr(history, "noise", True):
        cmd.append("--noise=off")
    try:
        proc = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            cwd=os.path.dirname(os.path.abspath(__file__)),  # nothing of the user's cwd shadows us
        )
    except subprocess.TimeoutExpired:
        return None, f"no answer from the history store within {timeout:.0f} s"
    except OSError as exc:
        return None, f"cannot read the history store: {exc}"
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        return None, (err[-1] if err else f"exit code {proc.returncode}")
    try:
        data = json.loads(proc.stdout)
        tests = data["tests"]
        runs = int(data["runs"])
    except (ValueError, KeyError, TypeError):
        return None, "the history store's answer could not be read"
    return {"runs": runs, "tests": tests}, None


#: The workerinput key of the medians the xdist controller read, for its workers on its host.
WORKER_KEY = "perfmon_medians"


class MediansForWorkers:
    """In the xdist controller: hands the medians it read (or why it has none) to each worker,
    so that the workers on its host start no reader of their own (each was a Python importing
    the database layer in the worker's start-up, and a locked store held each one
    MEDIANS_TIMEOUT). A worker on another host reads its own."""

    def __init__(self, medians: Optional[dict], problem: Optional[str], host: str) -> None:
        self.handed = {"host": host, "medians": medians, "problem": problem}

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[WORKER_KEY] = self.handed


def _this_host() -> str:
    from pytest_perfmon.monitor import host

    return host.identity()


def history_limits(medians: dict, history: Any) -> dict:
    """nodeid -> {metric: (limit, how the limit was made)} from the medians."""
    out: dict = {}
    for nodeid, per in medians.get("tests", {}).items():
        if not isinstance(per, dict):
            continue
        limits = {}
        for metric, entry in per.items():
            if metric not in LIMIT_METRICS or not isinstance(entry, list) or len(entry) != 2:
                continue
            median, n = entry
            if not isinstance(median, (int, float)) or median < 0:
                continue
            unit = LIMIT_METRICS[metric][0]
            floor = history.floor_mb if unit == "MB" else history.floor_s
            limit = max(history.factor * median, median + floor)
            less = " less waiting" if unit == "s" and getattr(history, "noise", True) else ""
            limits[metric] = (
                limit,
                f"{history.factor:g} x median {median:.3g} {unit}{less} of {n} run(s), floor "
                f"{floor * 1000 if unit == 's' else floor:g} {'ms' if unit == 's' else unit}",
            )
        if limits:
            out[nodeid] = limits
    return out


def _fmt(value: float, limit: float, unit: str) -> str:
    text = f"{value:.3f}" if unit == "s" else f"{value:.1f}"
    if float(text) <= limit:  # rounding hid the excess: show it
        text = f"{value:.6f}"
    return text


def message(metric: str, value: float, limit: float, how: Optional[str] = None) -> str:
    """``peak_mb 231.4 > limit 200 MB (kernel peak RSS over setup, call and teardown)``."""
    unit, _, default_how = LIMIT_METRICS[metric]
    return f"{metric} {_fmt(value, limit, unit)} > limit {limit:g} {unit} ({how or default_how})"


class Limits:
    """Checks each test's limits in the process that runs it; registered next to a Measurer."""

    def __init__(
        self,
        measurer: Any,
        mode: str,
        defaults: tuple,
        worker: bool = False,
        history: Optional[dict] = None,
        noise: bool = False,
    ) -> None:
        self.m = measurer
        self.worker = worker
        #: nodeid -> {metric: (limit, how)} from --perf-limit-history
        self.history = history or {}
        #: the noise discount of the history time limits: this thread's schedstat, kept open
        self.wait_fd: Optional[int] = None
        if noise and any(m in WAITED for per in self.history.values() for m in per):
            self.wait_fd = _open_schedstat()
        self.waits: list = [None, None]  # run_delay at the test's start, at its setup's end
        self.waited: dict = {}  # metric -> seconds this test's thread waited in its span
        self.sources: dict = {}  # (nodeid, metric) -> how a history limit was made
        self.errors: list = []
        self.mode = mode
        self.defaults = dict(defaults)
        self.by_nodeid: dict = {}  # nodeid -> limits, only for tests that have any
        self.pending: list = []  # properties found in the call phase, for the teardown report

    # Bad markers are found where the tests are collected. Plain pytest: a usage error. An
    # xdist worker cannot stop the run with a usage error (xdist takes the worker for crashed):
    # the module's collection fails with the same one-line message instead.
    @pytest.hookimpl(hookwrapper=True)
    def pytest_make_collect_report(self, collector: pytest.Collector) -> Any:
        result = yield
        rep = result.get_result()
        if not rep.passed:
            return
        errors = []
        # Whether the collector or a node above it carries the marker: asked once for all its
        # items (the marker lookup per item was most of this hook's cost, for nothing in a
        # run without limits).
        above: Optional[bool] = None
        for node in rep.result:
            if isinstance(node, pytest.Item):
                defaults = self.defaults
                hist = self.history.get(node.nodeid) if self.history else None
                if hist:  # the history limits, where no default sets the metric
                    defaults = {m: v[0] for m, v in hist.items() if m not in self.defaults}
                    defaults.update(self.defaults)
                if not defaults and node.parent is collector:
                    if above is None:
                        above = _marked(collector)
                    if not above and not _own_mark(node):
                        continue  # item_limits would say None: no marker, no default
                try:
                    limits = item_limits(node, defaults)
                except pytest.UsageError as exc:
                    errors.append(str(exc))
                    continue
                if limits is not None:
                    self.by_nodeid[node.nodeid] = limits
                    for metric, (limit, how) in (hist or {}).items():
                        if limits.get(metric) == limit:
                            self.sources[(node.nodeid, metric)] = how
        if not errors:
            return
        if not self.worker:
            self.errors += errors  # raised once collection ends (not from a hookwrapper)
        else:
            rep.outcome = "failed"
            rep.longrepr = "\n".join(errors)

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self) -> None:
        if self.errors:
            more = len(self.errors) - 1
            raise pytest.UsageError(self.errors[0] + (f" (and {more} more)" if more else ""))

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        by_nodeid = self.by_nodeid
        if not any(item.nodeid in by_nodeid for item in session.items):
            session.config.pluginmanager.unregister(self)  # no test has a limit: no cost

    def _run_delay(self) -> Optional[float]:
        return _run_delay(self.wait_fd) if self.wait_fd is not None else None

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        if self.wait_fd is not None:
            timed = nodeid in self.history and nodeid in self.by_nodeid
            self.waits = [self._run_delay() if timed else None, None]
            self.waited = {}

    # The report as made (pytest's skipping plugin has turned xfail into its outcome), changed
    # before anyone reads it: tryfirst runs this before the terminal, JUnit XML, xdist's worker
    # (which sends the report to the controller), the session's failure count and the
    # Measurer's outcome. Cheaper than a makereport hookwrapper for the tests without a limit.
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        limits = self.by_nodeid.get(report.nodeid)
        if limits is None:
            return
        when = report.when
        start = self.waits[0]
        if start is not None:  # a history time limit, judged without the wait
            now = self._run_delay()
            if when == "setup":
                self.waits[1] = now
            elif now is not None:
                since = start if when == "teardown" else self.waits[1]
                if since is not None:
                    self.waited["duration" if when == "teardown" else "call"] = now - since
        if when == "call":
            if "call" in limits:
                self.check(report, limits, {"call": self._real(report.duration)}, "passed")
        elif when == "teardown":
            self.check(report, limits, self.teardown_values(report, limits), self.m.outcome)
            if self.pending:
                report.user_properties.extend(self.pending)
                self.pending = []
        else:
            self.pending = []

    def _real(self, seconds: float) -> float:
        """pytest's time, within what the test's protocol has lasted by the real clock (a
        clock patched in a fixture bends pytest's: freezegun's setup of years, a negative
        teardown): a limit never fails a test on a time it did not take."""
        return min(max(seconds, 0.0), _perf() - self.m.cur[1])

    def teardown_values(self, rep: Any, limits: dict) -> dict:
        m = self.m
        phase = m.phase
        rss0, _, c0 = m.cur
        values: dict = {}
        if "duration" in limits:
            values["duration"] = self._real(
                (phase.get("setup") or 0.0) + (phase.get("call") or 0.0) + (rep.duration or 0.0)
            )
        if "cpu_time" in limits:
            values["cpu_time"] = _cpu() - c0
        if "peak_mb" in limits or "delta_mb" in limits:
            counters = m.counters
            rss1 = counters.rss()
            peak = counters.peak()
            if peak is not None and rss0 is not None and rss1 is not None:
                values["peak_mb"] = max(peak, rss0, rss1) / MB
            else:
                values["peak_mb"] = None
            values["delta_mb"] = None if rss0 is None or rss1 is None else (rss1 - rss0) / MB
        return values

    def check(self, rep: Any, limits: dict, values: dict, so_far: str) -> None:
        if so_far == "skipped" or (rep.skipped and not hasattr(rep, "wasxfail")):
            return  # a skipped test never fails a limit
        found: list[tuple[str, float, Optional[float]]] = []  # metric, limit, value
        measured: dict = {}  # metric -> (as measured, seconds waited) of a judged value
        for metric, value in values.items():
            limit = limits.get(metric)
            if limit is None:
                continue
            if value is None:
                found.append((metric, limit, None))
            elif value > limit:
                waited = self.waited.get(metric) if (rep.nodeid, metric) in self.sources else None
                if waited:
                    judged = max(0.0, value - waited)
                    if judged <= limit:
                        self.not_judged(rep, metric, limit, value, waited)
                        continue
                    measured[metric] = (value, waited)
                    value = judged
                found.append((metric, limit, value))
        if not found:
            return
        if self.mode == "warn":
            action = "warn"
        elif hasattr(rep, "wasxfail") or so_far in ("xfailed", "xpassed"):
            action = "xfail"
        elif rep.failed or so_far in ("failed", "error"):
            action = "note"
        else:
            action = "fail"
        entries = []
        lines: list[str] = []
        for metric, limit, value in found:
            unit, _, how = LIMIT_METRICS[metric]
            if value is None:
                act = "unchecked"
                text = f"{metric} not checked: not measurable in the test's process here"
            else:
                act = action
                source = self.sources.get((rep.nodeid, metric))
                if source is not None:
                    how = f"{how}; limit from the history: {source}"
                if metric in measured:
                    was, waited = measured[metric]
                    how = (
                        f"{how}; less the {waited:.3f} s its thread waited for a CPU "
                        f"({was:.3f} s as measured)"
                    )
                text = message(metric, value, limit, how)
                lines.append(text)
                value = round(value, 6 if unit == "s" else 3)
            entries.append(
                {"metric": metric, "limit": limit, "value": value, "action": act, "how": how}
            )
            prop = (PROPERTY, f"{act}: {text}")
            if rep.when == "teardown":
                rep.user_properties.append(prop)
            else:  # for the teardown report, which JUnit XML and the summary read
                self.pending.append(prop)
        m = self.m
        extra = m.extra
        if extra is None:
            extra = m.extra = {}
        extra.setdefault("limits", []).extend(entries)
        if not lines:
            return
        text = "\n".join(f"{PROPERTY}: {line}" for line in lines)
        if action == "fail":
            rep.outcome = "failed"
            rep.longrepr = text
        elif action == "note" and rep.failed:
            rep.sections.append((PROPERTY, text))

    def not_judged(self, rep: Any, metric: str, limit: float, value: float, waited: float) -> None:
        """Over a history limit as measured, not without the time the test's thread waited for
        a CPU: "contended, not judged" (a user property, shown in the limits section; never a
        failure, and not one of the report's limit violations)."""
        unit = LIMIT_METRICS[metric][0]
        text = (
            f"{metric} {_fmt(value, limit, unit)} > limit {limit:g} {unit} as measured, "
            f"{value - waited:.3f} without the {waited:.3f} s its thread waited for a CPU "
            f"(limit from the history: {self.sources.get((rep.nodeid, metric))})"
        )
        prop = (PROPERTY, f"{CONTENDED}: {text}")
        if rep.when == "teardown":
            rep.user_properties.append(prop)
        else:
            self.pending.append(prop)


#: The time limits --perf-limit-history judges without the wait for a CPU.
WAITED = ("duration", "call")
#: The action of a limit passed only without the wait (the limits section's rows).
CONTENDED = "contended, not judged"


def _open_schedstat() -> Optional[int]:
    """This process's main thread's ``/proc/self/schedstat`` (the thread pytest runs tests in),
    kept open; None where there is none (not Linux, no schedstats)."""
    try:
        fd = os.open("/proc/self/schedstat", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except (OSError, AttributeError):
        return None
    if _run_delay(fd) is None:
        os.close(fd)
        return None
    return fd


def _run_delay(fd: int) -> Optional[float]:
    """Seconds the thread was runnable but not running (schedstat's second field)."""
    try:
        return int(os.pread(fd, 128, 0).split()[1]) * 1e-9
    except (OSError, ValueError, IndexError):
        return None


class LimitsReport:
    """Where the terminal summary is printed (plain pytest, the xdist controller): collects the
    violations from the teardown reports and prints them at the end."""

    def __init__(self, mode: str, history_note: Optional[str] = None) -> None:
        self.mode = mode
        self.rows: list = []  # (nodeid, location, action, message)
        self.history_note = history_note  # what --perf-limit-history found, or its problem

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "teardown":
            return
        props: list[Any] = report.user_properties  # pairs by pytest's types; anything at run time
        for prop in props:
            if len(prop) == 2 and prop[0] == PROPERTY and isinstance(prop[1], str):
                action, _, text = prop[1].partition(": ")
                self.rows.append((report.nodeid, report.location, action, text))

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.history_note:
            terminalreporter.write_line(self.history_note, yellow="warning" in self.history_note)
        if not self.rows:
            return
        from ._summary import write_limits

        write_limits(terminalreporter, self.rows, os.environ.get("GITHUB_ACTIONS") == "true")


def install(config: pytest.Config, mode: str, defaults: tuple, history: Any = None) -> None:
    """Register the limit checks (where tests run) and the summary (where it is printed)."""
    if mode == "off":
        return
    measurer = config.pluginmanager.get_plugin("perfmon-session-measure")
    worker = getattr(config, "workerinput", None) is not None
    hist_limits: dict = {}
    note = None
    if history is not None and (measurer is not None or not worker):
        # Each process that runs tests has the medians; the controller reads them (for the
        # note, too) and hands them to its workers on this host (MediansForWorkers).
        handed = config.workerinput.get(WORKER_KEY) if worker else None  # type: ignore[attr-defined]
        if isinstance(handed, dict) and handed.get("host") == _this_host():
            medians, problem = handed.get("medians"), handed.get("problem")
        else:
            medians, problem = fetch_medians(history)
        if not worker:
            config.pluginmanager.register(
                MediansForWorkers(medians, problem, _this_host()), "perfmon-limits-medians"
            )
        if medians is None:
            note = f"perfmon: warning: history limits not applied: {problem}"
        else:
            hist_limits = history_limits(medians, history)
            note = (
                f"perfmon: history limits: {history.factor:g} x the median of the last "
                f"{history.runs} run(s) of this machine ({medians['runs']} found), "
                f"{len(hist_limits)} test(s) with history"
                + (
                    "; times judged without the wait for a CPU (PERFMON_NOISE=off: as measured)"
                    if getattr(history, "noise", True)
                    else "; times as measured (PERFMON_NOISE=off)"
                )
            )
    if measurer is not None:
        noise = bool(history is not None and getattr(history, "noise", True))
        config.pluginmanager.register(
            Limits(measurer, mode, defaults, worker, hist_limits, noise), "perfmon-limits"
        )
    if not worker:
        config.pluginmanager.register(LimitsReport(mode, note), "perfmon-limits-report")
