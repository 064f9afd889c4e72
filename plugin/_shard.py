"""``--perf-shard K/N``: run shard K of a CI matrix of N, split from the tests' durations.

Every job of the matrix computes the same split (:func:`pytest_perfmon.monitor.split.split`)
from the same inputs, without talking to the others: the collected node ids (sorted), the
durations source, N, the ``xdist_group`` names and the memory budget. The source:

- ``--perf-history`` (or ``PERFMON_HISTORY``, ini ``perf_history``): the history store's newest
  runs, of any machine, without the runs of this matrix (read by a child process:
  :mod:`pytest_perfmon.monitor.history.shards`);
- ``--perf-shard-from PATH``: one earlier report (single or merged) or a pytest-split
  ``.test_durations`` file;
- neither, or a store without figures for these tests: every test counts the same.

Deselection happens in ``pytest_collection_modifyitems`` (trylast: after ``-k``/``-m``), in
the process that collects: plain pytest, or each xdist worker. The xdist controller collects
nothing: it reads the figures once, before its workers start, and hands them to every worker
(``workerinput``), so that all of them deselect the same tests; the scheduler (``--perf-schedule``
too) sees only the shard's tests. A source that cannot be read stops the run (a usage error):
a job that split otherwise than the others would lose tests or run them twice.

A shard without tests exits 0 (not pytest's 5), saying so on one line. The report's
``session.shard`` records the shard (:meth:`~pytest_perfmon.monitor.split.Split.info`, with the
planned tests that did not run), and a run recorded in the history store is labelled
``perf_shard=K/N`` (and ``ci_run``), so that the other jobs of the matrix leave it out.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any, Optional

import pytest
from pytest_perfmon.monitor import split as splitting

PLUGIN_NAME = "perfmon-shard"
#: The workerinput key of the figures the controller hands its workers (and the workeroutput
#: key of the shard's report object).
WORKER_KEY = "perfmon_shard"
NO_TESTS = 5  # pytest.ExitCode.NO_TESTS_COLLECTED (pytest 7 has the enum too)


def parse_option(text: str) -> tuple:
    """The argparse type of ``--perf-shard``."""
    import argparse

    try:
        return splitting.parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _ini(config: pytest.Config, name: str) -> str:
    try:
        return str(config.getini(name) or "").strip()
    except (KeyError, ValueError):
        return ""


def configure(config: pytest.Config) -> None:
    """Register the shard's plugin; a bad setting is a usage error naming it."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        given = workerinput[WORKER_KEY]
        config.pluginmanager.register(
            ShardPlugin(config, given["k"], given["n"], "worker", data=given["data"]),
            PLUGIN_NAME,
        )
        return
    opt = config.option
    shard = getattr(opt, "perf_shard", None)
    if shard is None:
        raw = _ini(config, "perf_shard")
        if not raw:
            raise pytest.UsageError("--perf-shard-from works with --perf-shard K/N")
        try:
            shard = splitting.parse_shard(raw)
        except ValueError as exc:
            raise pytest.UsageError(f"perf_shard in the ini file: {exc}") from None
    k, n = shard
    from . import _settings

    where = str(config.invocation_params.dir)
    path = getattr(opt, "perf_shard_from", None)
    history = None
    if path is None:
        try:
            history = _settings._history(opt, config.getini, where, os.environ)
        except _settings.SettingError as exc:
            raise pytest.UsageError(str(exc)) from None
    budget = None
    memory = getattr(opt, "perf_max_memory", None)
    if memory is not None and memory != "auto":  # auto: this machine's; never in the split
        try:
            budget = splitting.prediction.parse_size(memory)
        except ValueError as exc:
            raise pytest.UsageError(f"--perf-max-memory: {exc} (or auto)") from None
    role = "controller" if config.pluginmanager.has_plugin("dsession") else "local"
    plugin = ShardPlugin(config, k, n, role, budget=budget)
    if path is not None:
        plugin.data = read_file(os.path.join(where, os.path.expanduser(path)))
    elif history is not None:
        plugin.ask_history(history)
    else:
        plugin.data = {"tests": {}, "source": "no durations (--perf-history, --perf-shard-from)"}
    config.pluginmanager.register(plugin, PLUGIN_NAME)


