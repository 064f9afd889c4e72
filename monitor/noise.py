"""The noise certificate of each test: how much of its time the machine took away from it.

Read by the collector (the spawned monitor or the daemon) at every sample it already takes, from
outside the measured processes: nothing here runs in a process that runs tests.

Sources (Linux; each may be missing: the value is then null and the report's
``session.measurement.noise`` names no method for it):

- ``wait_time``: ``/proc/PID/task/TID/schedstat`` field 2 (``run_delay``, nanoseconds a thread
  was runnable but not running), summed over the test process's threads (a thread that ended
  keeps what it had at its last read) and, where the collector samples the test's descendants
  (``--perf-children``, the default), over their main threads;
- ``involuntary_switches``: ``nonvoluntary_ctxt_switches`` of ``/proc/PID/status`` (the main
  thread, where pytest runs the test); psutil's ``num_ctx_switches`` off Linux (macOS, BSD);
- ``steal_time``: ``/proc/stat`` steal (the hypervisor ran someone else), seconds per CPU;
- ``pressure``: ``/proc/pressure/cpu`` ``some total=`` (PSI, kernel 4.20+): microseconds some
  task was stalled waiting for a CPU, as a share of the test's duration;
- ``throttled_time``: the ``cpu.stat`` of every cgroup with a CPU quota from the test process's
  cgroup up to the root (v2 ``cpu.max`` / ``throttled_usec``; v1 ``cpu.cfs_quota_us`` /
  ``throttled_time``); null when no such cgroup has a quota.

Attribution. Records arrive after their test, in batches: the collector cannot read the
counters at a test's boundaries. It reads these cumulative counters at each sample (per test
process; the system-wide ones once per sampling pass) and gives each test the growth of each
counter over ``[start, stop]`` of its record, the counter's value at a moment being the linear
interpolation between the samples on either side. A test shorter than the interval gets its
time share of that interval's growth; two neighbours split the interval they share by time, so
nothing is counted twice. Outside the samples (a moment before a process's first sample or after
its last), the nearest sample stands within ``slack`` seconds, and the value is null beyond.

The wait of the process's own threads is shared differently (:func:`cpu_shared_waits`): a thread
waits for a CPU only while it is runnable, so a test that sleeps next to a contended one waits
next to nothing, whatever its time share. The same schedstat read gives the threads' time on a
CPU; each interval's wait growth goes to the tests in it by the CPU time each used there (its
record's CPU time over its wall time, times its overlap), and the time between tests (pytest's
own work) takes the rest of the interval's CPU time. The descendants' wait stays shared by time:
their CPU time is not in the records. Where the CPU counter is missing (an older relay's or
journal's samples), time decides, as above.

Standard library only (psutil on first use off Linux); nothing heavy at import: the monitor
imports this at start-up.
"""

from __future__ import annotations

import os
import sys
from bisect import bisect_left, bisect_right
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from typing import TypeGuard  # new in Python 3.10: named in annotations only, never evaluated

# -- the report's vocabulary ---------------------------------------------------------------

#: A test ran **contended** when it waited for a CPU for at least this share of its duration...
CONTENDED_WAIT_SHARE = 0.10
#: ... or when its cgroup was throttled for at least this many seconds during it ("throttled at
#: all": a millisecond floor, so that the interpolated share of a throttle next door is not it).
CONTENDED_THROTTLED = 0.001
#: The rule in words (the schema and the README say the same).
CONTENDED_RULE = (
    f"waited for a CPU for {CONTENDED_WAIT_SHARE:.0%} or more of its duration, "
    "or its cgroup was throttled (1 ms or more) during it"
)

FIELDS = ("wait_time", "throttled_time", "steal_time", "pressure", "involuntary_switches")

METHOD_WAIT = "proc-schedstat-run_delay-sampled"
METHOD_INVOL = "proc-status-nonvoluntary_ctxt_switches-sampled"
METHOD_INVOL_PSUTIL = "psutil-num_ctx_switches-sampled"
METHOD_STEAL = "proc-stat-steal-sampled"
METHOD_PRESSURE = "psi-cpu-some-total-sampled"
METHOD_THROTTLE_V2 = "cgroup-v2-cpu.stat-throttled_usec-sampled"
METHOD_THROTTLE_V1 = "cgroup-v1-cpu.stat-throttled_time-sampled"
ATTRIBUTION = "linear-interpolation-between-samples"
#: The same, but for the wait of the test process's own threads (see the module's docstring).
ATTRIBUTION_CPU = "wait-shared-by-cpu-time-else-linear-interpolation-between-samples"

#: Positions in one noise sample: cumulative counters, seconds (INVOL: a count), None: missing.
#: The first FIELD_COUNT are the report's; ON_CPU (the time the process's own threads ran) and
#: KIDS_WAIT (the part of WAIT that is the descendants') only share WAIT among the tests. A row
#: from an older relay or journal ends at THROTTLE.
WAIT, INVOL, STEAL, PSI, THROTTLE, ON_CPU, KIDS_WAIT = range(7)
#: Counters of a noise sample's row that the report shows.
FIELD_COUNT = 5

