"""``--perf-schedule``: a pytest-xdist scheduler that runs the longest predicted tests first.

It runs in the xdist controller, never in a worker. The unit of work is a test (``--dist load``
or ``worksteal``) or a group (``loadscope``: module or class; ``loadfile``; ``loadgroup``: the
``xdist_group`` name), grouped exactly as xdist groups them; a group's prediction is the sum of
its tests' durations and the largest of their memory peaks. Units go out longest first, each to
the least loaded worker that wants work; a worker wants work while it holds fewer than two
tests (it runs a test once it knows the next) or less predicted work than a quarter of the rest
divided by the workers. When nothing is left to hand out, an idle worker steals the tail units
of the busiest one (xdist's ``steal`` command: all of a unit or nothing, so a group is never
split) when they would finish earlier there.

``--perf-max-memory``: a worker's tests run one after the other, so what a worker may hold at
once is the largest peak among the tests it has been given; n workers' baseline plus those
must stay under the budget. A unit that would pass it is held back (lighter ones go first)
until a heavy test ends; one that passes it alone runs when nothing else runs, with a warning.

With nothing to plan from, every call goes to xdist's own scheduler for the --dist mode.
"""

from __future__ import annotations

import bisect
import sys
from collections.abc import Sequence
from typing import Any, Callable, Optional

import pytest

from ._schedule_inputs import Plan, PlanError

MIN_PENDING = 2  # a worker runs a test once it knows the next one (or is told to stop)
GROUPED = ("loadscope", "loadfile", "loadgroup")
MODES = ("load", "worksteal") + GROUPED


def group_key(dist: str, nodeid: str) -> str:
    """The work unit of ``nodeid`` under ``--dist`` (xdist's own grouping)."""
    if dist == "loadscope":
        return nodeid.rsplit("::", 1)[0]
    if dist == "loadfile":
        return nodeid.split("::", 1)[0]
    if dist == "loadgroup" and nodeid.rfind("@") > nodeid.rfind("]"):
        return nodeid.split("@")[-1]
    return nodeid


def host_of(node: Any) -> str:
    """The host a worker runs on, as its ``--tx`` spec says: ``ssh=HOST`` or ``socket=H:P``;
    a ``via=ID`` worker runs where that proxy gateway runs; a plain popen, here (""). The
    ``--perf-max-memory`` budget holds for each host's workers."""
    spec = getattr(getattr(node, "gateway", None), "spec", None)
    if spec is None:
        return ""
    for key in ("ssh", "socket"):
        value = getattr(spec, key, None)
        if value:
            return f"{key}={value}"
    via = getattr(spec, "via", None)
    return f"via={via}" if via else ""


class Unit:
    __slots__ = ("indices", "duration", "extra", "left")

    def __init__(self, indices: list, duration: float, extra: float) -> None:
        self.indices = indices  # collection indices, in collection order
        self.duration = duration  # predicted, s
        self.extra = extra  # predicted peak above a worker's baseline, MB
        self.left = len(indices)  # not yet reported complete


