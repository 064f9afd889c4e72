"""Sampling the pytest processes' RSS with psutil: the one place the monitor and the daemon do it.

psutil is imported on first use, not at import time: the spawned monitor answers ``ready``
before its first sample, and every millisecond of its start-up delays the first test. On Linux
it is not imported at all unless a test process has descendants: the RSS is read from
``/proc/PID/statm`` as psutil reads it (importing psutil took about 20 ms of the monitor's
first sample, which a short run waits for at its goodbye).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable
from typing import Any, Optional

from . import noise

#: Bytes per read of a thread's ``children`` file (read to its end: a longer list takes more).
CHILDREN_READ = 4096

#: Per-process samples kept before the timeline is halved (max of each pair kept).
MAX_SAMPLES = 20000


def halve(w: Any) -> None:
    """Halve a worker's timeline, keeping the larger sample of each pair (peaks survive)."""
    ts, rs = w.samples_t, w.samples_rss
    nt, nr = [], []
    for i in range(0, len(ts) - 1, 2):
        j = i if rs[i] >= rs[i + 1] else i + 1
        nt.append(ts[j])
        nr.append(rs[j])
    if len(ts) % 2:
        nt.append(ts[-1])
        nr.append(rs[-1])
    w.samples_t, w.samples_rss = nt, nr


def add_samples(w: Any, ts: list, rss: list) -> None:
    """Append samples (times ascending) to worker ``w``'s timeline; its sampled peak follows."""
    if not ts:
        return
    w.samples_t.extend(ts)
    w.samples_rss.extend(rss)
    top = max(rss)
    if top > w.sampled_peak:
        w.sampled_peak = top
    while len(w.samples_t) > MAX_SAMPLES:
        halve(w)


def child_sample_out(sample: Any) -> Any:
    """A descendant sample as the journal keeps it: ``[total, [[pid, ctime, cpu, ppid, rss],
    ...]]`` (``ppid``, ``rss`` None where not known)."""
    if sample is None:
        return None
    total, cpu = sample[0], sample[1]
    parents = sample[2] if len(sample) > 2 else {}
    rss = sample[3] if len(sample) > 3 else {}
    return [
        total,
        [[pid, ct, c, parents.get(pid), rss.get(pid)] for (pid, ct), c in cpu.items()],
    ]


def _child_sample_in(x: Any) -> Any:
    """A journaled descendant sample back in memory; entries of three (journals written before
    the parent was kept: ``[pid, ctime, cpu]``), four (before each one's RSS was kept) or five
    fields."""
    if x is None:
        return None
    cpu, parents, rss = {}, {}, {}
    for e in x[1]:
        cpu[(e[0], e[1])] = e[2]
        if len(e) > 3 and e[3] is not None:
            parents[e[0]] = e[3]
        if len(e) > 4 and e[4] is not None:
            rss[e[0]] = e[4]
    return (x[0], cpu, parents, rss)


def add_child_samples(w: Any, ts: list, samples: list) -> None:
    """Append journaled descendant samples (times ascending) to ``w``'s descendant timeline."""
    for t, x in zip(ts, samples):
        w.child_t.append(t)
        w.child_s.append(_child_sample_in(x))
    while len(w.child_t) > MAX_SAMPLES:
        _halve_children(w)


def _children_on(w: Any) -> bool:
    m = w.boundary_methods
    return bool(m and m.get("children"))


def _halve_children(w: Any) -> None:
    """Halve a worker's descendant timeline: every other sample dropped, the last kept."""
    keep = list(range(len(w.child_t) - 1, -1, -2))[::-1]
    w.child_t = [w.child_t[i] for i in keep]
    w.child_s = [w.child_s[i] for i in keep]