#: Noise samples kept per process before the timeline is halved (every other one dropped).
MAX_SAMPLES = 20000
#: Thread and descendant schedstat files kept open by one collector, at most (beyond, each is
#: opened, read and closed at every sample: about 3 us instead of 1.4 us).
MAX_KEPT_FDS = 512
#: A process not sampled for this long has its files closed (a worker that left).
EXPIRE_SECONDS = 30.0

_NS = 1e-9
_LINUX = sys.platform.startswith("linux")


# -- parsers (bytes in, numbers out; None or ValueError where the text is not what we know) ----


def parse_schedstat_both(data: bytes) -> tuple[int, int]:
    """``/proc/PID/schedstat``: ``on-cpu-ns wait-ns timeslices``; (time on a CPU, the wait
    (``run_delay``)), ns."""
    on_cpu, wait = data.split()[:2]
    return int(on_cpu), int(wait)


def parse_status(data: bytes) -> tuple[Optional[int], Optional[int]]:
    """``/proc/PID/status``: (``Threads``, ``nonvoluntary_ctxt_switches``); None where absent."""
    threads = invol = None
    i = data.find(b"\nThreads:")
    if i >= 0:
        threads = int(data[i + 9 : data.index(b"\n", i + 1)])
    i = data.rfind(b"nonvoluntary_ctxt_switches:")
    if i >= 0:
        invol = int(data[i + 27 :].split(None, 1)[0])
    return threads, invol


def parse_steal(data: bytes) -> Optional[int]:
    """``/proc/stat``'s first (``cpu``) line: steal, in USER_HZ ticks summed over the CPUs; None
    on kernels older than the field (2.6.11)."""
    line = data.split(b"\n", 1)[0].split()
    if not line or line[0] != b"cpu":
        raise ValueError("not /proc/stat")
    return int(line[8]) if len(line) > 8 else None


def parse_psi_some(data: bytes) -> int:
    """``/proc/pressure/cpu``: the ``some`` line's ``total=``, microseconds."""
    for line in data.split(b"\n"):
        if line.startswith(b"some "):
            for part in line.split():
                if part.startswith(b"total="):
                    return int(part[6:])
    raise ValueError("no 'some ... total=' in the PSI file")


def parse_cpu_stat(data: bytes, key: bytes) -> int:
    """A cgroup's ``cpu.stat``: the value of ``key`` (``throttled_usec``, ``throttled_time``)."""
    for line in data.split(b"\n"):
        parts = line.split()
        if len(parts) == 2 and parts[0] == key:
            return int(parts[1])
    raise ValueError(f"no {key.decode()} in cpu.stat")


def has_quota(version: int, text: str) -> bool:
    """Whether a cgroup limits its CPU: v2 ``cpu.max`` (``max 100000``: no), v1
    ``cpu.cfs_quota_us`` (``-1``: no)."""
    parts = text.split()
    if not parts:
        return False
    if version == 2:
        return parts[0] != "max"
    return int(parts[0]) > 0


def parse_proc_cgroup(text: str) -> list:
    """``/proc/PID/cgroup``: ``[(hierarchy id, [controllers], path)]``."""
    out = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            out.append((parts[0], [c for c in parts[1].split(",") if c], parts[2]))
    return out


def parse_mountinfo(text: str) -> list:
    """``/proc/self/mountinfo``'s cgroup mounts: ``[(version, root, mount point, options)]``."""
    out = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, rest = left.split(), right.split()
        if len(fields) < 5 or len(rest) < 3:
            continue
        fstype = rest[0]
        if fstype in ("cgroup", "cgroup2"):
            root = _unescape(fields[3])
            point = _unescape(fields[4])
            out.append((2 if fstype == "cgroup2" else 1, root, point, rest[2].split(",")))
    return out


def _unescape(s: str) -> str:
    """mountinfo's octal escapes (``\\040`` for a space)."""
    if "\\" not in s:
        return s
    import re

    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def cgroup_dirs(proc_cgroup: str, mountinfo: str) -> list:
    """The directories of a process's CPU cgroup, ``[(version, dir, mount point)]``: its v2
    cgroup (where a cgroup2 hierarchy is mounted) and its v1 ``cpu`` cgroup (where mounted)."""
    mounts = parse_mountinfo(mountinfo)
    out = []
    for hid, controllers, path in parse_proc_cgroup(proc_cgroup):
        if hid == "0" and not controllers:
            cands = [m for m in mounts if m[0] == 2]
        elif "cpu" in controllers:
            cands = [m for m in mounts if m[0] == 1 and "cpu" in m[3]]
        else:
            continue
        for version, root, point, _ in cands[:1]:
            if root != "/" and (path == root or path.startswith(root + "/")):
                rel = path[len(root) :]
            else:  # the mount's root is the cgroup namespace's: the path is relative to it
                rel = path if path != "/" else ""
            out.append((version, os.path.normpath(point + rel), os.path.normpath(point)))
    return out


