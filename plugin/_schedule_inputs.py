"""What ``--perf-schedule`` plans from: per collected test its predicted duration and memory.

Two sources: the history store (``--perf-history URL``), read by a child process started at
configure time (the pytest process never imports the database layer) and waited for, at most
:data:`HISTORY_TIMEOUT` seconds, when the controller has its collection; or one earlier JSON
report (``--perf-schedule=REPORT.json``), read here. A test without data is predicted as
``perfmon predict`` does (its function's other parameters, its class, its file, the suite).
Problems never stop the run: :class:`PlanError` carries the one line the caller prints before
xdist schedules as usual.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

from pytest_perfmon.monitor import predict as prediction
from pytest_perfmon.monitor.units import number

#: How long the history's answer may take to come (a locked or remote store).
HISTORY_TIMEOUT = 30.0
#: Runs of the history the medians are taken over.
HISTORY_RUNS = 10
#: Planning never counts a test as taking no time (a zero would make chunks unbounded).
MIN_DURATION = 1e-4


class PlanError(Exception):
    """No plan for this run (one line, printed as a warning)."""


@dataclass(frozen=True)
class Plan:
    durations: list  # per collection index, s
    extras: list  # per collection index: MB above a worker's baseline at the test's peak
    baseline_mb: float  # a worker's RSS before its tests
    unknown: int  # tests predicted without data of their own
    source: str  # for the user: where the figures come from


class HistorySource:
    """The history store's medians, asked of a child process started at once."""

    def __init__(
        self,
        url: str,
        runs: int = HISTORY_RUNS,
        module: str = "schedule_inputs",
        extra: Sequence[str] = (),
    ) -> None:
        self.url = url
        self.proc: Optional[subprocess.Popen] = None
        self.problem: Optional[str] = None
        cmd = [sys.executable, "-m", f"pytest_perfmon.monitor.history.{module}", url, str(runs)]
        cmd += list(extra)
        try:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=os.path.dirname(os.path.abspath(__file__)),  # nothing of the cwd shadows us
            )
        except OSError as exc:
            self.problem = f"cannot read the history store: {exc}"

    def data(self, timeout: float = HISTORY_TIMEOUT, empty_ok: bool = False) -> dict:
        """{"tests": {nodeid: [duration, peak]}, "baseline_mb": b, "runs": n, ...}
        (``empty_ok``: also from a store without runs)."""
        if self.proc is None:
            raise PlanError(self.problem or "the history store was not asked")
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise PlanError(f"no answer from the history store within {timeout:.0f} s") from None
        if self.proc.returncode != 0:
            lines = err.decode("utf-8", "replace").strip().splitlines()
            raise PlanError(lines[-1] if lines else f"exit code {self.proc.returncode}")
        try:
            data = json.loads(out)
            runs = int(data["runs"])
            tests = data["tests"]
        except (ValueError, KeyError, TypeError):
            raise PlanError("the history store's answer could not be read") from None
        if (not runs or not tests) and not empty_ok:
            raise PlanError("the history store has no runs yet")
        where = "" if data.get("this_machine", True) else ", of another machine"
        data["source"] = f"the history ({runs} run(s){where})"
        return data

    def close(self) -> None:
        """Stop and reap the child (idempotent)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover - a process that ignores KILL
                pass


def report_data(path: str) -> dict:
    """The same shape as :meth:`HistorySource.data`, from one JSON report."""
    from pytest_perfmon.monitor.analysis import ReportError, load_report

    from ._endings import moved_to

    try:  # only what planning reads is checked: tests with a finite duration
        report: Any = load_report(moved_to(path), check=False)  # any JSON value: checked here
    except ReportError as exc:
        raise PlanError(str(exc)) from None
    tests = report.get("tests") if isinstance(report, dict) else None
    if not isinstance(tests, dict):
        raise PlanError(f"{path}: not a pytest-perfmon report (no tests object)")
    from pytest_perfmon.monitor.split import SplitError, report_durations

    try:
        data = report_durations(report, path)
    except SplitError as exc:
        raise PlanError(str(exc)) from None
    data["source"] = f"{os.path.basename(path)} ({len(data['tests'])} tests)"
    return data


def make_plan(collection: Sequence[str], data: dict, strip_group: bool = False) -> Plan:
    """Predictions for ``collection`` (node ids in collection order) from ``data``.
    ``strip_group``: look tests up without xdist's ``@group`` suffix (--dist loadgroup)."""
    series = {}
    for nodeid, (dur, peak) in data["tests"].items():
        series[nodeid] = {"duration": [dur], "peak_mb": [] if peak is None else [peak]}
    ids = list(collection)
    if strip_group:
        ids = [n.rsplit("@", 1)[0] if n.rfind("@") > n.rfind("]") else n for n in ids]
    try:
        estimates, unknown = prediction.estimate_tests(ids, series)
    except prediction.PredictError:
        raise PlanError(f"no history for any of these {len(ids)} tests") from None
    base = number(data.get("baseline_mb")) or 0.0
    return Plan(
        durations=[max(MIN_DURATION, e.duration) for e in estimates],
        extras=[max(0.0, (e.peak_mb or 0.0) - base) for e in estimates],
        baseline_mb=base,
        unknown=unknown,
        source=data.get("source", "?"),
    )
