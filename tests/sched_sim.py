"""A discrete-event model of pytest-xdist's workers and DSession loop, to drive a scheduler
in-process and check what no real run can show every time (no test lost or run twice, the
memory invariant at every instant, groups kept, no deadlock).

The worker follows xdist's ``remote.py``: it takes the next index before it runs the current
one (a test runs once the next is known, or shutdown), ``steal`` removes all the asked indices
from what it has not taken yet or none, and answers with ``unscheduled``. The controller
follows ``dsession.py``: after each event, ``tests_finished`` shuts every worker down. The real
thing is tested end to end in test_schedule.py.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque

SHUT = object()


class SimNode:
    def __init__(self, sim: Sim, name: str) -> None:
        self.sim = sim
        self.name = name
        self.torun: deque = deque()
        self.nxt = None  # the index taken as "next", not started
        self.has_next = False
        self.running = None
        self.shutting_down = False
        self.done = False
        self.dead = False  # crashed: it does nothing more
        self.ran: list = []  # (index, start, end)

    def __repr__(self) -> str:
        return self.name

    # what the scheduler calls
    def send_runtest_some(self, indices) -> None:
        assert not self.shutting_down, "tests sent after shutdown"
        self.torun.extend(indices)
        self.sim.later(self.sim.latency, self.advance)

    def shutdown(self) -> None:
        if not self.shutting_down:
            self.shutting_down = True
            self.torun.append(SHUT)
            self.sim.later(self.sim.latency, self.advance)

    def send_steal(self, indices) -> None:
        def answer() -> None:
            if self.dead:
                return
            want = set(indices)
            have = [i for i in self.torun if i in want]
            if len(have) == len(want):
                self.torun = deque(i for i in self.torun if i not in want)
            else:
                have = []
            self.sim.later(self.sim.latency, lambda: self.sim.unscheduled(self, have))

        self.sim.later(self.sim.latency, answer)

    # the worker's loop
    def advance(self) -> None:
        if self.running is not None or self.done or self.dead:
            return
        if not self.has_next:
            if not self.torun:
                return
            self.nxt, self.has_next = self.torun.popleft(), True
            if self.nxt is SHUT:
                self.done = True
                return
        if not self.torun:
            return
        item, self.nxt = self.nxt, self.torun.popleft()
        self.running = item
        start = self.sim.now
        self.sim.started(self, item)
        dur = self.sim.actual[item]

        def finish() -> None:
            if self.dead:
                return
            self.running = None
            self.ran.append((item, start, self.sim.now))
            self.sim.finished(self, item)
            if self.nxt is SHUT:
                self.done = True
            else:
                self.advance()

        self.sim.later(dur, finish)


class Sim:
    def __init__(self, sched, collection, actual, extras, latency: float = 0.001) -> None:
        self.sched = sched
        self.collection = collection
        self.actual = actual  # per index: how long it really takes
        self.extras = extras  # per index: MB it really holds above the baseline
        self.latency = latency
        self.now = 0.0
        self.events: list = []
        self.seq = itertools.count()
        self.nodes: list = []
        self.live: dict = {}  # node -> index running
        self.peak_extra = 0.0
        self.peak_alone_violation = False
        self.max_concurrent_extra: list = []  # (sum of extras running, running set)
        self.completed: list = []

    def later(self, dt: float, fn) -> None:
        heapq.heappush(self.events, (self.now + dt, next(self.seq), fn))

    def add_node(self, name: str) -> SimNode:
        node = SimNode(self, name)
        self.nodes.append(node)
        self.sched.add_node(node)
        self.sched.add_node_collection(node, self.collection)
        return node

    def started(self, node: SimNode, item: int) -> None:
        self.live[node] = item
        total = sum(self.extras[i] for i in self.live.values())
        self.max_concurrent_extra.append((total, sorted(self.live.values())))

    def finished(self, node: SimNode, item: int) -> None:
        del self.live[node]
        self.completed.append(item)
        self.sched.mark_test_complete(node, item, self.actual[item])
        self.after_event()

    def unscheduled(self, node: SimNode, indices: list) -> None:
        self.sched.remove_pending_tests_from_node(node, indices)
        self.after_event()

    def after_event(self) -> None:
        if self.sched.tests_finished:
            for n in self.sched.nodes:
                n.shutdown()

    def run(
        self, workers: int, limit: float = 1e6, crash_at: float | None = None, rerun: bool = False
    ) -> float:
        for k in range(workers):
            self.add_node(f"gw{k}")
        assert self.sched.collection_is_completed
        self.sched.schedule()
        self.after_event()
        crashed = False
        while self.events:
            t, _, fn = heapq.heappop(self.events)
            assert t < limit, "the simulated run does not end (a deadlock)"
            self.now = t
            fn()
            if crash_at is not None and not crashed and self.now >= crash_at:
                crashed = True
                self.crash(next(n for n in self.nodes if n.running is not None), rerun)
        return self.now

    def crash(self, node: SimNode, rerun: bool) -> None:
        """The worker dies in its test; xdist removes it and brings up a new one. ``rerun``:
        a pytest_handlecrashitem hook (as pytest-rerunfailures has) gives the test back."""
        node.dead = True
        self.live.pop(node, None)
        item = node.running
        node.running = None
        self.crashed_item = item
        returned = self.sched.remove_node(node)
        assert returned == self.collection[item]
        if rerun:
            self.sched.mark_test_pending(self.collection[item])
        else:
            self.completed.append(item)  # xdist reports it as a failure: not run again
        self.add_node(node.name + "b")
        self.sched.schedule()
        self.after_event()