def quota_levels(dirs: list, read: Any) -> tuple[list, Optional[str]]:
    """The ``cpu.stat`` files of the cgroups with a CPU quota, from each cgroup up to its mount
    point: ``([(path, key, seconds per unit)], method)``; ``([], None)`` with no quota."""
    found, method = [], None
    for version, d, point in dirs:
        name = "cpu.max" if version == 2 else "cpu.cfs_quota_us"
        key, scale = (b"throttled_usec", 1e-6) if version == 2 else (b"throttled_time", _NS)
        while True:
            try:
                quota = has_quota(version, read(os.path.join(d, name)))
            except (OSError, ValueError):
                quota = False
            if quota:
                found.append((os.path.join(d, "cpu.stat"), key, scale))
                if method is None:
                    method = METHOD_THROTTLE_V2 if version == 2 else METHOD_THROTTLE_V1
            if d == point or len(d) <= len(point):
                break
            d = os.path.dirname(d)
    return found, method


# -- reading, at each sample ---------------------------------------------------------------


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def _open(path: str) -> Optional[int]:
    try:
        return os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None


def _close(fd: Optional[int]) -> None:
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


def _pread(fd: int, size: int = 256) -> bytes:
    return os.pread(fd, size, 0)


class _Budget:
    """How many more schedstat files may be kept open (shared by the processes sampled)."""

    def __init__(self, n: int) -> None:
        self.left = n

    def open(self, path: str) -> Optional[int]:
        if self.left <= 0:
            return None
        fd = _open(path)
        if fd is not None:
            self.left -= 1
        return fd

    def close(self, fd: Optional[int]) -> None:
        if fd is not None:
            _close(fd)
            self.left += 1


def _schedstat(entry: list) -> tuple[int, int]:
    """(time on a CPU, run_delay) of a ``[fd or None, last wait, path, ...]`` entry (the fd kept
    open, else the path opened for this one read)."""
    if entry[0] is not None:
        return parse_schedstat_both(_pread(entry[0], 128))
    with open(entry[2], "rb") as f:
        return parse_schedstat_both(f.read(128))


class _System:
    """The system-wide counters (``/proc/stat`` steal, PSI), read at most once per pass."""

    def __init__(self) -> None:
        self.stat_fd = _open("/proc/stat") if _LINUX else None
        self.psi_fd = _open("/proc/pressure/cpu") if _LINUX else None
        self.hz = float(os.sysconf("SC_CLK_TCK")) if _LINUX else 100.0
        self.cpus = float(os.cpu_count() or 1)
        self.at: Optional[float] = None
        self.values: tuple = (None, None)
        # the first read decides whether a source works (a PSI file can exist and refuse reads)
        steal, psi = self._read()
        if steal is None:
            _close(self.stat_fd)
            self.stat_fd = None
        if psi is None:
            _close(self.psi_fd)
            self.psi_fd = None

    def _read(self) -> tuple:
        steal = psi = None
        if self.stat_fd is not None:
            try:
                ticks = parse_steal(_pread(self.stat_fd, 512))
                steal = None if ticks is None else ticks / self.hz / self.cpus
            except (OSError, ValueError, IndexError):
                pass
        if self.psi_fd is not None:
            try:
                psi = parse_psi_some(_pread(self.psi_fd)) * 1e-6
            except (OSError, ValueError):
                pass
        return steal, psi

    def read(self, now: float) -> tuple:
        if self.at != now:
            self.values = self._read()
            self.at = now
        return self.values

    def close(self) -> None:
        _close(self.stat_fd)
        _close(self.psi_fd)
        self.stat_fd = self.psi_fd = None