def read_file(path: str) -> dict:
    """The figures of ``--perf-shard-from PATH``; a usage error when it cannot be read."""
    from ._endings import moved_to

    try:
        return splitting.load_figures(moved_to(path))
    except splitting.SplitError as exc:  # the message names the file
        raise pytest.UsageError(f"--perf-shard-from: {exc}") from None


def _group(item: Any) -> Optional[str]:
    """The item's ``xdist_group`` name (as xdist reads it), or None."""
    mark = item.get_closest_marker("xdist_group")
    if mark is None:
        return None
    name = mark.args[0] if mark.args else mark.kwargs.get("name", "default")
    return str(name)


def _base(nodeid: str, group: Optional[str]) -> str:
    """The node id without the ``@group`` suffix xdist's workers add under --dist loadgroup."""
    if group is not None and nodeid.endswith("@" + group):
        return nodeid[: -len(group) - 1]
    return nodeid


class ShardPlugin:
    def __init__(
        self,
        config: pytest.Config,
        k: int,
        n: int,
        role: str,
        data: Optional[dict] = None,
        budget: Optional[float] = None,
    ) -> None:
        self.config = config
        self.k, self.n = k, n
        self.role = role  # local | controller | worker
        self.data = data
        self.budget = budget
        self.source: Any = None  # the history's child process
        self.info: Optional[dict] = None  # the report's session.shard (without not_run)
        self.planned: Optional[list] = None  # this shard's node ids, as collected
        self.over: list = []  # the tests over --perf-max-memory on any shard alone
        self.reported: set = set()
        if role == "worker":
            wi = config.workerinput  # type: ignore[attr-defined]  # xdist sets it on a worker
            self.workers = int(wi.get("workercount") or 1)
            self.budget = wi[WORKER_KEY].get("budget")
        elif role == "controller":
            from xdist.workermanage import parse_tx_spec_config

            self.workers = len(parse_tx_spec_config(config))
        else:
            self.workers = 1

    # ---------------------------------------------------------------- the figures
    def ask_history(self, url: str) -> None:
        from ._schedule_inputs import HistorySource

        labels = dict(getattr(self.config.option, "perf_label", None) or ())
        extra = [str(self.n), "--rootdir", str(self.config.rootpath)]
        if labels.get("commit"):
            extra += ["--commit", labels["commit"]]
        run = splitting.ci_run(os.environ, labels)
        if run is not None:
            extra += ["--ci-run", run]
        self.source = HistorySource(url, splitting.history_runs(self.n), "shards", extra)

    def figures(self) -> dict:
        if self.data is None:
            from ._schedule_inputs import PlanError

            try:
                data = self.source.data(empty_ok=True)
            except PlanError as exc:
                raise pytest.UsageError(
                    f"--perf-shard {self.k}/{self.n}: {exc}; the jobs of the matrix would not "
                    "split alike, so this one stops"
                ) from None
            left = data.get("excluded") or 0
            mine = f", {left} of this matrix left out" if left else ""
            data["source"] = f"the history ({data.get('runs') or 0} run(s), any machine{mine})"
            self.data = data
        return self.data

    def pytest_sessionstart(self) -> None:
        if self.role == "controller":
            self.figures()  # before the workers start: each gets them

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[WORKER_KEY] = {
            "k": self.k,
            "n": self.n,
            "data": self.figures(),
            "budget": self.budget,
        }

    def pytest_unconfigure(self) -> None:
        if self.source is not None:
            self.source.close()

    # ---------------------------------------------------------------- the split
    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: Any, items: list) -> None:
        groups = {}
        ids = []
        for item in items:
            g = _group(item)
            nid = _base(item.nodeid, g)
            ids.append(nid)
            groups[nid] = g
        plan = splitting.split(ids, self.figures(), self.n, groups, self.budget, self.workers)
        mine = set(plan.shards[self.k - 1].tests)
        keep, drop, order = [], [], []
        for item, nid in zip(items, ids):
            if nid in mine:
                keep.append(item)
                order.append(nid)
            else:
                drop.append(item)
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep
        scheduled = getattr(config.option, "perf_schedule", None) is not None
        self.info = plan.info(self.k, plan.wall(self.k, order, scheduled))
        if plan.over_budget:
            self.info["over_budget"] = plan.over_budget[:20]
        self.over = list(plan.over_budget)
        self.planned = [item.nodeid for item in keep]

    def pytest_runtest_logreport(self, report: Any) -> None:
        self.reported.add(report.nodeid)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list) -> None:
        if self.planned is None:
            self.planned = list(ids)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        out = getattr(node, "workeroutput", None) or {}
        if self.info is None and isinstance(out.get(WORKER_KEY), dict):
            self.info = out[WORKER_KEY]

    def shard_object(self) -> dict:
        """The report's ``session.shard``: the plan's figures and the tests that did not run."""
        info = dict(self.info) if self.info is not None else {}
        if not info:  # no plan (a source that failed), or an xdist controller whose workers
            # all died before the end
            source = (self.data or {}).get("source") or "?"
            info = {"k": self.k, "n": self.n, "source": source, "tests": len(self.planned or ())}
        missed = [t for t in self.planned or () if t not in self.reported]
        info["not_run"] = missed[: splitting.MAX_NOT_RUN]
        info["not_run_count"] = len(missed)
        return info

    @pytest.hookimpl(hookwrapper=True)
    def pytest_sessionfinish(self, session: Any, exitstatus: Any) -> Generator[None, Any, None]:
        if self.role == "worker":
            if self.info is not None:
                # xdist sets workeroutput on a worker's config: pytest's Config declares none
                self.config.workeroutput[WORKER_KEY] = self.info  # type: ignore[attr-defined]
            yield
            return
        role = self.config.pluginmanager.get_plugin("perfmon-session")
        owner = getattr(role, "owner", None)
        if owner is not None:
            owner.shard = self.shard_object()
        yield
        if self.empty() and int(session.exitstatus) == NO_TESTS:
            session.exitstatus = 0

    def empty(self) -> bool:
        if self.info is not None:
            return not self.info.get("tests")
        return not self.planned

    def line(self) -> str:
        where = f"shard {self.k}/{self.n}"
        info = self.info or {"tests": len(self.planned or ()), "source": "?"}
        total = info.get("total_tests")
        if self.empty():
            over = f" ({total} test(s) over {self.n} shards)" if total is not None else ""
            return f"perfmon: {where} has no tests{over}: exit status 0"
        head = f"perfmon: {where}: {info.get('tests')} of {total} tests"
        if info.get("by_count"):
            return f"{head}, split by count ({info.get('source')})"
        walls = [w for _, w in info.get("shards") or ()]
        slowest = f", slowest shard {max(walls):.1f} s" if walls else ""
        return (
            f"{head}, predicted {info.get('predicted_s', 0):.1f} s of tests{slowest}, "
            f"from {info.get('source')}"
        )

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        planned = self.info is not None or self.planned is not None
        if self.role != "worker" and planned:  # not after a source that failed
            terminalreporter.write_line(self.line())
            over = self.over
            if over:  # no shard can hold these within --perf-max-memory
                more = f" and {len(over) - 5} more" if len(over) > 5 else ""
                shown = ", ".join(over[:5]) + more
                terminalreporter.write_line(
                    f"perfmon: warning: over --perf-max-memory on any shard alone: {shown}",
                    yellow=True,
                )


def finish_fields(info: dict, shard: dict, labels: Optional[dict]) -> None:
    """Add the shard to a ``finish`` body: ``shard``, the labels of its run in the history store
    (when it records one), and exit status 0 for a shard without tests."""
    info["shard"] = shard
    if labels is not None:
        info["labels"] = splitting.shard_labels(shard["k"], shard["n"], os.environ, labels)
    if not shard.get("tests") and info.get("exit_status") == NO_TESTS:
        info["exit_status"] = 0