class Sampler:
    """RSS of processes by pid, with one cached ``psutil.Process`` per pid.

    Descendants (the test processes' children, grandchildren, ...) are found, on Linux, by
    walking down from each test process through ``/proc/PID/task/TID/children`` (the children
    each of its threads started; a thread that ends hands its children to another thread of
    the process); elsewhere, and on a kernel without those files, from one map of every
    process's parent per sampling pass (psutil's, or a scan of ``/proc``: a cost that grows
    with the machine's process count). They are read through cached ``psutil.Process``
    objects (RSS and CPU times).

    Linux: the files read at every pass (each test process's ``statm``, its threads'
    ``children``) are kept open and read with ``pread``, within the noise reader's budget of
    open files: a monitor that wakes ten times a second finds them cold, and opening a
    ``/proc`` path (the lookup) cost about ten times the read (docs/benchmarks.md, "The
    monitor at rest").
    """

    def __init__(self) -> None:
        self.procs: dict[int, Any] = {}
        self.kids: dict[int, Any] = {}  # descendant pid -> psutil.Process
        self.kid_ctime: dict[int, float] = {}
        self.ppids: Optional[dict] = None  # pid -> ppid, built once per pass
        self.tree: dict = {}  # ppid -> [pid], from the same map
        self.ppids_at: Optional[float] = None
        self.prev_at: Optional[float] = None  # when the pass before began (see _new_pass)
        self.walked: dict = {}  # Linux: test pid -> (the pids its last walk saw, when)
        self.exclude = os.getpid()  # the collector itself (the plain pytest's child)
        #: The monitor's launcher, pytest's child (a zombie) until pytest reaps it: not one of
        #: the tests' descendants (sampling it imported psutil in every monitor at its first
        #: sample). Forgotten once it is gone.
        self.launcher: Optional[int] = None
        self.proc_ok = sys.platform.startswith("linux") and os.path.isdir("/proc/self")
        self.known: dict = {}  # Linux: pid -> ppid, read once per process (see _proc_ppids)
        self.noise = noise.NoiseReader()  # the noise counters, read at each sample
        self.boot: Optional[float] = None  # Linux: psutil's boot time (see born)
        # Linux: files kept open, read at every pass; each entry [fd or None, last pass]
        self.statm: dict[int, list] = {}  # pid -> its statm
        self.child_files: dict[tuple, list] = {}  # (pid, tid) -> that thread's children
        me = os.getpid()
        self.task_children = self.proc_ok and os.path.exists(f"/proc/{me}/task/{me}/children")

    def born(self, proc: Any) -> float:
        """When ``proc`` started, by this machine's wall clock. Linux: psutil adds to the start
        (clock ticks since boot) the boot time from /proc/stat, in whole seconds: up to a
        second off the clock the tests' records use, enough to put a child in the wrong
        test. The boot time is taken here from the clock itself (wall clock less
        CLOCK_BOOTTIME), leaving the tick (``children.BORN_SLACK``) as the only error."""
        ctime = float(proc.create_time())
        if not self.proc_ok:
            return ctime
        try:
            if self.boot is None:
                import psutil

                self.boot = float(psutil.boot_time())
            return ctime - self.boot + time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
        except (AttributeError, OSError, ValueError):  # pragma: no cover - Linux has both
            return ctime

    def _proc_ppids(self) -> dict:
        """Linux: pid -> ppid of every process, reading /proc/PID/stat only for the pids that
        were not there at the last pass (psutil reads every one, every pass: on a machine with
        a thousand processes, milliseconds per pass). A process's parent changes only when
        the parent dies: its descendants then hang off a pid that is gone, and are no longer
        the test's."""
        known = self.known
        fresh: dict = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            pid = int(name)
            ppid = known.get(pid)
            if ppid is None:
                try:
                    with open(f"/proc/{pid}/stat", "rb") as f:
                        data = f.read()
                    ppid = int(data[data.rindex(b")") + 2 :].split(None, 2)[1])
                except (OSError, ValueError, IndexError):
                    continue
            fresh[pid] = ppid
        self.known = fresh
        return fresh

    def _new_pass(self, now: float) -> None:
        """A pass at ``now`` begins. The daemon samples each session in turn, one
        ``sample_group`` each, all at the same ``now``: what a session's workers used in the
        pass before is kept until the end of this one (``forget_gone``)."""
        self.prev_at = self.ppids_at
        self.ppids_at = now
        if self.launcher is not None and not self._exists(self.launcher):
            self.launcher = None  # reaped: the pid may be a test's child's one day

    def _exists(self, pid: int) -> bool:
        if self.proc_ok:
            return os.path.exists(f"/proc/{pid}")
        import psutil

        return bool(psutil.pid_exists(pid))

    def _kept(
        self, files: dict, key: Any, path: str, now: float, size: int, whole: bool = False
    ) -> Optional[bytes]:
        """Read ``path`` through the file kept open under ``key`` in ``files`` (opened at its
        first read, if the budget allows; else opened for this read); None once it is gone.
        ``whole``: ``size`` bytes at a time to the end (a seq_file hands out whole records:
        a read of ``size`` bytes can stop short of it with more to come).

        A kept ``statm`` of a process that ended answers ESRCH: the file is closed, and the
        path opened once more (a worker's pid used again by a new process: its first sample
        is read). A kept ``children`` file of a thread that ended reads empty; it is closed
        once its thread is no longer listed (``_close_unread``)."""
        entry = files.get(key)
        fresh = entry is None
        if entry is None:
            entry = files[key] = [self.noise.budget.open(path), now]
        entry[1] = now
        fd = entry[0]
        try:
            if fd is None:
                with open(path, "rb") as f:
                    return f.read() if whole else f.read(size)
            data = os.pread(fd, size, 0)
            if whole and data:
                chunks, at = [data], len(data)
                while more := os.pread(fd, size, at):
                    chunks.append(more)
                    at += len(more)
                data = b"".join(chunks)
            return data
        except OSError:  # the process (thread) ended: ESRCH, or ENOENT for the path
            self.noise.budget.close(fd)
            del files[key]
            if fd is not None and not fresh:
                return self._kept(files, key, path, now, size, whole)
            return None

    def _close_unread(self, files: dict, before: float) -> None:
        """Close the kept files last read before ``before``."""
        for key in [k for k, e in files.items() if e[1] < before]:
            self.noise.budget.close(files.pop(key)[0])

    def close(self) -> None:
        """Close every kept-open file (the noise reader's too)."""
        for files in (self.statm, self.child_files):
            for entry in files.values():
                self.noise.budget.close(entry[0])
            files.clear()
        self.noise.close()

    def _children_of(self, pid: int, now: float) -> list:
        """Linux: the pids of ``pid``'s children, from its threads' ``children`` files."""
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return []
        out: list = []
        for tid in tids:
            path = f"/proc/{pid}/task/{tid}/children"
            data = self._kept(self.child_files, (pid, tid), path, now, CHILDREN_READ, True)
            if data:
                out.extend(int(c) for c in data.split())
        return out

    def _walk(self, pid: int, now: float) -> list:
        """Linux: ``pid``'s live descendants, walking down the ``children`` files; their
        parents go into this pass's map (``self.ppids``)."""
        if self.ppids is None or self.ppids_at != now:
            self._new_pass(now)
            self.ppids = {}
        ppids = self.ppids
        out, todo, seen = [], [pid], {pid, self.exclude, self.launcher}
        while todo:
            parent = todo.pop()
            for c in self._children_of(parent, now):
                if c not in seen:
                    seen.add(c)
                    ppids[c] = parent
                    out.append(c)
                    todo.append(c)
        found = set(out)
        last = self.walked.get(pid)
        if last is not None:
            self._forget(last[0] - found)  # ended, or no longer below it
        self.walked[pid] = (found, now)
        return out

    def _forget(self, pids: set) -> None:
        """Drop what is cached of descendants ``pids``: their Process objects, their files."""
        for k in pids:
            self.kids.pop(k, None)
            self.kid_ctime.pop(k, None)
        if pids:
            for key in [key for key in self.child_files if key[0] in pids]:
                self.noise.budget.close(self.child_files.pop(key)[0])

    def _tree(self, now: float) -> dict:
        if self.ppids is None or self.ppids_at != now:
            self._new_pass(now)
            if self.proc_ok:
                self.ppids = self._proc_ppids()
            else:
                import psutil

                build = getattr(psutil, "_ppid_map", None)
                if build is None:  # pragma: no cover - every psutil since 5.x has it
                    self.ppids = {p.pid: p.ppid() for p in psutil.process_iter()}
                else:
                    self.ppids = build()
            self.ppids_at = now
            tree: dict = {}
            for child, parent in self.ppids.items():
                if parent in tree:
                    tree[parent].append(child)
                else:
                    tree[parent] = [child]
            self.tree = tree
        return self.tree

    def descendants(self, pid: int, now: float) -> list:
        """The pids of ``pid``'s live descendants (the collector's own subtree left out)."""
        if self.task_children:
            return self._walk(pid, now)
        tree = self._tree(now)
        out, todo = [], [pid]
        while todo:
            for c in tree.get(todo.pop(), ()):
                if c != self.exclude and c != pid and c != self.launcher:
                    out.append(c)
                    todo.append(c)
        return out

    def sample_children(self, w: Any, now: float) -> list:
        """One sample of ``w``'s descendants, appended to its descendant timeline: None when it
        has none, else ``(total RSS, {(pid, born): cpu seconds}, {pid: parent pid}, {pid: RSS})``
        (``born``: :meth:`born`).

        A descendant's CPU seconds are its own and those of the children it reaped (Linux;
        psutil has 0 for them elsewhere): a process that ends is counted by whoever reaps it,
        the test process (its RUSAGE_CHILDREN) or a sampled descendant such as a
        ``multiprocessing`` forkserver (see ``children``)."""
        pids = self.descendants(w.pid, now)
        total, cpu, parents, sizes = self._read_kids(pids) if pids else (0, {}, {}, {})
        w.child_t.append(now)
        w.child_s.append((total, cpu, parents, sizes) if cpu else None)
        if len(w.child_t) > MAX_SAMPLES:
            _halve_children(w)
        return list(cpu)

    def sample_left_running(self, w: Any, now: float) -> None:
        """A test process that has left (an xdist worker that xdist ended once it had no test
        left) whose tests left processes running: those and their descendants, no longer
        below it (reparented), go on into its descendant timeline while one of them lives,
        so that its tests' ``children`` keep counting them, as a serial run does."""
        import psutil

        roots = []
        for pid, born in w.child_s[-1][1]:
            if pid not in self.kids:  # forgotten with the tree it was in: known again as the
                try:  # same process (its birth computed again moves by microseconds)
                    proc = psutil.Process(pid)
                    if abs(self.born(proc) - born) > SAME_BIRTH:
                        continue  # ended, its pid taken by another process
                except (psutil.Error, ValueError, OSError):
                    continue
                self.kids[pid], self.kid_ctime[pid] = proc, born
            roots.append(pid)
        pids = list(dict.fromkeys(roots + [d for r in roots for d in self.descendants(r, now)]))
        total, cpu, parents, sizes = self._read_kids(pids)
        w.child_t.append(now)
        w.child_s.append((total, cpu, parents, sizes) if cpu else None)
        if len(w.child_t) > MAX_SAMPLES:
            _halve_children(w)

    def _read_kids(self, pids: list) -> tuple:
        """RSS and CPU of the descendants ``pids`` (psutil, imported here: only a run whose
        tests have descendants pays for it): (total RSS, cpu, parents, sizes) as
        :meth:`sample_children` keeps them."""
        import psutil

        total, cpu, parents, sizes = 0, {}, {}, {}
        kids, ctimes = self.kids, self.kid_ctime
        ppids = self.ppids or {}  # the map this pass built
        for pid in pids:
            proc = kids.get(pid)
            try:
                if proc is None:
                    proc = kids[pid] = psutil.Process(pid)
                    ctimes[pid] = self.born(proc)
                with proc.oneshot():
                    rss = proc.memory_info().rss
                    t = proc.cpu_times()
            except (psutil.Error, ValueError, OSError):
                kids.pop(pid, None)
                ctimes.pop(pid, None)
                continue
            total += rss
            cpu[(pid, ctimes[pid])] = (
                t.user
                + t.system
                + getattr(t, "children_user", 0.0)
                + getattr(t, "children_system", 0.0)
            )
            parents[pid] = ppids.get(pid)
            sizes[pid] = rss
        return total, cpu, parents, sizes

    def forget_gone(self, now: float) -> None:
        """Drop cached descendants that are no longer running, and close the kept files of
        processes and threads gone (after a sample_group: those seen neither in this pass nor
        in the one before)."""
        self.noise.expire(now)
        self._close_unread(self.statm, now - noise.EXPIRE_SECONDS)  # a worker that left
        ppids = self.ppids if self.ppids_at == now else None
        if ppids is None:
            return
        before = now if self.prev_at is None else self.prev_at
        self._close_unread(self.child_files, before)
        if self.task_children:  # each walk forgets what left its tree; here, trees not walked
            for root in [r for r, (_, at) in self.walked.items() if at < before]:
                self._forget(self.walked.pop(root)[0])
            return
        for pid in [p for p in self.kids if p not in ppids]:
            del self.kids[pid]
            self.kid_ctime.pop(pid, None)

    def rss(self, pid: int, now: Optional[float] = None) -> Optional[int]:
        """The RSS of ``pid`` in bytes; None when it is gone or unreadable."""
        if self.proc_ok:
            when = time.time() if now is None else now
            data = self._kept(self.statm, pid, f"/proc/{pid}/statm", when, 128)
            try:
                return int(data.split()[1]) * _PAGE if data is not None else None
            except (ValueError, IndexError):
                return None
        import psutil

        proc = self.procs.get(pid)
        try:
            if proc is None:
                proc = self.procs[pid] = psutil.Process(pid)
            return proc.memory_info().rss
        except (psutil.Error, ValueError):
            self.procs.pop(pid, None)
            return None

    def sample(self, w: Any, now: float) -> Optional[int]:
        """One sample of worker ``w`` appended to its timelines (RSS, descendants, noise); its
        RSS, or None if unreadable."""
        rss = self.rss(w.pid, now)
        if rss is None:
            return None
        w.samples_t.append(now)
        w.samples_rss.append(rss)
        if rss > w.sampled_peak:
            w.sampled_peak = rss
        if len(w.samples_t) > MAX_SAMPLES:
            halve(w)
        kids = self.sample_children(w, now) if _children_on(w) else None
        self.noise.sample(w, now, kids)
        return rss

    def sample_group(self, workers: Iterable[Any], now: float) -> tuple[int, dict]:
        """Sample every running worker of one run: (their total RSS, {wid: rss})."""
        total, per = 0, {}
        for w in workers:
            if w.left is not None or w.pid <= 0:
                if w.pid > 0 and _children_on(w) and w.child_s and w.child_s[-1] is not None:
                    self.sample_left_running(w, now)
                continue
            rss = self.sample(w, now)
            if rss is not None:
                total += rss
                per[w.wid] = rss
        self.forget_gone(now)
        return total, per