class _Proc:
    """One sampled test process: its kept-open files and the state that keeps its cumulative
    wait monotonic while threads and descendants come and go."""

    def __init__(self, pid: int, mountinfo: Optional[str], budget: _Budget) -> None:
        self.pid = pid
        self.budget = budget
        self.seen = 0.0
        self.status_fd: Optional[int] = None
        self.threads: dict = {}  # tid -> [fd or None, last run_delay ns, path, last on-CPU ns]
        self.retired = 0  # ns: the last reads of threads that ended (run_delay)
        self.retired_cpu = 0  # ns: the same, their time on a CPU
        self.kids: dict = {}  # (pid, ctime) -> [fd or None, last run_delay ns, path]
        self.kid_ns = 0  # ns: the descendants' growth, accumulated
        self.cgroups: list = []  # [(fd, key, seconds per unit)]
        self.throttle_method: Optional[str] = None
        self.psutil: Any = None
        if _LINUX:
            self.status_fd = _open(f"/proc/{pid}/status")
            self._sync_threads()
            if mountinfo is not None:
                try:
                    dirs = cgroup_dirs(_read_text(f"/proc/{pid}/cgroup"), mountinfo)
                    levels, self.throttle_method = quota_levels(dirs, _read_text)
                except (OSError, ValueError):
                    levels = []
                for path, key, scale in levels:
                    fd = _open(path)
                    if fd is not None:
                        self.cgroups.append((fd, key, scale))
                if not self.cgroups:
                    self.throttle_method = None

    # threads
    def _retire(self, tid: int) -> None:
        """A thread that ended: what it waited stays counted (its last read)."""
        fd, last, _, last_cpu = self.threads.pop(tid)
        self.retired += last
        self.retired_cpu += last_cpu
        self.budget.close(fd)

    def _sync_threads(self) -> None:
        try:
            tids = {int(t) for t in os.listdir(f"/proc/{self.pid}/task")}
        except (OSError, ValueError):
            return
        for tid in [t for t in self.threads if t not in tids]:
            self._retire(tid)
        for tid in tids:
            if tid not in self.threads:
                path = f"/proc/{self.pid}/task/{tid}/schedstat"
                self.threads[tid] = [self.budget.open(path), 0, path, 0]

    def _wait_ns(self, nthreads: Optional[int]) -> Optional[tuple[int, int]]:
        """(run_delay, time on a CPU) of the threads, ns, cumulative; None: none read."""
        if nthreads is not None and nthreads != len(self.threads):
            self._sync_threads()
        gone = []
        for tid, t in self.threads.items():
            try:
                t[3], t[1] = _schedstat(t)
            except (OSError, ValueError, IndexError):
                gone.append(tid)  # it ended (or its tid is another thread's now)
        if gone:
            for tid in gone:
                self._retire(tid)
            self._sync_threads()
            for tid, t in self.threads.items():
                if tid in gone:  # a new thread with the same tid: read from its start
                    try:
                        t[3], t[1] = _schedstat(t)
                    except (OSError, ValueError, IndexError):
                        pass
        if not self.threads and not self.retired:
            return None
        threads = self.threads.values()
        return (
            self.retired + sum(t[1] for t in threads),
            self.retired_cpu + sum(t[3] for t in threads),
        )

    # descendants
    def _kids_ns(self, kids: Optional[list]) -> int:
        if kids is None:
            return self.kid_ns
        keep = set(kids)
        for key in [k for k in self.kids if k not in keep]:
            self.budget.close(self.kids.pop(key)[0])
        for key in kids:
            st = self.kids.get(key)
            if st is None:
                path = f"/proc/{key[0]}/schedstat"
                st = self.kids[key] = [self.budget.open(path), 0, path]
            try:
                v = _schedstat(st)[1]
            except (OSError, ValueError, IndexError):
                continue
            if v > st[1]:
                self.kid_ns += v - st[1]
                st[1] = v
        return self.kid_ns

    def _throttled(self) -> Optional[float]:
        if not self.cgroups:
            return None
        total = 0.0
        for fd, key, scale in self.cgroups:
            try:
                total += parse_cpu_stat(_pread(fd, 1024), key) * scale
            except (OSError, ValueError):
                return None
        return total

    def read(self, kids: Optional[list]) -> Optional[list]:
        """``[wait s, involuntary switches, None, None, throttled s, on-CPU s, descendants'
        wait s]`` (the positions WAIT ... KIDS_WAIT); None: the process is gone."""
        if not _LINUX:
            return self._read_psutil()
        nthreads = invol = None
        if self.status_fd is not None:
            try:
                data = _pread(self.status_fd, 4096)
                if len(data) == 4096:  # a long status (many CPUs listed): read it whole
                    data = _read_text(f"/proc/{self.pid}/status").encode()
                nthreads, invol = parse_status(data)
            except ProcessLookupError:
                return None
            except (OSError, ValueError):
                pass
        own = self._wait_ns(nthreads)
        if own is None:
            return [None, invol, None, None, self._throttled(), None, None]
        kids_ns = self._kids_ns(kids)
        wait = (own[0] + kids_ns) * _NS
        return [wait, invol, None, None, self._throttled(), own[1] * _NS, kids_ns * _NS]

    def _read_psutil(self) -> Optional[list]:
        if os.name == "nt":  # psutil has no involuntary switches on Windows (always 0)
            return [None, None, None, None, None]
        import psutil

        try:
            if self.psutil is None:
                self.psutil = psutil.Process(self.pid)
            invol = self.psutil.num_ctx_switches().involuntary
        except psutil.NoSuchProcess:
            return None
        except (psutil.Error, AttributeError, OSError):
            invol = None
        return [None, invol, None, None, None]

    def methods(self, system: _System) -> dict:
        wait = invol = None
        if _LINUX:
            wait = METHOD_WAIT if self.threads else None
            invol = METHOD_INVOL if self.status_fd is not None else None
        elif os.name != "nt":
            invol = METHOD_INVOL_PSUTIL
        return {
            "wait_time": wait,
            "throttled_time": self.throttle_method,
            "steal_time": METHOD_STEAL if system.stat_fd is not None else None,
            "pressure": METHOD_PRESSURE if system.psi_fd is not None else None,
            "involuntary_switches": invol,
            # the rows carry the threads' time on a CPU: their wait is shared by it
            "attribution": ATTRIBUTION_CPU if wait is not None else None,
        }

    def close(self) -> None:
        _close(self.status_fd)
        self.status_fd = None
        for fd, *_ in self.threads.values():
            self.budget.close(fd)
        for fd, _, _ in self.kids.values():
            self.budget.close(fd)
        for fd, _, _ in self.cgroups:
            _close(fd)
        self.threads, self.kids, self.cgroups = {}, {}, []


