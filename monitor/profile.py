"""--perf-profile in the monitor: one py-spy per measured process, cut into one profile per test.

The monitor starts ``py-spy record --format chrometrace --idle --nonblocking`` on each process
whose ``hello`` asks for it (serial pytest, every xdist worker), for the whole session. py-spy
writes, for every thread, an event each time a sampled stack differs from the one before, with its
time since py-spy started: so the stack of the thread at any moment is known, and a test's samples
are the stretches of its thread inside the test's start and stop (the records the monitor already
has), counted at the sampling rate. At ``finish`` the samplers are stopped (SIGINT: py-spy writes
its file), their files read and cut; the selected tests' folded stacks (``file:function:line;...
count``, the frames below pytest's ``runtestprotocol`` left out) go to ``NAME.profiles.json``
beside the report, and the report's ``session.profile`` names that file and each profiled test's
hottest function.

What py-spy's chrometrace cannot tell, and so what this does not do: which samples were idle
(``--idle`` includes them, unmarked: the stacks are wall-clock; the test's CPU share comes from
its record), and when a thread or a child process ended (its last stack would stay open to the
end): only the thread that runs the test is kept, and child processes are not followed.

Every problem is one line in the report's warnings; the report is complete without profiles.
"""

from __future__ import annotations

import bisect
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple, Optional

from .record import CALL, NODEID, SETUP, START, STOP

#: Samples per second. py-spy's default; a 1 s test gets about 100 samples.
RATE = 100
#: The whole stop of the samplers (SIGINT, py-spy writes its file) waits at most this long.
STOP_WAIT = 15.0
#: The frame of pytest that holds one test (setup, call, teardown): the profile starts above it.
TEST_FRAME = "runtestprotocol"
#: What py-spy prints once it samples; the process's ``ready`` waits for it, at most ATTACH_WAIT
#: seconds, so that its first test is sampled from its start.
SAMPLING = "Sampling process"
ATTACH_WAIT = 10.0
#: py-spy's clock is put right by at most this much (seconds): more says something else is wrong.
MAX_OFFSET = 0.5
#: Frames of the hook machinery, left out of the stacks (they say nothing of the test).
SKIP_DIRS = ("/pluggy/",)
#: How many profiled tests the report names with their hottest function.
HOTTEST = 20
INSTALL = "pip install 'pytest-perfmon[profile]'"
#: With --perf-history, ``slow`` also keeps a test this much over its median duration (the
#: newest HISTORY_RUNS runs of this machine, at least HISTORY_MIN of them): factor and seconds.
OVER_MEDIAN = (1.5, 0.1)
HISTORY_RUNS = 10
HISTORY_MIN = 3


def profiles_path(output: str) -> str:
    """``report.json`` -> ``report.profiles.json``, beside it."""
    root, ext = os.path.splitext(output)
    return root + ".profiles.json" if ext.lower() == ".json" else output + ".profiles.json"