class PerfScheduling:
    """The xdist scheduler interface (``nodes``, ``collection_is_completed``, ``tests_finished``,
    ``has_pending``, ``add_node``, ``add_node_collection``, ``mark_test_complete``,
    ``mark_test_pending``, ``remove_pending_tests_from_node``, ``remove_node``, ``schedule``)."""

    def __init__(
        self,
        numnodes: int,
        dist: str,
        inner: Any,
        planner: Callable[[Sequence[str]], Plan],
        budget_mb: Optional[float],
        say: Callable[[str], None],
        log: Any = None,
        config: Any = None,
    ) -> None:
        #: pytest's config, as xdist's schedulers have it: other plugins read it from the
        #: scheduler (pytest-rerunfailures' crash hook: ``sched.config.failures_db``).
        self.config = config
        self.numnodes = numnodes
        self.dist = dist
        self.inner = inner  # xdist's scheduler for this --dist: used when there is no plan
        self.planner = planner
        self.budget = budget_mb
        self.say = say
        self.log = log if log is not None else (lambda *a: None)
        self.delegate = False
        self.node2collection: dict = {}
        self.node2pending: dict = {}  # node -> collection indices sent, in order
        self.node2units: dict = {}  # node -> units sent and not finished, in order
        self.work: dict = {}  # node -> predicted seconds of its pending tests
        self.live: dict = {}  # node -> MB above baseline it may hold now (0 when it waits)
        self.collection: Optional[list] = None
        self.plan: Optional[Plan] = None
        self.queue: list = []  # units not handed out, longest first
        self._keys: list = []  # -duration of each queued unit (bisect)
        self.queued_work = 0.0
        self.steal: Optional[tuple] = None  # (node, units) of the one steal request out
        self.warned: set = set()  # units said to run alone
        self.warned_base = False  # said that the workers alone are over the budget
        self.staged: dict = {}  # node -> indices to send at the end of this pass

    # ------------------------------------------------------------------ xdist's interface
    @property
    def nodes(self) -> list:
        return self.inner.nodes if self.delegate else list(self.node2pending)

    @property
    def collection_is_completed(self) -> bool:
        return len(self.node2collection) >= self.numnodes

    @property
    def tests_finished(self) -> bool:
        if self.delegate:
            return self.inner.tests_finished
        if not self.collection_is_completed or self.collection is None:
            return False
        if self.queue or self.steal is not None:
            return False
        return all(not p or (len(p) == 1 and n.shutting_down) for n, p in self.node2pending.items())

    @property
    def has_pending(self) -> bool:
        if self.delegate:
            return self.inner.has_pending
        return bool(self.queue) or any(self.node2pending.values())

    def add_node(self, node: Any) -> None:
        if self.delegate or self.collection is None:
            self.inner.add_node(node)
            if self.delegate:
                return
        self.node2pending[node] = []
        self.node2units[node] = []
        self.work[node] = 0.0
        self.live[node] = 0.0

    def add_node_collection(self, node: Any, collection: Sequence[str]) -> None:
        if self.delegate or self.collection is None:
            self.inner.add_node_collection(node, collection)
            if self.delegate:
                return
        if self.collection is not None and list(collection) != self.collection:
            self.say(f"perfmon: warning: {node.gateway.id} collected other tests: stopped")
            node.shutdown()  # it gets nothing; stopped, it leaves like a finished worker
            return
        self.node2collection[node] = list(collection)

    def mark_test_complete(self, node: Any, item_index: int, duration: float = 0) -> None:
        if self.delegate:
            return self.inner.mark_test_complete(node, item_index, duration)
        self.node2pending[node].remove(item_index)
        self.work[node] -= self.planned.durations[item_index]
        units = self.node2units[node]
        for i, u in enumerate(units):
            if item_index in u.indices:
                u.left -= 1
                if not u.left:
                    del units[i]
                break
        self._update(node)
        self.check_schedule()

    def mark_test_pending(self, item: str) -> None:
        if self.delegate:
            return self.inner.mark_test_pending(item)
        self._enqueue(self._unit([self.planned_ids.index(item)]), front=True)
        self.check_schedule()

    def remove_pending_tests_from_node(self, node: Any, indices: Sequence[int]) -> None:
        if self.delegate:
            return self.inner.remove_pending_tests_from_node(node, indices)
        units = self.steal[1] if self.steal and self.steal[0] is node else []
        self.steal = None
        taken = set(indices)
        if taken and node in self.node2pending:
            self.node2pending[node] = [i for i in self.node2pending[node] if i not in taken]
            self.node2units[node] = [u for u in self.node2units[node] if u not in units]
            self.work[node] -= sum(self.planned.durations[i] for i in taken)
            back = [u for u in units if taken.issuperset(u.indices)]
            covered = {i for u in back for i in u.indices}
            back += [self._unit([i]) for i in sorted(taken - covered)]  # never lose a test
            for u in back:
                self._enqueue(u)
            self._update(node)
        self.check_schedule()

    def remove_node(self, node: Any) -> Optional[str]:
        if self.delegate:
            return self.inner.remove_node(node)
        pending = self.node2pending.pop(node, [])
        units = self.node2units.pop(node, [])
        self.work.pop(node, None)
        self.live.pop(node, None)
        if self.collection is None:  # before the plan: nothing was sent
            self.node2collection.pop(node, None)
            return self.inner.remove_node(node)
        if self.steal is not None and self.steal[0] is node:
            self.steal = None
        if not pending:
            return None
        crashed = pending[0]
        left = set(pending[1:])
        for u in units:
            rest = [i for i in u.indices if i in left]
            if rest:
                self._enqueue(self._unit(rest))
        self.check_schedule()
        return self.collection[crashed]

    def schedule(self) -> None:
        if self.delegate:
            return self.inner.schedule()
        if self.collection is not None:  # a node was added later
            return self.check_schedule()
        collection = next(iter(self.node2collection.values()))
        if any(c != collection for c in self.node2collection.values()):
            self.delegate = True  # xdist reports the difference and aborts
            return self.inner.schedule()
        try:
            self.plan = self.planner(collection)
        except Exception as exc:  # noqa: BLE001 - our failure never becomes the session's
            why = (
                str(exc)
                if isinstance(exc, PlanError)
                else f"internal error while planning ({exc!r})"
            )
            self.say(f"perfmon: warning: --perf-schedule: {why}; xdist schedules this run")
            self.delegate = True
            return self.inner.schedule()
        self.collection = collection
        self._make_units()
        self.check_schedule()

    # ------------------------------------------------------------------ planning
    # Past schedule()'s plan (xdist calls the methods that use these only then).
    @property
    def planned(self) -> Plan:
        assert self.plan is not None, "no plan before schedule()"
        return self.plan

    @property
    def planned_ids(self) -> list:
        """The collection the plan is for."""
        assert self.collection is not None, "no plan before schedule()"
        return self.collection

    def _make_units(self) -> None:
        groups: dict = {}
        for i, nodeid in enumerate(self.planned_ids):
            groups.setdefault(group_key(self.dist, nodeid), []).append(i)
        for indices in groups.values():
            self._enqueue(self._unit(indices))

    def _unit(self, indices: list) -> Unit:
        """Tests that go to one worker together: their summed duration, their largest peak."""
        d, x = self.planned.durations, self.planned.extras
        return Unit(indices, sum(d[i] for i in indices), max(x[i] for i in indices))

    def _enqueue(self, unit: Unit, front: bool = False) -> None:
        key = -unit.duration
        if front:  # as xdist does with a test it is given back: first, keys stay sorted
            at, key = 0, min([key] + self._keys[:1])
        else:
            at = bisect.bisect_right(self._keys, key)
        self.queue.insert(at, unit)
        self._keys.insert(at, key)
        self.queued_work += unit.duration

    def _take(self, at: int) -> Unit:
        del self._keys[at]
        unit = self.queue.pop(at)
        self.queued_work -= unit.duration
        return unit

    def _update(self, node: Any) -> None:
        """The memory ``node`` may hold now: its heaviest unit while it runs, else nothing."""
        units = self.node2units[node]
        running = len(self.node2pending[node]) >= MIN_PENDING or node.shutting_down
        self.live[node] = max((u.extra for u in units), default=0.0) if running else 0.0

    def _fits(self, node: Any, unit: Optional[Unit], others: float) -> bool:
        """Whether giving ``unit`` to ``node`` (or, for None, telling it to run its last test)
        keeps n workers' baseline plus what each may hold under the budget."""
        if self.budget is None:
            return True
        count = len(self.node2pending[node]) + (len(unit.indices) if unit else 0)
        if count < MIN_PENDING and unit is not None and not node.shutting_down:
            return True  # it waits for a second test: nothing starts
        held = self.node2units[node] + ([unit] if unit else [])
        host = host_of(node)
        neighbours = sum(1 for n in self.node2pending if host_of(n) == host)
        base = self.planned.baseline_mb * neighbours
        if base + others + max((u.extra for u in held), default=0.0) <= self.budget:
            return True
        if others > 0:
            return False  # wait for a running heavy test to end
        if base > self.budget:  # the workers alone: every test runs alone, said once
            if not self.warned_base:
                self.warned_base = True
                self.say(
                    f"perfmon: warning: {neighbours} worker(s) of "
                    f"{self.planned.baseline_mb:.0f} MB each are over --perf-max-memory "
                    f"({self.budget:.0f} MB) before any test: the budget cannot be held "
                    "(two tests predicted to need memory never run at once on its host)"
                )
            return True
        for u in held:  # over the budget on its own: it runs alone
            if base + u.extra > self.budget and u not in self.warned:
                self.warned.add(u)
                self.say(
                    f"perfmon: warning: {self._name(u)} is predicted to need {u.extra:.0f} MB "
                    f"above a worker's {self.planned.baseline_mb:.0f} MB, more than "
                    f"--perf-max-memory ({self.budget:.0f} MB) allows beside "
                    f"{neighbours} worker(s) of its host: it runs alone"
                )
        return True

    def _name(self, unit: Unit) -> str:
        first = self.planned_ids[unit.indices[0]]
        return first if len(unit.indices) == 1 else f"group {group_key(self.dist, first)}"

    def _others(self, node: Any) -> float:
        """What the other workers of ``node``'s host may hold now (the budget is per host)."""
        host = host_of(node)
        return sum(v for n, v in self.live.items() if n is not node and host_of(n) == host)

    def _wants(self, node: Any, target: float) -> bool:
        if len(self.node2pending[node]) < MIN_PENDING:
            return True
        return self.dist not in GROUPED and self.work[node] < target

    def _pick(self, node: Any) -> Optional[Unit]:
        if self.budget is None:
            return self._take(0)
        others = self._others(node)
        for at, unit in enumerate(self.queue):
            if self._fits(node, unit, others):
                return self._take(at)
        return None

    def _send(self, node: Any, unit: Unit) -> None:
        self.node2pending[node].extend(unit.indices)
        self.node2units[node].append(unit)
        self.work[node] += unit.duration
        self._update(node)
        self.staged.setdefault(node, []).extend(unit.indices)

    def check_schedule(self) -> None:
        if self.delegate or self.collection is None:
            return
        up = [n for n in self.node2pending if not n.shutting_down]
        sent = True
        while sent and self.queue:
            sent = False
            target = self.queued_work / (4 * max(1, len(up)))
            for node in sorted(up, key=self.work.__getitem__):
                if self.queue and self._wants(node, target):
                    unit = self._pick(node)
                    if unit is not None:
                        self._send(node, unit)
                        sent = True
        for node, indices in self.staged.items():  # one message per worker
            node.send_runtest_some(indices)
        self.staged.clear()
        if self.queue or self.steal is not None:
            return
        idle = [n for n in up if len(self.node2pending[n]) < MIN_PENDING]
        if idle and self._steal_for(min(idle, key=self.work.__getitem__)):
            return
        # Nothing left to give. With nothing left to steal either (what can be stolen only
        # shrinks), every worker is told now, as xdist does: it ends after its last test without
        # waiting for a word. Otherwise only the idle ones: a busy one may become a thief.
        last_call = not any(self._stealable(n) for n in up)
        for node in up if last_call else idle:
            busy = len(self.node2pending[node]) >= MIN_PENDING  # already counted as running
            if busy or self._fits(node, None, self._others(node)):
                node.shutdown()
                self._update(node)

    def _stealable(self, node: Any) -> list:
        """``node``'s units that have not started: those at position >= 2 of its tests."""
        out, seen = [], 0
        for u in self.node2units[node]:
            if seen >= MIN_PENDING:
                out.append(u)
            seen += u.left
        return out

    def _steal_for(self, thief: Any) -> bool:
        """Ask the busiest worker for its tail units that would end sooner on ``thief``."""
        best = None
        for node in self.node2units:
            if node is thief or node.shutting_down:
                continue
            stealable = self._stealable(node)
            if stealable and (best is None or self.work[node] > self.work[best[0]]):
                best = (node, stealable)
        if best is None:
            return False
        node, stealable = best
        victim, mine, take = self.work[node], self.work[thief], []
        for u in reversed(stealable):
            if mine + u.duration < victim - u.duration:
                take.append(u)
                mine += u.duration
                victim -= u.duration
            else:
                break
        if not take:
            return False
        self.steal = (node, take)
        node.send_steal([i for u in reversed(take) for i in u.indices])
        return True