class NoiseReader:
    """The noise counters of the sampled processes, one kept-open file per source."""

    def __init__(self) -> None:
        self.system: Optional[_System] = None  # opened at the first sample
        self.procs: dict = {}  # pid -> _Proc
        self.mountinfo: Optional[str] = None
        self.budget = _Budget(MAX_KEPT_FDS)

    def sample(self, w: Any, now: float, kids: Optional[list] = None) -> None:
        """Append one noise sample to worker ``w``'s timeline (``w.noise_t``, ``w.noise_v``).
        ``kids``: its descendants' ``(pid, create time)`` this pass, or None when they are not
        sampled."""
        if self.system is None:
            self.system = _System()
            if _LINUX:
                try:
                    self.mountinfo = _read_text("/proc/self/mountinfo")
                except OSError:
                    self.mountinfo = None
        proc = self.procs.get(w.pid)
        if proc is None:
            proc = self.procs[w.pid] = _Proc(w.pid, self.mountinfo, self.budget)
        vec = proc.read(kids)
        if vec is None:
            proc.close()
            del self.procs[w.pid]
            return
        proc.seen = now
        vec[STEAL], vec[PSI] = self.system.read(now)
        if w.noise_how is None:
            w.noise_how = proc.methods(self.system)
        w.noise_t.append(now)
        w.noise_v.append(tuple(vec))
        if len(w.noise_t) > MAX_SAMPLES:
            halve(w)

    def expire(self, now: float) -> None:
        """Close the files of processes not sampled for EXPIRE_SECONDS."""
        for pid in [p for p, st in self.procs.items() if now - st.seen > EXPIRE_SECONDS]:
            self.procs.pop(pid).close()

    def close(self) -> None:
        for st in self.procs.values():
            st.close()
        self.procs = {}
        if self.system is not None:
            self.system.close()


def halve(w: Any) -> None:
    """Halve a worker's noise timeline: every other sample dropped, the last kept (the
    counters are cumulative: fewer samples only coarsen the interpolation)."""
    keep = list(range(len(w.noise_t) - 1, -1, -2))[::-1]
    w.noise_t = [w.noise_t[i] for i in keep]
    w.noise_v = [w.noise_v[i] for i in keep]


def add_samples(w: Any, ts: list, vs: list, how: Optional[dict]) -> None:
    """Append journaled noise samples (times ascending) to ``w``'s noise timeline."""
    for t, v in zip(ts, vs):
        w.noise_t.append(t)
        w.noise_v.append(tuple(v))
    if how and w.noise_how is None:
        w.noise_how = dict(how)
    while len(w.noise_t) > MAX_SAMPLES:
        halve(w)


# -- the report ----------------------------------------------------------------------------


def _at(ts: list, vs: list, k: int, t: float, slack: float) -> Optional[float]:
    """Counter ``k`` at time ``t``: interpolated between the samples around ``t``; the nearest
    sample within ``slack`` outside the timeline; None beyond, or where a sample lacks it."""
    n = len(ts)
    i = bisect_left(ts, t)
    if any(len(vs[j]) <= k for j in (i - 1, i) if 0 <= j < n):
        return None  # a row without the counter
    if i < n and ts[i] == t:
        return vs[i][k]
    if i == 0:
        return vs[0][k] if ts[0] - t <= slack else None
    if i == n:
        return vs[-1][k] if t - ts[-1] <= slack else None
    a, b = vs[i - 1][k], vs[i][k]
    if a is None or b is None:
        return None
    t0, t1 = ts[i - 1], ts[i]
    return a + (b - a) * (t - t0) / (t1 - t0)


def growth(ts: list, vs: list, k: int, start: float, stop: float, slack: float) -> Optional[float]:
    """How much cumulative counter ``k`` grew over ``[start, stop]`` (never below 0)."""
    if not ts or stop < start:
        return None
    a = _at(ts, vs, k, start, slack)
    b = _at(ts, vs, k, stop, slack)
    if a is None or b is None:
        return None
    return max(0.0, b - a)


def _row_at(ts: list, vs: list, t: float, slack: float) -> Any:
    """Every counter at time ``t`` at once, as :func:`_at` gives each: a sample's own row, or
    None (all None), or a list interpolated counter by counter."""
    n = len(ts)
    i = bisect_left(ts, t)
    if i < n and ts[i] == t:
        return vs[i]
    if i == 0:
        return vs[0] if ts[0] - t <= slack else None
    if i == n:
        return vs[-1] if t - ts[-1] <= slack else None
    dt = t - ts[i - 1]
    span = ts[i] - ts[i - 1]
    return [
        None if a is None or b is None else a + (b - a) * dt / span
        for a, b in zip(vs[i - 1], vs[i])
    ]