def find_sampler() -> Optional[str]:
    """py-spy's executable: beside this Python's (a venv's bin/, Scripts\\), else on PATH."""
    here = os.path.dirname(sys.executable)
    for name in ("py-spy", "py-spy.exe"):
        path = os.path.join(here, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return shutil.which("py-spy")


class Sampler:
    """One py-spy on one measured process."""

    def __init__(self, wid: str, pid: int, exe: str, directory: str) -> None:
        self.wid = wid
        self.pid = pid
        self.trace = os.path.join(directory, f"trace-{pid}.json")
        self.errors = os.path.join(directory, f"stderr-{pid}.txt")
        self.said = os.path.join(directory, f"stdout-{pid}.txt")  # "Sampling process ..."
        self.stopped = False
        cmd = [exe, "record", "-p", str(pid), "-f", "chrometrace", "-o", self.trace]
        cmd += ["-r", str(RATE), "--idle", "--nonblocking"]
        # Windows: a process group of its own, so that CTRL_BREAK_EVENT (py-spy's Ctrl-C) stops
        # it alone
        group = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
        with open(self.errors, "wb") as err, open(self.said, "wb") as out:
            self.t0 = time.time()
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, creationflags=group
            )

    def attached(self) -> bool:
        """Is py-spy sampling (it says so on its stdout), or gone (it never will)?"""
        return self.proc.poll() is not None or SAMPLING in _read_text(self.said)

    def stop(self) -> None:
        """Ask py-spy to write its file and exit (SIGINT, as Ctrl-C), if it still runs."""
        if self.proc.poll() is not None:
            return
        self.stopped = True
        try:
            if os.name == "posix":
                self.proc.send_signal(signal.SIGINT)
            else:  # pragma: no cover - Windows: Ctrl-Break to its own process group
                self.proc.send_signal(getattr(signal, "CTRL_BREAK_EVENT", signal.SIGTERM))
        except OSError:
            pass

    def reap(self, deadline: float) -> Optional[str]:
        """Wait (until ``deadline``) for py-spy; None when its file is there, else the problem,
        with ``{who}`` where the processes go (the same problem of several is said once)."""
        try:
            code = self.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return "py-spy did not stop in time on {who}: its profiles are lost"
        if os.path.exists(self.trace):
            return None
        return self.failure(code)

    def who(self) -> str:
        return f"{'pytest' if self.wid == 'main' else 'worker ' + self.wid} (pid {self.pid})"

    def failure(self, code: int) -> str:
        """Why py-spy left no file: not permitted (and how to allow it), died, or its error."""
        text = _read_text(self.errors)
        if "permission denied" in text.lower() or "operation not permitted" in text.lower():
            return "py-spy is not permitted to sample {who}: " + not_permitted() + "; no profiles"
        last = _last_line(text).replace("{", "(").replace("}", ")")
        if code < 0 or not self.stopped:
            how = f"signal {-code}" if code < 0 else f"exit status {code}"
            said = f": {last}" if last else ""
            return f"py-spy died mid-run ({how}{said}) on {{who}}: its profiles are lost"
        return f"py-spy wrote nothing on {{who}} ({last or code})"


def not_permitted() -> str:
    """Why this system refuses, and how to allow it, in a few words."""
    if sys.platform == "darwin":
        return "py-spy needs root on macOS (run pytest with sudo)"
    scope = _read_text("/proc/sys/kernel/yama/ptrace_scope").strip()
    if scope in ("2", "3"):
        return (
            f"Yama ptrace_scope is {scope} (only root may trace; "
            "sysctl kernel.yama.ptrace_scope=1 allows it)"
        )
    if not _has_cap_sys_ptrace():
        return (
            "no CAP_SYS_PTRACE and the process cannot be traced by its owner (in a container: "
            "run it with --cap-add SYS_PTRACE)"
        )
    if scope == "1":
        return "Yama ptrace_scope is 1 and the process could not allow its monitor"
    return "the kernel refused (ptrace)"


def _has_cap_sys_ptrace() -> bool:
    for line in _read_text("/proc/self/status").splitlines():
        if line.startswith("CapEff:"):
            try:
                return bool(int(line.split()[1], 16) & (1 << 19))  # CAP_SYS_PTRACE
            except (IndexError, ValueError):
                return False
    return False


def _read_text(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(65536).decode("utf-8", "replace")
    except OSError:
        return ""


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith(" ")]
    lines = [ln for ln in lines if not ln.startswith(("Stack backtrace", "py-spy>"))]
    return lines[-1][:200] if lines else ""


# -- reading py-spy's chrometrace --------------------------------------------------------------
class Stretch(NamedTuple):
    """A time during which one thread's stack stayed the same (absolute seconds)."""

    start: float
    stop: float
    stack: tuple  # the frames, outermost first, from the test's frame up; () outside any test


def iter_events(path: str, chunk: int = 1 << 20) -> Iterator[Any]:
    """py-spy's chrometrace (one JSON array of flat events) read event by event, in bounded
    memory: a long session's trace can be hundreds of MB. ValueError when it is not one."""
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8", errors="replace") as f:
        buf = f.read(chunk).lstrip()
        if not buf.startswith("["):
            raise ValueError("not a JSON array")
        pos = 1
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n,":
                pos += 1
            if pos < len(buf) and buf[pos] == "]":
                return
            try:
                if pos >= len(buf):
                    raise ValueError("need more")
                event, pos = decoder.raw_decode(buf, pos)
            except ValueError:
                more = f.read(chunk)
                if not more:
                    raise ValueError("the trace ends early") from None
                buf, pos = buf[pos:] + more, 0
                continue
            yield event


