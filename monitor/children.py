"""The ``children`` blocks of one test process: its descendants' CPU, memory and count, each
billed to whoever started it.

Who started a descendant: the test, or the shared fixture (session to class scope), whose span
holds the moment it was born (the samples' create time, by the same wall clock as the tests'
records; Linux: to the clock tick, ``BORN_SLACK``). A shared fixture's spans are its setup and
its teardown; a test's, its whole protocol, less its shared fixtures'. A process is billed to
its starter for its whole life as the samples see it, also after the test that started it
ended (a daemon it leaves behind); one born outside every span (at collection, in a plugin's
session hooks) is billed to none.

CPU comes from two sources: the RUSAGE_CHILDREN delta the plugin read in the test's process at
the test's boundaries (its shared fixtures' own deltas taken off and given to them), and the
collector's psutil samples of the test process's descendants.

Each sampled descendant carries its CPU time with the CPU of the children it reaped (Linux:
``cutime``/``cstime``), and its parent. At every moment, the CPU the test process's tree has
used is the RUSAGE_CHILDREN of the test process plus that sum over its live descendants: a
process that ends moves, when it is reaped, from the sum into its reaper's count, whoever the
reaper is (the test process, a child that waits for its own children, a ``multiprocessing``
forkserver that lives across tests). The samples say who the reaper was, so each CPU second is
counted once: through the test process's RUSAGE_CHILDREN or through a sampled reaper.

``processes``: the processes the test process itself started, counted by the plugin as they
start (every one, however short: ``subprocess``, ``os.fork``, ``os.posix_spawn``,
``os.system``, ...: ``plugin/_counters.py``), or the sampled children of the test process when
more (a start the count cannot see: ``multiprocessing``'s spawn and forkserver, a C extension),
plus the sampled descendants of those (grandchildren, a forkserver's workers).
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any, Optional

from .record import amount as _amount

#: How much earlier than its birth a sampled create time may be: Linux counts in clock ticks
#: (1/100 s) and truncates; elsewhere create times are exact.
BORN_SLACK = 0.012


#: How much more than the CPU a RUSAGE delta shows the samples may have counted of a process.
CPU_SLACK = 0.021


def _mb(v: Any) -> Any:
    return None if v is None else round(v / (1024.0 * 1024.0), 3)


def _parts(sample: Any) -> tuple[dict, dict]:
    """A descendant sample's ({(pid, born): CPU s}, {pid: parent pid}); the parents are
    empty in samples from before they were kept (a journal of an older collector)."""
    if sample is None:
        return {}, {}
    return sample[1], (sample[2] if len(sample) > 2 else {})


def _reaper(key: tuple, parents: dict, key_of: dict, alive: Any, root: int) -> Optional[tuple]:
    """Who reaped ``key``, which was in one sample and is not in the next: its nearest ancestor
    still there (a descendant that waits for its children), or None for the test process (its
    RUSAGE_CHILDREN has the CPU), which is also the answer when the parent is not known."""
    pid = key[0]
    for _ in range(len(key_of) + 1):  # bounded: a parent map can never loop, but be sure
        ppid = parents.get(pid)
        if ppid is None or ppid == root:
            return None
        pk = key_of.get(ppid)
        if pk is None:
            return None
        if pk in alive:
            return pk
        pid = ppid
    return None


class Starter:
    """Who may have started a process: a test or a shared fixture, with its spans and what
    the plugin counted in them (``cpu``: its RUSAGE_CHILDREN delta, ``started``: the
    processes the test process started)."""

    __slots__ = (
        "owner",
        "spans",
        "cpu",
        "started",
        "fixture",
        "direct",
        "other",
        "billed",
        "peak",
        "taken",
        "foreign",
    )

    def __init__(self, owner: Any, spans: list, cpu: Any, started: Any, fixture: bool) -> None:
        self.owner = owner
        self.spans = spans  # [(start, stop)], wall clock
        self.cpu = cpu if _amount(cpu) and cpu > 0 else 0.0
        self.started = started if isinstance(started, int) and started > 0 else 0
        self.fixture = fixture
        self.direct: set = set()  # sampled children of the test process it started
        self.other: set = set()  # sampled descendants further down
        self.billed = 0.0  # CPU from the samples
        self.peak: Optional[int] = None  # the largest RSS sum of its processes in one sample
        self.taken = 0.0  # of ``cpu``: what the samples had counted of the children it reaped
        self.foreign: dict = {}  # Starter -> CPU counted of their processes it reaped


class _Starters:
    """Every starter of one process, and the one a birth belongs to."""

    def __init__(self, starters: list) -> None:
        self.all = starters
        # by the span alone: two starters with one span (a frozen clock) are not comparable
        spans = sorted(((s, e, st) for st in starters for s, e in st.spans), key=lambda x: x[:2])
        self.starts = [s for s, _, _ in spans]
        self.spans = spans
        self.widest = max((e - s for s, e, _ in spans), default=0.0)

    def near(self, a: float, b: float) -> list:
        """The starters with a span overlapping [a, b]."""
        hi = bisect_right(self.starts, b)
        out = []
        for i in range(hi - 1, -1, -1):
            s, e, st = self.spans[i]
            if e < a:
                if s < a - self.widest:
                    break
                continue
            if st not in out:
                out.append(st)
        return out

    def of(self, born: float, direct: bool, parents: Optional[Starter] = None) -> Optional[Starter]:
        """Who started a process born at ``born`` (the tick it began in). For a child of the
        test process, first one whose counted starts are not all taken yet by the children
        born before (the count is exact, the birth only to the tick); for a process its
        parent started within the same tick (a shell and its command), the parent's
        (``parents``), when near; then a shared fixture before the test around it; then the
        later."""
        near = self.near(born, born + BORN_SLACK)
        if not near:
            return None
        if not direct and parents is not None and parents in near:
            return parents  # (a shell's command at a test's first line, not the fixture before)
        return max(
            near,
            key=lambda st: (
                (st.started > len(st.direct)) if direct else False,
                st.fixture,
                max(s for s, _ in st.spans if s <= born + BORN_SLACK),
            ),
        )

    def at(self, t: float) -> Optional[Starter]:
        """The test (not a fixture) whose span holds ``t``."""
        for st in self.near(t, t):
            if not st.fixture:
                return st
        return None

    def stopper(self, cpu: float, a: float, b: float) -> bool:
        """Whether a test that started nothing, running between ``a`` and ``b``, reaped
        children worth ``cpu`` (a process someone else started: a test that stops it)."""
        return any(
            not (x.started or x.direct or x.other) and _room(x, cpu) for x in self.near(a, b)
        )

    def payer(self, st: Optional[Starter], cpu: float, a: float, b: float) -> Optional[Starter]:
        """Whose RUSAGE delta holds a process the test process reaped between the samples at
        ``a`` and ``b``, of which the samples counted ``cpu``: its starter, or a test or
        fixture then running, the first with that much RUSAGE not yet explained; None when
        none has (not reaped by the test process, or no getrusage: nothing to take off)."""
        # its starter first, then one that started nothing (its RUSAGE can only be others')
        near = sorted(
            self.near(a, b),
            key=lambda x: (x is not st, bool(x.started or x.direct or x.other), x.spans[0][0]),
        )
        for slack in (False, True):  # room for all of it first, then within the ticks
            for x in near:
                if _room(x, cpu, slack):
                    return x
        return None


def _room(x: Starter, cpu: float, slack: bool = True) -> bool:
    """Whether ``x``'s RUSAGE delta has ``cpu`` not yet explained (``slack``: psutil's CPU
    times are in clock ticks, Linux 1/100 s, user and system each)."""
    less = CPU_SLACK + 0.05 * cpu if slack else 1e-9
    return x.cpu > 0 and x.cpu - x.taken >= cpu - less


def bill(w: Any, starters: list) -> None:
    """Bill ``w``'s sampled descendants to ``starters`` (one :class:`Starter` per test and
    shared fixture of the process): each one's ``billed`` CPU, processes and peak (read them
    with :func:`block`)."""
    ts, ss = w.child_t, w.child_s
    who = _Starters(starters)
    root = w.pid
    owner_of: dict = {}  # key -> Starter or None
    peak: dict = {}  # Starter -> largest RSS sum of its processes in one sample

    # Every process sampled, in the order they were born, to its starter (its parent as first
    # seen: a process whose parent ends is reparented, and leaves the tree)
    first: dict = {}
    for sample in ss:
        if sample is not None:
            cpu, parents = _parts(sample)
            for k in cpu:
                if k not in first:
                    first[k] = parents.get(k[0])
    latest: dict = {}  # pid -> the key of the process of that pid born last so far
    for k in sorted(first, key=lambda k: (k[1], k[0])):
        direct = first[k] == root
        parent = None if direct else latest.get(first[k])
        # its parent's starter, for a process born within a tick of its parent (a shell and
        # its command); not a forkserver's or a server's worker, born long after them
        same_start = parent is not None and k[1] - parent[1] <= BORN_SLACK
        st = owner_of[k] = who.of(k[1], direct, owner_of.get(parent) if same_start else None)
        if st is not None:
            (st.direct if direct else st.other).add(k)
        latest[k[0]] = k

    n = len(ts)
    for j in range(-1, n):
        x = ss[j] if j >= 0 else None
        xc, xp = _parts(x)
        if j + 1 < n:
            y = ss[j + 1]
            yc = _parts(y)[0]
            t_y = ts[j + 1]
            if y is not None:
                _peaks(y, yc, owner_of, peak)
        else:
            # After the last sample: a process is taken as ended and reaped by the test
            # process when the timeline ends inside the test that started it (the worker's
            # last test), or when a later test that started nothing has RUSAGE enough for it
            # (a test that stops it); any other as still running.
            last = who.at(ts[j]) if j >= 0 else None
            t_y = max((e for _, e, _ in who.spans), default=0.0)
            yc = {
                k: v
                for k, v in xc.items()
                if (owner_of.get(k) is not last or last is None)
                and not who.stopper(xc[k], ts[j], t_y)
            }
        owed: dict = {}  # reaper key -> {Starter of the reaped: CPU counted of them}
        dead = [k for k in xc if k not in yc]
        if dead:
            key_of = {k[0]: k for k in xc}
            t_x = ts[j]
            for k in dead:
                st = owner_of.get(k)
                r = _reaper(k, xp, key_of, yc, root)
                if r is None:
                    # the test process reaped it: a RUSAGE delta has its whole life, of
                    # which the samples counted xc[k] to its starter already
                    payer = who.payer(st, xc[k], t_x, t_y)
                    if payer is not None:
                        payer.billed -= xc[k]
                        payer.taken += xc[k]
                        if st is not None and payer is not st:
                            payer.foreign[st] = payer.foreign.get(st, 0.0) + xc[k]
                elif st is not None:
                    due = owed.setdefault(r, {})
                    due[st] = due.get(st, 0.0) + xc[k]
        for k, v in yc.items():
            grew = v - xc.get(k, 0.0)
            due = owed.get(k)
            if due:
                # its count grew by what the children it reaped used since the sample before,
                # and by its own use: that is theirs, shared as they were counted
                counted = sum(due.values())
                more = max(0.0, grew - counted)
                for st, c in due.items():
                    st.billed += more * (c / counted) if counted > 0 else more / len(due)
            elif grew > 0:
                st = owner_of.get(k)
                if st is not None:
                    st.billed += grew
    for st, p in peak.items():
        st.peak = p
    for st in starters:
        if st.foreign and not (st.started or st.direct or st.other):
            # It started nothing: its RUSAGE is the processes of others it reaped (a test
            # that stops a server another left running), what no sample saw of them included
            rest = max(0.0, st.cpu + st.billed)
            counted = sum(st.foreign.values())
            for other, c in st.foreign.items():
                other.billed += rest * c / counted if counted > 0 else 0.0
            st.cpu = st.billed = 0.0


def _peaks(y: Any, yc: dict, owner_of: dict, peak: dict) -> None:
    """The RSS of one sample's processes, summed by starter."""
    sizes = y[3] if len(y) > 3 else None
    sums: dict = {}
    for k in yc:
        st = owner_of.get(k)
        if st is None:
            continue
        if sizes is None:  # a journal of an older collector: the total, when all are one's
            sums[st] = y[0]
        else:
            sums[st] = sums.get(st, 0) + (sizes.get(k[0]) or 0)
    if sizes is None and len(sums) > 1:
        return
    for st, v in sums.items():
        if v > peak.get(st, -1):
            peak[st] = v


def block(st: Starter) -> Any:
    """The ``children`` block of a test or a shared fixture: None when it started no process
    and its reaped children used no CPU."""
    processes = max(st.started, len(st.direct)) + len(st.other)
    if not processes and st.cpu <= 0:
        return None
    return {
        "cpu_time": round(max(0.0, st.cpu + st.billed), 6),
        "peak_rss_mb": _mb(st.peak),
        "processes": processes,
    }