def growths(ts: list, vs: list, start: float, stop: float, slack: float) -> list:
    """``[growth(ts, vs, k, start, stop, slack) for k in range(FIELD_COUNT)]``, the same
    values, with one search of the timeline per end instead of one per counter and end (the
    noise object of every test is built while the session waits for its report)."""
    if not ts or stop < start:
        return [None] * FIELD_COUNT
    ra = _row_at(ts, vs, start, slack)
    rb = _row_at(ts, vs, stop, slack)
    if (ra is not None and len(ra) < FIELD_COUNT) or (rb is not None and len(rb) < FIELD_COUNT):
        # not a row of ours: counter by counter, as growth does it
        return [growth(ts, vs, k, start, stop, slack) for k in range(FIELD_COUNT)]
    if ra is None or rb is None:
        return [None] * FIELD_COUNT
    return [
        None if a is None or b is None else max(0.0, b - a)
        for a, b in zip(ra[:FIELD_COUNT], rb[:FIELD_COUNT])
    ]


def is_contended(noise: Any, duration: Any) -> bool:
    """The one definition (CONTENDED_RULE) of a test that ran contended."""
    if not isinstance(noise, dict):
        return False
    wait, thr = noise.get("wait_time"), noise.get("throttled_time")
    if _num(thr) and thr >= CONTENDED_THROTTLED:
        return True
    return bool(_num(wait) and _num(duration) and duration > 0) and (
        wait >= CONTENDED_WAIT_SHARE * duration
    )