class Windows:
    """Is a stretch near one of these tests (within the largest clock correction)?"""

    def __init__(self, records: list) -> None:
        spans = sorted((r[START] - MAX_OFFSET, r[STOP] + MAX_OFFSET) for r in records)
        self.starts = [a for a, _ in spans]
        self.ends = [b for _, b in spans]
        for i in range(1, len(self.ends)):  # the furthest end so far: spans may nest
            self.ends[i] = max(self.ends[i], self.ends[i - 1])

    def __call__(self, s: Stretch) -> bool:
        i = bisect.bisect_left(self.starts, s.stop)  # the spans that begin before it ends
        return i > 0 and self.ends[i - 1] > s.start


def stretches(
    events: Iterable[Any], t0: float, rootdir: Optional[str] = None, seen: Optional[list] = None
) -> Iterator[Stretch]:
    """The test threads' stretches, from py-spy's events (``ts``: microseconds since py-spy
    started at ``t0``); only the stacks that hold a test (``TEST_FRAME``), cut above it.
    ``seen`` ([first, last]) gets the times of the trace's first and last events."""
    current: dict = {}  # (pid, tid) -> [frames]
    since: dict = {}  # (pid, tid) -> time its current stack began
    last_ts: dict = {}
    names: dict = {}  # one string per frame, shared by every stack that holds it
    for ev in events:
        if not isinstance(ev, dict) or ev.get("ph") not in ("B", "E"):
            continue
        key = (ev.get("pid"), ev.get("tid"))
        ts = ev.get("ts")
        if not isinstance(ts, (int, float)):
            continue
        frames = current.setdefault(key, [])
        if seen is not None:
            seen[:] = [t0 + ts / 1e6, t0 + ts / 1e6] if not seen else [seen[0], t0 + ts / 1e6]
        if last_ts.get(key) != ts:  # a new sample: the stack before it lasted until now
            if key in since:
                stack = test_stack(frames, rootdir, names)
                if stack:
                    yield Stretch(since[key], t0 + ts / 1e6, stack)
            since[key] = t0 + ts / 1e6
            last_ts[key] = ts
        if ev["ph"] == "B":
            args = ev.get("args") or {}
            frames.append(
                (str(args.get("filename", "?")), str(ev.get("name", "?")), args.get("line"))
            )
        elif frames:
            frames.pop()


def test_stack(frames: list, rootdir: Optional[str] = None, names: Optional[dict] = None) -> tuple:
    """The frames above pytest's test frame, without the hook machinery, each
    ``file:function:line`` (``names`` caches them); () if none."""
    names = {} if names is None else names
    for i in range(len(frames) - 1, -1, -1):
        f = frames[i]
        if f[1] == TEST_FRAME and f[0].replace("\\", "/").endswith("_pytest/runner.py"):
            out = []
            for frame in frames[i + 1 :]:
                text = names.get(frame)
                if text is None:
                    text = names[frame] = _frame_text(frame, rootdir)
                if text:
                    out.append(text)
            return tuple(out) or ("(pytest)",)
    return ()


def _frame_text(frame: tuple, rootdir: Optional[str]) -> str:
    """``file:function:line``; "" for the hook machinery's frames."""
    file, name, line = frame
    if any(d in file.replace("\\", "/") for d in SKIP_DIRS):
        return ""
    file = short_file(file, rootdir)
    return f"{file}:{name}:{line}" if line is not None else f"{file}:{name}"


def short_file(file: str, rootdir: Optional[str]) -> str:
    """A frame's file as people read it: relative to the rootdir, or from the installed
    package on (``_pytest/python.py``)."""
    if rootdir and file.startswith(rootdir.rstrip("/\\") + os.sep):
        return file[len(rootdir.rstrip("/\\")) + 1 :]
    for marker in ("site-packages", "dist-packages"):
        at = file.find(marker + os.sep)
        if at >= 0:
            return file[at + len(marker) + 1 :]
    return file


def cut(stretch_list: list, start: float, stop: float) -> dict:
    """The folded stacks of one test: ``{"a;b;c": samples}`` over [start, stop]."""
    return Timeline(stretch_list).cut(start, stop)