def _xdist_scheduler(dist: str, config: Any, log: Any) -> Any:
    """xdist's own scheduler for ``dist``."""
    from xdist import scheduler as xdist_scheduler

    kinds = {
        "load": xdist_scheduler.LoadScheduling,
        "loadscope": xdist_scheduler.LoadScopeScheduling,
        "loadfile": xdist_scheduler.LoadFileScheduling,
        "loadgroup": xdist_scheduler.LoadGroupScheduling,
        "worksteal": xdist_scheduler.WorkStealingScheduling,
    }
    return kinds[dist](config, log)


class SchedulePlugin:
    """Registered in the controller with --perf-schedule: makes the scheduler, and says in one
    line what it plans from (or why xdist schedules instead)."""

    def __init__(self, config: Any, schedule: Any) -> None:
        self.config = config
        self.schedule = schedule  # _settings.Schedule
        self.source: Any = None  # the HistorySource asked at session start
        self.budget: Optional[float] = None  # MB

    def say(self, line: str) -> None:
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        if tr is None:
            print(line, file=sys.stderr)
            return
        tr.ensure_newline()
        tr.write_line(line, yellow="warning" in line)

    def pytest_sessionstart(self) -> None:
        if not self.config.pluginmanager.has_plugin("dsession"):
            self.say("perfmon: warning: --perf-schedule works with pytest-xdist's -n N: not used")
        elif self.schedule.history is not None:
            from ._schedule_inputs import HistorySource

            self.source = HistorySource(self.schedule.history)

    def pytest_unconfigure(self) -> None:
        if self.source is not None:
            self.source.close()

    @staticmethod
    def _budget(text: Optional[str]) -> Optional[float]:
        if text is None:
            return None
        if text == "auto":
            import psutil

            return psutil.virtual_memory().available / (1024 * 1024)
        from pytest_perfmon.monitor.predict import parse_size

        return parse_size(text)

    def plan(self, collection: Sequence[str]) -> Plan:
        from ._schedule_inputs import make_plan, report_data

        if self.schedule.report is not None:
            data = report_data(self.schedule.report)
        else:
            data = self.source.data()
        dist = self.config.getvalue("dist")
        plan = make_plan(collection, data, strip_group=dist == "loadgroup")
        budget = self.budget
        memory = f"; memory budget {budget:.0f} MB" if budget is not None else ""
        self.say(
            f"perfmon: scheduling {len(collection)} tests longest first from {plan.source}, "
            f"{plan.unknown} without data{memory}"
        )
        return plan

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(self, config: Any, log: Any) -> Optional[PerfScheduling]:
        dist = config.getvalue("dist")
        if dist not in MODES:
            self.say(f"perfmon: warning: --perf-schedule does not apply to --dist {dist}")
            return None
        from xdist.workermanage import parse_tx_spec_config

        self.budget = self._budget(self.schedule.max_memory)
        return PerfScheduling(
            numnodes=len(parse_tx_spec_config(config)),
            dist=dist,
            inner=_xdist_scheduler(dist, config, log),
            planner=self.plan,
            budget_mb=self.budget,
            say=self.say,
            log=log.perfsched if log is not None else None,
            config=config,
        )


def install(config: Any, schedule: Any) -> None:
    """Register the scheduler's plugin; its xdist hook is optional (xdist may be absent)."""
    config.pluginmanager.register(SchedulePlugin(config, schedule), "perfmon-schedule")