def _num(v: Any) -> TypeGuard[float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _r(v: Optional[float], digits: int = 6) -> Optional[float]:
    return None if v is None else round(v, digits)


def entry_noise(
    w: Any, start: float, stop: float, duration: Any, slack: float, wait_by_cpu: Any = None
) -> Any:
    """The ``noise`` object of one test of worker ``w`` over ``[start, stop]``; None when the
    collector has no noise sample of the process around the test. ``wait_by_cpu``: its wait
    from :func:`cpu_shared_waits`, or None (all of it shared by time)."""
    ts, vs = w.noise_t, w.noise_v
    if not ts:
        return None
    g = _inside(ts, vs, start, stop)
    if g is None:
        g = growths(ts, vs, start, stop, slack)
    if g.count(None) == FIELD_COUNT:
        return None
    wait = g[WAIT]
    if wait_by_cpu is not None and wait is not None:
        wait = wait_by_cpu
    psi, invol = g[PSI], g[INVOL]
    span = stop - start
    out = {
        "wait_time": _r(wait),
        "throttled_time": _r(g[THROTTLE]),
        "steal_time": _r(g[STEAL]),
        "pressure": None if psi is None or span <= 0 else round(min(1.0, psi / span), 4),
        "involuntary_switches": None if invol is None else int(round(invol)),
    }
    out["contended"] = is_contended(out, duration)
    return out


def _inside(ts: list, vs: list, start: float, stop: float) -> Optional[list]:
    """:func:`growths` of a test that began and ended between the same two samples (most
    short tests), from one search of the timeline: the same arithmetic as :func:`_row_at`'s;
    None for every other case, which :func:`growths` takes."""
    i = bisect_left(ts, start)
    if i == 0 or i == len(ts) or not start < stop < ts[i] or ts[i] == start:
        return None
    t0 = ts[i - 1]
    span = ts[i] - t0
    da, db = start - t0, stop - t0
    out: list = []
    for a, b in zip(vs[i - 1][:FIELD_COUNT], vs[i][:FIELD_COUNT]):
        if a is None or b is None:
            out.append(None)
        else:
            d = b - a
            out.append(max(0.0, (a + d * db / span) - (a + d * da / span)))
    return out if len(out) == FIELD_COUNT else None


def cpu_shared_waits(ts: list, vs: list, tests: list) -> list:
    """The wait during each of ``tests``, one process's ``(start, stop, cpu s, wall s)`` in
    order of start, from its noise timeline ``ts``/``vs``: its own threads' shared by CPU time,
    its descendants' (KIDS_WAIT) by time, as :func:`growths` shares every counter.

    A thread waits for a CPU only while it is runnable: each sample interval's growth of that
    wait goes to the tests in the interval by the CPU time each used there (its ``cpu / wall``
    times its overlap with the interval), and the time between tests takes what is left of the
    interval's own CPU time (ON_CPU's growth), so that nothing is counted twice. An interval
    with no CPU time at all is shared by time.

    None for a test without a CPU time (a record the xdist controller made for a crashed
    worker's test) and for one that overlaps an interval whose samples lack ON_CPU or KIDS_WAIT
    (an older relay's or journal's): its caller shares its wait by time, and its time share of
    each interval is set aside here before the others share the rest.
    """
    n = len(ts)
    out: list = [None] * len(tests)
    if n < 2 or all(len(row) <= KIDS_WAIT for row in vs):
        return out
    own: list = []  # per sample: (the threads' wait, their time on a CPU, the descendants')
    for row in vs:
        if len(row) > KIDS_WAIT:
            wait, cpu, kids = row[WAIT], row[ON_CPU], row[KIDS_WAIT]
            own.append(
                None if wait is None or cpu is None or kids is None else (wait - kids, cpu, kids)
            )
        else:
            own.append(None)
    grown: list = [None] * n  # per interval k (samples k - 1 to k): the growth of each
    for k in range(1, n):
        a, b = own[k - 1], own[k]
        if a is not None and b is not None and ts[k] > ts[k - 1]:
            grown[k] = (max(0.0, b[0] - a[0]), max(0.0, b[1] - a[1]), max(0.0, b[2] - a[2]))
    weight = [0.0] * n  # per interval: the CPU time in it of the tests shared by CPU time
    covered = [0.0] * n  # their time in it
    by_time = [0.0] * n  # the time in it of the tests shared by time
    spans: list = []
    for start, stop, cpu, wall in tests:
        if not stop > start:
            spans.append(None)
            continue
        k0, k1 = max(1, bisect_right(ts, start)), min(n - 1, bisect_left(ts, stop))
        if k0 == k1:  # between two samples (most short tests): one part
            overlap = min(stop, ts[k0]) - max(start, ts[k0 - 1])
            parts = [(k0, overlap)] if overlap > 0 else []
        else:
            parts = [
                (k, min(stop, ts[k]) - max(start, ts[k - 1]))
                for k in range(k0, k1 + 1)
                if min(stop, ts[k]) > max(start, ts[k - 1])
            ]
        known = (
            all(grown[k] is not None for k, _ in parts)
            if len(parts) > 1
            else (not parts or grown[parts[0][0]] is not None)
        )
        if known and _num(cpu) and _num(wall) and wall > 0:
            rate = max(0.0, cpu) / wall
            for k, overlap in parts:
                weight[k] += rate * overlap
                covered[k] += overlap
            spans.append((parts, rate))
        else:
            for k, overlap in parts:
                by_time[k] += overlap
            spans.append(None)
    shares: list = [None] * n  # per interval: (the wait its CPU-shared tests split, by what,
    # its span, the descendants' wait per second)
    for k in range(1, n):
        g = grown[k]
        if g is None:
            continue
        span = ts[k] - ts[k - 1]
        left = max(0.0, 1.0 - by_time[k] / span)  # what the tests shared by time do not take
        cpu = g[1] * left
        between = span - covered[k] - by_time[k] > 1e-6  # time of no test in the interval
        by = max(weight[k], cpu) if between else weight[k]
        shares[k] = (g[0] * left, by, span, g[2] / span)
    for i, sp in enumerate(spans):
        if sp is None:
            continue
        parts, rate = sp
        total = 0.0
        for k, overlap in parts:
            grew, by, span, kids = shares[k]
            if grew:
                total += grew * (rate * overlap / by if by > 0 else overlap / span)
            total += kids * overlap
        out[i] = total
    return out


def merge_executions(tests: dict, runs: dict) -> None:
    """A node id executed more than once: its ``noise`` summed over its executions (pressure
    weighted by duration), and judged again against the summed duration."""
    for nodeid, rs in runs.items():
        if len(rs) < 2 or nodeid not in tests:
            continue
        parts = [(e.get("noise"), e.get("duration")) for _, e, _ in rs if e.get("noise")]
        if not parts:
            continue
        out: dict = {}
        for f in ("wait_time", "throttled_time", "steal_time", "involuntary_switches"):
            vals = [n[f] for n, _ in parts if n.get(f) is not None]
            out[f] = (
                (round(sum(vals), 6) if f != "involuntary_switches" else sum(vals))
                if vals
                else None
            )
        weighted = [(n["pressure"], d) for n, d in parts if n.get("pressure") is not None and d]
        total = sum(d for _, d in weighted)
        out["pressure"] = round(sum(p * d for p, d in weighted) / total, 4) if total else None
        out["contended"] = is_contended(out, tests[nodeid].get("duration"))
        tests[nodeid]["noise"] = out


def methods(workers: Any) -> dict:
    """``session.measurement.noise``: the method of each field (null: not measured in any
    process), and how a test's share was attributed."""
    out: dict = {f: None for f in FIELDS}
    by_cpu = False
    for w in workers:
        how = getattr(w, "noise_how", None) or {}
        for f in FIELDS:
            if out[f] is None and how.get(f):
                out[f] = how[f]
        by_cpu = by_cpu or how.get("attribution") == ATTRIBUTION_CPU
    measured = any(out[f] for f in FIELDS)
    out["attribution"] = (ATTRIBUTION_CPU if by_cpu else ATTRIBUTION) if measured else None
    out["contended"] = CONTENDED_RULE
    return out


def summary(tests: Any) -> Optional[dict]:
    """``summary.noise``: totals over the tests that carry a ``noise`` object; None when none
    does (no collector samples, an old report)."""
    if isinstance(tests, dict):
        tests = tests.values()
    n = contended = 0
    wait = dur = 0.0
    wait_n = 0
    thr: Optional[float] = None
    steal: Optional[float] = None
    for t in tests:
        noise = t.get("noise") if isinstance(t, dict) else None
        if not isinstance(noise, dict):
            continue
        n += 1
        d = t.get("duration")
        if _num(noise.get("wait_time")):
            wait += noise["wait_time"]
            wait_n += 1
            if _num(d):
                dur += d
        if _num(noise.get("throttled_time")):
            thr = (thr or 0.0) + noise["throttled_time"]
        if _num(noise.get("steal_time")):
            steal = (steal or 0.0) + noise["steal_time"]
        if noise.get("contended") if "contended" in noise else is_contended(noise, d):
            contended += 1
    if not n:
        return None
    return {
        "tests": n,
        "wait_time": round(wait, 6) if wait_n else None,
        "wait_share": round(wait / dur, 4) if wait_n and dur > 0 else None,
        "throttled_time": _r(thr),
        "steal_time": _r(steal),
        "contended": contended,
    }


def _pct(share: float) -> str:
    p = 100.0 * share
    return f"{p:.0f} %" if p >= 10 or p == 0 else f"{p:.1f} %"


def headline(report: Any, only_contended: bool = False) -> Optional[str]:
    """How noisy the run was, in one line, for the terminal summary, ``perfmon report``, the
    HTML page, the step summary: "14 % of test time was spent waiting for a CPU; 37 tests ran
    contended; their times are not comparable". None when the report has no noise measured
    (or, with ``only_contended``, when no test ran contended)."""
    if not isinstance(report, dict):
        return None
    s = report.get("summary")
    block = s.get("noise") if isinstance(s, dict) else None
    if not isinstance(block, dict):
        block = summary(report.get("tests") or {})
    if not block or not block.get("tests"):
        return None
    n = block.get("contended") or 0
    if only_contended and not n:
        return None
    parts = []
    share = block.get("wait_share")
    if share is not None and share > 1:  # several threads waited at once: no share of time
        parts.append(
            f"the tests' threads waited for a CPU {share:.1f} times as long as the tests ran"
        )
    elif share is not None:
        parts.append(f"{_pct(share)} of test time was spent waiting for a CPU")
    thr = block.get("throttled_time")
    if thr:
        parts.append(f"the CPU quota throttled the tests' cgroup for {thr:.2f} s")
    if n:
        parts.append(
            "1 test ran contended; its time is not comparable"
            if n == 1
            else f"{n} tests ran contended; their times are not comparable"
        )
    elif parts:
        parts.append("no test ran contended")
    return "; ".join(parts) if parts else None


def contended_tests(report: Any) -> list:
    """The node ids of the tests that ran contended, the largest share of waiting first."""
    tests = report.get("tests") if isinstance(report, dict) else None
    out = []
    for k, t in (tests or {}).items():
        noise = t.get("noise") if isinstance(t, dict) else None
        if isinstance(noise, dict) and noise.get("contended"):
            d = t.get("duration") or 0.0
            out.append((-(noise.get("wait_time") or 0.0) / d if d else 0.0, k))
    return [k for _, k in sorted(out)]


# -- the cost, measured --------------------------------------------------------------------


def bench(pids: list, passes: int = 2000) -> dict:
    """Microseconds per sampling pass of the noise reads over ``pids`` (the system-wide reads
    once per pass, as the collector does): ``{"pass_us", "per_process_us", "system_us"}``."""
    import time

    class _W:
        def __init__(self, pid: int) -> None:
            self.pid = pid
            self.noise_t: list = []
            self.noise_v: list = []
            self.noise_how = None

    reader = NoiseReader()
    ws = [_W(p) for p in pids]
    for w in ws:
        reader.sample(w, 0.0)
    t0 = time.perf_counter()
    for i in range(1, passes + 1):
        for w in ws:
            reader.sample(w, float(i))
    whole = (time.perf_counter() - t0) / passes * 1e6
    sysr = reader.system
    assert sysr is not None, "opened by the first sample: no pids given"
    t0 = time.perf_counter()
    for _ in range(passes):
        sysr._read()
    system = (time.perf_counter() - t0) / passes * 1e6
    reader.close()
    return {
        "pass_us": round(whole, 2),
        "per_process_us": round((whole - system) / max(1, len(ws)), 2),
        "system_us": round(system, 2),
    }


if __name__ == "__main__":  # python -m pytest_perfmon.monitor.noise [PID ...]
    targets = [int(a) for a in sys.argv[1:]] or [os.getpid()]
    print(bench(targets))