class Timeline:
    """Stretches sorted by start, for cutting many tests without reading them all each time."""

    def __init__(self, stretch_list: list) -> None:
        self.items = sorted(stretch_list)
        self.starts = [s.start for s in self.items]
        self.longest = max((s.stop - s.start for s in self.items), default=0.0)

    def shifted(self, by: float) -> Timeline:
        """The same stretches ``by`` seconds earlier."""
        if not by:
            return self
        return Timeline([Stretch(s.start - by, s.stop - by, s.stack) for s in self.items])

    def cut(self, start: float, stop: float) -> dict:
        """The folded stacks over [start, stop]."""
        lo = bisect.bisect_left(self.starts, start - self.longest)
        hi = bisect.bisect_left(self.starts, stop)
        return _count((s for s in self.items[lo:hi] if s.stop > start), start, stop)


def _count(overlapping: Iterable[Stretch], start: float, stop: float) -> dict:
    counts: dict = {}
    for s in overlapping:
        overlap = min(s.stop, stop) - max(s.start, start)
        key = ";".join(s.stack)
        counts[key] = counts.get(key, 0.0) + overlap * RATE
    return {k: int(round(v)) for k, v in counts.items() if round(v) >= 1}


def clock_offset(timeline: Timeline, records: list, seen: Optional[list] = None) -> float:
    """How late py-spy's clock runs against the records' (seconds; 0.0 when nothing tells).

    py-spy counts from its own start, a moment after the monitor launched it; a test's call
    phase (known from its record) shows in the trace as the stretches whose stack holds the test
    function: the median of how far those begin and end after the call phase does, less half a
    sampling interval (a change is seen at the next sample), over the longest tests. ``seen``:
    the trace's first and last events (a boundary outside them was not seen)."""
    ordered, starts = timeline.items, timeline.starts
    if not ordered:
        return 0.0
    first, last = seen if seen else (ordered[0].start, max(s.stop for s in ordered))
    longest = sorted(
        (r for r in records if isinstance(r[CALL], (int, float)) and r[CALL] > 5 / RATE),
        key=lambda r: -r[CALL],
    )[:50]
    diffs = []
    for rec in longest:
        name = str(rec[NODEID]).rsplit("::", 1)[-1].split("[", 1)[0]
        c0 = rec[START] + (rec[SETUP] or 0.0)
        c1 = c0 + rec[CALL]
        lo = bisect.bisect_left(starts, c0 - MAX_OFFSET)
        hi = bisect.bisect_right(starts, c1 + MAX_OFFSET)
        hits = [s for s in ordered[lo:hi] if _calls(s.stack, name)]
        if not hits:
            continue
        # a boundary counts where the trace saw it: not before py-spy's first sample, nor after
        # its last (the first test may be running as py-spy attaches)
        if hits[0].start > first + 2 / RATE:
            diffs.append(hits[0].start - c0 - 0.5 / RATE)
        if hits[-1].stop < last - 2 / RATE:
            diffs.append(hits[-1].stop - c1 - 0.5 / RATE)
    if not diffs:
        return 0.0
    diffs.sort()
    d = diffs[len(diffs) // 2]
    return d if abs(d) < MAX_OFFSET else 0.0


def _calls(stack: tuple, name: str) -> bool:
    for frame in stack:
        function = split_frame(frame)[1]
        if function == name or function.endswith("." + name):
            return True
    return False


# -- reading a profile ------------------------------------------------------------------------
class Function(NamedTuple):
    file: str
    function: str
    line: Optional[int]  # the line seen most in its own samples
    self_samples: int
    total_samples: int


def split_frame(frame: str) -> tuple[str, str, Optional[int]]:
    """``file:function:line`` (or ``file:function``) -> (file, function, line)."""
    head, _, tail = frame.rpartition(":")
    if tail.isdigit() and ":" in head:
        file, _, name = head.rpartition(":")
        return file, name, int(tail)
    return head, tail, None


def functions(stacks: dict) -> list:
    """Every function of a test's folded stacks, hottest (self samples) first."""
    self_n: dict = {}
    total: dict = {}
    lines: dict = {}  # (file, function) -> {line: samples}, its own samples first
    seen_at: dict = {}  # ... in any frame, for a function without samples of its own
    for folded, n in stacks.items():
        frames = [split_frame(f) for f in folded.split(";")]
        seen = set()
        for file, name, line in frames:
            key = (file, name)
            at = seen_at.setdefault(key, {})
            at[line] = at.get(line, 0) + n
            if key not in seen:
                seen.add(key)
                total[key] = total.get(key, 0) + n
        file, name, line = frames[-1]
        self_n[(file, name)] = self_n.get((file, name), 0) + n
        per = lines.setdefault((file, name), {})
        per[line] = per.get(line, 0) + n
    out = []
    for key, t in total.items():
        per = lines.get(key) or seen_at.get(key, {})
        line = max(per, key=lambda k: per[k]) if per else None
        out.append(Function(key[0], key[1], line, self_n.get(key, 0), t))
    out.sort(key=lambda f: (-f.self_samples, -f.total_samples, f.file, f.function))
    return out


def hottest(stacks: dict) -> Optional[dict]:
    """The function with the most samples of its own, and its share."""
    fs = functions(stacks)
    n = sum(stacks.values())
    if not fs or not n:
        return None
    f = fs[0]
    return {
        "function": f.function,
        "file": f.file,
        "line": f.line,
        "share": round(f.self_samples / n, 3),
    }


# -- the monitor's side -----------------------------------------------------------------------
class Profiler:
    """The samplers of one session, started at each ``hello`` that asks, cut at ``finish``."""

    def __init__(self, mode: str, over: float) -> None:
        self.mode = mode
        self.over = over
        self.samplers: list[Sampler] = []
        self.problems: list[str] = []  # one-line warnings, each said once
        self.exe = find_sampler()
        self.version: Optional[str] = None
        self.directory: Optional[str] = None
        self.medians: dict = {}  # nodeid -> its median duration in the history store
        self.waiting: list = []  # (sampler, deadline, ident, ready): answers held until it samples
        self.late: list = []  # the processes whose py-spy had not attached by the deadline
        if self.exe is None:
            self._problem(f"py-spy is not installed ({INSTALL}): no profiles")

    def _problem(self, text: str) -> None:
        line = f"--perf-profile: {text}"
        if line not in self.problems:
            self.problems.append(line)

    def start(self, wid: str, pid: int, ident: Any = None, ready: Any = None) -> bool:
        """Start sampling a measured process (a failure is said at finish). True: its answer
        ``ready`` to ``ident`` waits until py-spy samples (:meth:`due` hands it back)."""
        if self.exe is None:
            return False
        try:
            if self.directory is None:
                self.directory = tempfile.mkdtemp(prefix="perfmon-profile-")
            sampler = Sampler(wid, pid, self.exe, self.directory)
        except OSError as exc:
            self._problem(f"cannot start py-spy: {exc.strerror or exc}: no profiles")
            return False
        self.samplers.append(sampler)
        self.waiting.append((sampler, time.monotonic() + ATTACH_WAIT, ident, ready))
        return True

    def due(self) -> list:
        """The (ident, ready) answers whose sampler now samples (or failed, or took too long)."""
        if not self.waiting:
            return []
        now = time.monotonic()
        done = [w for w in self.waiting if w[0].attached() or now >= w[1]]
        self.waiting = [w for w in self.waiting if w not in done]
        self.late += [w[0].who() for w in done if not w[0].attached()]
        return [(ident, ready) for _, _, ident, ready in done]

    def finish(
        self,
        workers: Iterable[Any],
        output: str,
        rootdir: Optional[str] = None,
        history: Optional[str] = None,
    ) -> Optional[dict]:
        """Stop the samplers, cut their traces at the tests' boundaries, write the profiles
        beside ``output`` (files named relative to ``rootdir``); the report's
        ``session.profile`` block (None: nothing written)."""
        try:
            if history and self.mode == "slow" and self.samplers:
                self.medians = self._medians(history)
            return self._finish(list(workers), output, rootdir)
        except Exception as exc:  # the report goes on without profiles, whatever happened
            self._problem(f"profiles not written: {type(exc).__name__}: {exc}")
            return None
        finally:
            if self.directory is not None:
                shutil.rmtree(self.directory, ignore_errors=True)
                self.directory = None

    def _finish(self, workers: list, output: str, rootdir: Optional[str]) -> Optional[dict]:
        if not self.samplers:
            return None
        for s in self.samplers:
            s.stop()
        deadline = time.monotonic() + STOP_WAIT
        tests = []
        sampled = 0
        failed: dict = {}  # problem -> the processes it hit
        samplers: list = []
        for s in self.samplers:
            problem = s.reap(deadline)
            if problem is not None:
                failed.setdefault(problem, []).append(s.who())
                continue
            sampled += 1
            w = next((w for w in workers if w.pid == s.pid), None)
            wanted = (
                [r for r in w.records if self.wanted(r[NODEID], r[STOP] - r[START])] if w else []
            )
            if w is None or not wanted:
                continue  # nothing to cut: the trace is not even read
            try:
                near = Windows(wanted)
                seen: list = []
                found = stretches(iter_events(s.trace), s.t0, rootdir, seen)
                timeline = Timeline([st for st in found if near(st)])
            except (OSError, ValueError) as exc:
                self._problem(f"cannot read the trace of {s.who()}: {exc}")
                continue
            offset = clock_offset(timeline, wanted, seen)
            tests.extend(self._cut(timeline.shifted(offset), w.wid, wanted))
            samplers.append({"worker": w.wid, "pid": s.pid, "clock_offset": round(offset, 4)})
        if self.late:
            failed.setdefault(
                f"py-spy took over {ATTACH_WAIT:.0f} s to start sampling {{who}}: "
                "the tests it missed have no profile",
                [],
            ).extend(self.late)
        for problem, who in failed.items():
            self._problem(problem.format(who=", ".join(who)))
        if not sampled:
            return None
        path = profiles_path(output)
        doc = {
            "version": 1,
            "sampler": self._version(),
            "rate": RATE,
            "mode": self.mode,
            "over": self.over,
            "samplers": samplers,
            "tests": tests,
        }
        try:
            _write_json(doc, path)
        except OSError as exc:
            self._problem(f"cannot write {path}: {exc.strerror or exc}")
            return None
        return {
            "path": path,
            "mode": self.mode,
            "over": self.over,
            "rate": RATE,
            "sampler": doc["sampler"],
            "tests": len(tests),
            "hottest": _hottest_list(tests),
        }

    def _medians(self, url: str) -> dict:
        """Each test's median duration in the history store (``slow`` keeps those well over)."""
        try:
            from .history.medians import medians

            got = medians(url, HISTORY_RUNS)
        except Exception as exc:  # the profiles go on with --perf-profile-over alone
            self._problem(f"history not read ({type(exc).__name__}: {exc}): over its time only")
            return {}
        out = {}
        for nodeid, metrics in (got.get("tests") or {}).items():
            median, n = (metrics.get("duration") or (None, 0))[:2]
            if median is not None and n >= HISTORY_MIN:
                out[nodeid] = float(median)
        return out

    def wanted(self, nodeid: str, duration: float) -> bool:
        """``all``; ``slow``: over --perf-profile-over, or well over its median in the history."""
        if self.mode == "all" or duration > self.over:
            return True
        median = self.medians.get(nodeid)
        factor, floor = OVER_MEDIAN
        return median is not None and duration > max(median * factor, median + floor)

    def _cut(self, timeline: Timeline, wid: str, records: list) -> list:
        out = []
        for rec in records:
            start, stop = rec[START], rec[STOP]
            stacks = timeline.cut(start, stop)
            if not stacks:
                continue
            out.append(
                {
                    "nodeid": rec[NODEID],
                    "worker": wid,
                    "start": start,
                    "duration": round(stop - start, 6),
                    "samples": sum(stacks.values()),
                    "stacks": stacks,
                }
            )
        return out

    def _version(self) -> str:
        """``py-spy 0.4.3``, from its distribution's metadata (no process started)."""
        if self.version is None:
            try:
                from importlib.metadata import version

                self.version = f"py-spy {version('py-spy')}"
            except Exception:  # a py-spy from elsewhere than a Python package: on PATH
                self.version = "py-spy"
        return self.version


def _hottest_list(tests: list) -> list:
    """The longest profiled tests, each with its hottest function (for the summary)."""
    out = []
    for t in sorted(tests, key=lambda t: -t["duration"])[:HOTTEST]:
        h = hottest(t["stacks"])
        if h is not None:
            out.append(
                {"nodeid": t["nodeid"], "worker": t["worker"], "duration": t["duration"], **h}
            )
    return out


def _write_json(doc: dict, path: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, separators=(",", ":"))
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