#: How far apart two readings of one process's birth may be (``Sampler.born`` reads the clock
#: each time); a process that took the pid of an ended one was born at least a tick later.
SAME_BIRTH = 0.005

#: Bytes per page, for /proc/PID/statm (Linux).
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def higher_peak(peak: Optional[tuple], now: float, total: int, per: dict) -> Optional[tuple]:
    """The concurrent peak ``(time, total, per)`` after one round of samples."""
    if per and (peak is None or total > peak[1]):
        return (now, total, per)
    return peak


def own_process(pid: int) -> bool:
    """Whether ``pid`` is a live process of the user running this collector."""
    if os.path.isdir("/proc/self"):  # Linux: no need to import psutil for this
        try:
            return os.stat(f"/proc/{pid}").st_uid == os.getuid()
        except (OSError, ValueError, OverflowError):
            return False
    import psutil

    try:
        proc = psutil.Process(pid)
        if os.name == "posix":
            return proc.uids().real == os.getuid()
        return True
    except (psutil.Error, ValueError, OverflowError):
        return False


def create_time(pid: int) -> Optional[float]:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, ValueError, OverflowError):
        return None


def alive(pid: int, ctime: Optional[float]) -> bool:
    """Whether ``pid`` runs, and is still the process created at ``ctime`` (when given)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if ctime is not None and abs(proc.create_time() - ctime) > 0.01:
            return False  # the pid was reused
        return proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, ValueError, OverflowError):
        return False


def own_rss() -> Optional[int]:
    import psutil

    try:
        return psutil.Process().memory_info().rss
    except psutil.Error:  # pragma: no cover
        return None


#: Journaled noise samples back onto a worker (the daemon's replay).
add_noise_samples = noise.add_samples
