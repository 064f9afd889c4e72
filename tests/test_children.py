"""Child processes (issue 12): what a test's children use, and shared fixtures billed to the
fixture. End-to-end with real children (serial and -n 2), the rest in-process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import warnings

import pytest
from helpers import XDIST_ENDS, shared_run, validate
from pytest_perfmon import _fixtures
from pytest_perfmon._counters import Counters
from pytest_perfmon.monitor import protocol, sampler
from pytest_perfmon.monitor import report as report_model
from pytest_perfmon.monitor.record import N_FIELDS

POSIX = os.name == "posix"
LINUX = sys.platform.startswith("linux")

#: What SUITE's children hold (MB) and burn (CPU seconds). The checks are shares of these:
#: the hold several times the test process's own memory, twice the burn (counted twice) well
#: over the bound that one count (plus the child's start-up) stays under: 1.8 * 0.2 = 0.36 s,
#: one count about 0.25 s, two about 0.5 s (0.25 s of burn gave 0.45 s, 0.3 s and 0.6 s).
HOLD_MB = 150
BURN_S = 0.2

# Each module: a module-scoped fixture (0.2 s up, 0.1 s down), then a child holding HOLD_MB for
# 0.5 s (10 sampling intervals of 0.05 s), a child burning BURN_S of CPU, and a test with none.
SUITE = f"""
import subprocess, sys, time
import pytest

HOLD = "b = bytearray({HOLD_MB} * 1024 * 1024)\\nfor i in range(0, len(b), 4096): b[i] = 1\\n" \\
    "import time; time.sleep(0.5)"
BURN = "import time\\nt = time.process_time()\\nwhile time.process_time() - t < {BURN_S}: pass"

@pytest.fixture(scope="module")
def shared():
    time.sleep(0.2)
    yield
    time.sleep(0.1)

def test_hold(shared):
    subprocess.run([sys.executable, "-c", HOLD], check=True)

def test_burn(shared):
    subprocess.run([sys.executable, "-c", BURN], check=True)

def test_none(shared):
    pass
"""


@pytest.mark.parametrize("xdist", XDIST_ENDS)
def test_children_and_shared_fixtures(request, tmp_path_factory, tmp_path, xdist):
    if xdist and _loadfile_in_order() is None:  # a run of its own (_children_run)
        request.getfixturevalue("pytester").makepyfile(test_a=SUITE, test_b=SUITE)
        run_perf = request.getfixturevalue("run_perf")
        run = run_perf("--perf-cpu-interval", "0.05", *xdist, "--dist", "loadfile")
    else:  # its two modules on a worker each with xdist (_children_run)
        run = _children_run(tmp_path_factory, xdist)
    assert run.ret == 0, run.text
    rep = run.report
    assert rep["session"]["measurement"]["children"] == report_model.METHOD_CHILDREN
    for mod in ("test_a.py", "test_b.py"):
        hold, burn, none = (rep["tests"][f"{mod}::test_{n}"] for n in ("hold", "burn", "none"))
        assert hold["children"]["peak_rss_mb"] >= 0.93 * HOLD_MB, hold
        assert hold["children"]["processes"] >= 1
        # the test process's own memory keeps its meaning: the child's HOLD_MB are not in it
        assert hold["memory"]["peak_mb"] < hold["children"]["peak_rss_mb"]
        if POSIX:
            assert burn["children"]["cpu_time"] >= 0.8 * BURN_S, burn
            assert burn["children"]["cpu_time"] < 1.8 * BURN_S, burn  # not counted twice
        # no bleed into the next test
        assert (
            burn["children"] is None
            or burn["children"]["peak_rss_mb"] is None
            or (burn["children"]["peak_rss_mb"] < 0.93 * HOLD_MB)
        )
        assert none["children"] is None, none
        # the module fixture is billed to the first test's setup, and said so
        assert hold["shared_setup_time"] >= 0.19
        assert hold["shared_setup_time"] <= hold["setup_time"]
        assert burn["shared_setup_time"] == 0.0 and none["shared_setup_time"] == 0.0
    fx = [f for f in rep["fixtures"] if f["name"] == "shared"]
    assert len(fx) == 2, fx  # one per module (and so per worker with --dist loadfile)
    for f in fx:
        mod = f["setup_test"].split("::")[0]
        assert f["scope"] == "module" and f["location"] == f"{mod}:8"
        assert f["setup_test"] == f"{mod}::test_hold"
        assert f["teardown_test"] == f"{mod}::test_none"
        assert f["setup_time"] >= 0.19 and f["teardown_time"] >= 0.09
    if xdist:
        assert {f["worker"] for f in fx} == {"gw0", "gw1"}
    _merged_fixtures_named_by_job(run.path, rep, tmp_path)


def _merged_fixtures_named_by_job(path, rep, where) -> None:
    """`perfmon merge` keeps each job's list in its block and names workers and tests by job in
    the merged list, whatever the order of merging (merge is associative). The merged report
    is written in ``where`` (the run's directory may be shared: _children_run)."""
    from pytest_perfmon.monitor import analysis, cli

    out = where / "xy.json"
    argv = ["merge", str(path), str(path), "--label", "x", "--label", "y", "-o", str(out)]
    assert cli.main(argv) == 0
    xy = validate(json.loads(out.read_text(encoding="utf-8")))
    yz = analysis.merge([("y", rep, "p"), ("z", rep, "p")])
    left = validate(analysis.merge([(None, xy, "xy"), ("z", rep, "p")]))
    right = validate(analysis.merge([("x", rep, "p"), (None, yz, "yz")]))
    assert left["fixtures"] == right["fixtures"]
    assert len(left["fixtures"]) == 3 * len(rep["fixtures"])
    for job in ("x", "y", "z"):
        assert left["jobs"][job]["fixtures"] == rep["fixtures"]
    for f in left["fixtures"]:
        assert f["setup_test"] in left["tests"] and f["teardown_test"] in left["tests"]
        assert f["worker"] in left["workers"]


# Issue 27's repros: a shared fixture's server, children shorter than a sample, a daemon a
# test leaves running for another to stop.
BILLED = """
import subprocess, sys, time
import pytest

DAEMON = []

@pytest.fixture(scope="module")
def server():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    yield p
    p.kill()
    p.wait(30)

def test_uses_server(server):
    time.sleep(0.5)

def test_does_not_use_it():
    time.sleep(0.3)

def test_quick_children():
    for _ in range(3):  # over before any sample can see them, most runs
        subprocess.run([sys.executable, "-c", "pass"], check=True)

def test_true():
    subprocess.run(["true"], check=True)

def test_child_after():
    subprocess.run([sys.executable, "-c", "import time; time.sleep(1)"], check=True)

def test_leaves_a_daemon():
    DAEMON.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]))
    time.sleep(0.3)

def test_after_the_daemon():
    time.sleep(0.3)

def test_stops_the_daemon():
    for p in DAEMON:
        p.kill()
        p.wait(30)
"""


@pytest.mark.skipif(not POSIX, reason="the repros run `true`")
@pytest.mark.parametrize("xdist", XDIST_ENDS)
def test_children_billed_where_they_belong(tmp_path_factory, xdist):
    """Issue 27, items 4 and 5: the module fixture's server is on the fixture, never on the
    tests (not even the one that uses it); every process a test starts is counted, however
    short; a daemon a test leaves running is its, not the next tests' nor the one that stops
    it."""
    run = _children_run(tmp_path_factory, xdist)
    assert run.ret == 0, run.text
    for name in ("uses_server", "does_not_use_it", "after_the_daemon", "stops_the_daemon"):
        assert run.test(f"test_{name}")["children"] is None, (name, run.test(f"test_{name}"))
    (fx,) = [f for f in run.report["fixtures"] if f["name"] == "server"]
    assert fx["children"]["processes"] == 1, fx
    assert fx["children"]["peak_rss_mb"] is not None, fx  # it lived about 3 s
    quick = run.test("test_quick_children")["children"]
    assert quick["processes"] == 3, quick  # the audit hook's count, not the samples'
    assert run.test("test_true")["children"]["processes"] == 1
    after = run.test("test_child_after")["children"]
    assert after["processes"] == 1 and after["peak_rss_mb"] is not None, after
    daemon = run.test("test_leaves_a_daemon")["children"]
    assert daemon["processes"] == 1 and daemon["peak_rss_mb"] is not None, daemon
    if xdist:
        assert len({run.test(f"test_{n}")["worker"] for n in ("true", "uses_server")}) == 1
    validate(run.report)


NESTED = """
import subprocess, sys, time
import pytest

CHILD = [sys.executable, "-c", "import time; time.sleep(0.4)"]

@pytest.fixture(scope="session")
def inner():
    p = subprocess.Popen(CHILD)
    yield
    p.wait(30)

@pytest.fixture(scope="module")
def outer(request):
    request.getfixturevalue("inner")  # set up inside this one's setup
    subprocess.run(CHILD, check=True)
    subprocess.run(CHILD, check=True)
    yield

def test_one(outer):
    subprocess.run([sys.executable, "-c", "pass"], check=True)

def test_two(outer):
    time.sleep(0.2)
"""


def test_nested_shared_fixtures_keep_their_own(run_perf, pytester, capsys):
    """A shared fixture set up inside another's setup: each keeps the processes it started,
    the test none of theirs, the last test not the session fixture's reaped at the end (a run
    of its own: its last test is test_two); `perfmon report` shows them."""
    from pytest_perfmon.monitor import cli

    pytester.makepyfile(test_nested=NESTED)
    run = run_perf("--perf-cpu-interval", "0.05")
    assert run.ret == 0, run.text
    fx = {f["name"]: f["children"] for f in run.report["fixtures"]}
    assert fx["inner"]["processes"] == 1, fx
    assert fx["outer"]["processes"] == 2, fx
    assert run.test("test_one")["children"]["processes"] == 1
    assert run.test("test_two")["children"] is None
    capsys.readouterr()
    assert cli.main(["report", str(run.path)]) == 0
    out = capsys.readouterr().out
    assert "procs" in out and "children peak" in out, out


def test_no_perf_children(run_perf, pytester):
    pytester.makepyfile(
        "import subprocess, sys\n"
        "def test_child():\n"
        "    subprocess.run([sys.executable, '-c', 'pass'], check=True)\n"
    )
    run = run_perf("--no-perf-children")
    assert run.ret == 0, run.text
    assert run.report["session"]["measurement"]["children"] is None
    assert "children" not in run.test("test_child")


# --- in-process ------------------------------------------------------------------------------


def _child(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)


HOLD_50 = "import sys\nb = bytearray(50 * 1024 * 1024)\nfor i in range(0, len(b), 4096): b[i] = 1\n"


BURN_02 = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.2: pass"


def test_sampler_sees_descendants_and_not_itself():
    # the child reaps a grandchild that burned 0.2 s, then takes 50 MB and starts one that waits
    child = _child(
        f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {BURN_02!r}])\n"
        + HOLD_50
        + "subprocess.run([sys.executable, '-c', 'import sys; sys.stdin.read()'],"
        " stdin=sys.stdin)\n"
    )
    try:
        s = sampler.Sampler()
        w = report_model.Worker(
            "main", os.getpid(), time.time(), boundary_methods={"children": True}
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # until the grandchild runs and the 50 MB are in
            now = time.time()
            s.sample_group([w], now)
            last = w.child_s[-1]
            if last is not None and len(last[1]) == 2 and last[0] >= 60 * 1024 * 1024:
                break
            time.sleep(0.02)
        assert last is not None and len(last[1]) == 2, last
        assert last[0] >= 60 * 1024 * 1024
        pids = {pid for pid, _ in last[1]}
        assert child.pid in pids and os.getpid() not in pids
        (grandchild,) = pids - {child.pid}
        assert last[2] == {child.pid: os.getpid(), grandchild: child.pid}  # the parents
        if LINUX:  # a descendant's CPU has what its reaped children used (psutil: Linux only)
            cpu = {pid: v for (pid, _), v in last[1].items()}
            assert cpu[child.pid] >= 0.18, last
        s.exclude = child.pid  # the collector's own subtree is never sampled
        assert s.descendants(os.getpid(), time.time()) == []
    finally:
        child.stdin.close()
        child.wait(10)
    s.sample_group([w], time.time())
    assert w.child_s[-1] is None
    assert not s.kids  # gone processes are forgotten
    w.boundary_methods = {}
    n = len(w.child_t)
    s.sample_group([w], time.time())
    assert len(w.child_t) == n  # children off: no descendant sampling


def _open_fds() -> set:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not LINUX, reason="the children files and kept-open statm are Linux's")
def test_sampler_finds_children_of_every_thread_as_the_scan_does():
    """Descendants found through the threads' ``children`` files: a child started by a thread
    other than the main one is found (it is listed under that thread), and one whose thread
    has ended too (the kernel hands it to a live thread); the walk and the scan of every
    process's parent give the same pids and parents. Files kept open are closed once their
    processes are gone."""
    import threading

    s = sampler.Sampler()
    assert s.task_children  # Debian's and every common distribution's kernel has them
    before = _open_fds()
    kids: list = []
    parked, started = threading.Event(), threading.Event()

    def start(park: bool) -> None:
        kids.append(_child("import sys; sys.stdin.read()"))
        if park:
            started.set()
            parked.wait(30)  # the thread lives on while its child is looked for

    held = threading.Thread(target=start, args=(True,))
    gone = threading.Thread(target=start, args=(False,))
    held.start()
    gone.start()
    gone.join(30)
    assert started.wait(30)  # both threads' children started
    parent = _child(
        "import subprocess, sys\nsubprocess.run([sys.executable, '-c', "
        "'import sys; sys.stdin.read()'], stdin=sys.stdin)"
    )
    kids.append(parent)
    try:
        w = report_model.Worker(
            "main", os.getpid(), time.time(), boundary_methods={"children": True}
        )
        deadline = time.monotonic() + 10
        mine = {k.pid for k in kids}
        while time.monotonic() < deadline:  # until the grandchild runs too
            now = time.time()
            walked = sorted(s.descendants(os.getpid(), now))
            walked_parents = dict(s.ppids or {})
            grandchildren = [p for p in walked if walked_parents.get(p) == parent.pid]
            if mine <= set(walked) and grandchildren:
                break
            time.sleep(0.02)
        s.task_children = False  # the same pass through the scan of /proc
        scanned = sorted(s.descendants(os.getpid(), time.time()))
        scanned_parents = {pid: (s.ppids or {}).get(pid) for pid in scanned}
        s.task_children = True
        assert mine <= set(walked) and len(grandchildren) == 1, walked
        assert walked == scanned
        assert {p: walked_parents[p] for p in walked} == scanned_parents
        s.sample_group([w], time.time())
        assert {pid for pid, _ in w.child_s[-1][1]} >= mine | set(grandchildren)
        assert s.statm and s.child_files  # read through files kept open
    finally:
        parked.set()
        held.join(30)
        for k in kids:
            k.stdin.close()
        for k in kids:
            k.wait(10)
    s.sample_group([w], time.time())
    assert w.child_s[-1] is None and not s.kids
    assert all(pid == os.getpid() for pid, _ in s.child_files)  # the children's are closed
    s.close()
    assert not s.statm and not s.child_files
    assert _open_fds() <= before  # every file the sampler opened is closed


@pytest.mark.skipif(not LINUX, reason="the children files are Linux's")
def test_sampler_reads_a_long_children_list_to_its_end(monkeypatch: pytest.MonkeyPatch):
    """A ``children`` file hands out whole records: one read of a long list stops short of
    its end (4 KiB hold ~680 pids), and the rest is read on. Reads of 8 bytes here, so that
    six children are a long list."""
    monkeypatch.setattr(sampler, "CHILDREN_READ", 8)
    parent = _child(
        "import subprocess, sys\n"
        "ps = [subprocess.Popen([sys.executable, '-c', 'import sys; sys.stdin.read()'],"
        " stdin=subprocess.PIPE) for _ in range(6)]\n"
        "sys.stdin.read()\n"
        "for p in ps: p.stdin.close()\n"
        "for p in ps: p.wait()\n"
    )
    try:
        s = sampler.Sampler()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            walked = sorted(s.descendants(parent.pid, time.time()))
            if len(walked) >= 6:
                break
            time.sleep(0.02)
        s.task_children = False
        assert walked == sorted(s.descendants(parent.pid, time.time()))
        assert len(walked) == 6
        s.close()
    finally:
        parent.stdin.close()
        parent.wait(10)


def _zombie(pid: int) -> bool:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"


@pytest.mark.skipif(not LINUX, reason="the process states are read from Linux's /proc")
def test_sampler_never_takes_the_monitors_launcher_for_a_descendant():
    """The process that started the monitor (monitor/launch.py) is pytest's child, a zombie
    until pytest reaps it: never one of the tests' descendants (walk and scan), and forgotten
    once reaped (its pid may be a test's child's later)."""
    launcher = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while not _zombie(launcher.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    s = sampler.Sampler()
    w = report_model.Worker("main", os.getpid(), time.time(), boundary_methods={"children": True})
    try:
        assert _zombie(launcher.pid)
        assert launcher.pid in s.descendants(os.getpid(), time.time())  # what it would take
        s.launcher = launcher.pid
        for walk in (True, False):
            s.task_children = walk
            assert launcher.pid not in s.descendants(os.getpid(), time.time())
            s.sample_group([w], time.time())
            assert launcher.pid not in s.kids
    finally:
        launcher.wait(10)
    s.sample_group([w], time.time())
    assert s.launcher is None
    s.close()


@pytest.mark.skipif(not LINUX, reason="statm is Linux's")
def test_sampler_rss_through_a_kept_statm_ends_with_its_process():
    """A process's RSS is read through its statm kept open; once the process has ended (and
    been reaped) the read gives None, the file is closed and its budget given back."""
    child = _child("import sys; sys.stdin.read()")
    s = sampler.Sampler()
    left = s.noise.budget.left
    try:
        assert (s.rss(child.pid) or 0) > 0 and (s.rss(child.pid) or 0) > 0
        assert child.pid in s.statm and s.noise.budget.left == left - 1
    finally:
        child.stdin.close()
        child.wait(10)
    assert s.rss(child.pid) is None
    assert child.pid not in s.statm and s.noise.budget.left == left


@pytest.mark.skipif(not LINUX, reason="the children files are Linux's")
def test_sampler_keeps_each_sessions_descendants_between_its_turns():
    """The daemon samples its sessions in turn, one sample_group each at the same time: what
    one session's test process walked stays cached (the same Process objects, the same kept
    files) while the other's turn ends the pass; a tree whose test process has ended is
    forgotten a pass later, the other tree untouched."""
    wait = (
        "import subprocess, sys\n"
        "subprocess.run([sys.executable, '-c', 'import sys; sys.stdin.read()'], stdin=sys.stdin)"
    )
    a, b = _child(wait), _child(wait)  # two test processes, each with a child
    s = sampler.Sampler()
    ws = [
        report_model.Worker(wid, p.pid, time.time(), boundary_methods={"children": True})
        for wid, p in (("a", a), ("b", b))
    ]
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            now = time.time()
            for w in ws:
                s.sample_group([w], now)
            if all(w.child_s[-1] is not None for w in ws):
                break
            time.sleep(0.02)
        kids = dict(s.kids)
        assert len(kids) == 2, kids
        opened = []
        budget_open = s.noise.budget.open
        s.noise.budget.open = lambda path: opened.append(path) or budget_open(path)
        for _ in range(3):
            now = time.time()
            for w in ws:
                s.sample_group([w], now)
                assert s.kids.keys() == kids.keys()
                assert all(s.kids[pid] is kids[pid] for pid in kids)  # never built again
        assert opened == []  # no file closed and opened again
        b.stdin.close()
        b.wait(10)
        (b_kid,) = [pid for pid, parent in (s.ppids or {}).items() if parent == b.pid]
        for _ in range(2):  # a tree no longer walked (its test process gone): the pass after
            now = time.time()
            for w in ws:
                s.sample_group([w], now)
        assert b_kid not in s.kids and len(s.kids) == 1
        assert not [k for k in s.child_files if k[0] in (b.pid, b_kid)]
    finally:
        for p in (a, b):
            if p.stdin and not p.stdin.closed:
                p.stdin.close()
            p.wait(10)
    s.close()


def test_sampler_births_on_the_tests_clock():
    """A descendant's birth, as the sampler keys it, is on the wall clock of the tests' records
    to the clock tick (Linux: psutil's create time alone can be a second off): what billing
    by birth relies on."""
    from pytest_perfmon.monitor.children import BORN_SLACK

    s = sampler.Sampler()
    w = report_model.Worker("main", os.getpid(), time.time(), boundary_methods={"children": True})
    for _ in range(3):
        t0 = time.time()
        child = _child("import sys; sys.stdin.read()")
        t1 = time.time()
        try:
            s.sample_group([w], time.time())
            (born,) = [b for pid, b in w.child_s[-1][1] if pid == child.pid]
        finally:
            child.stdin.close()
            child.wait(10)
        assert t0 - BORN_SLACK <= born <= t1 + 0.001, (t0, born, t1)


@pytest.mark.skipif(not POSIX, reason="RUSAGE_CHILDREN is POSIX")
def test_counters_read_the_children_cpu():
    c = Counters(children=True)
    try:
        assert c.methods["children"] is True
        c.reset()
        assert c.extra(None) is None  # nothing reaped: nothing to say
        c.reset()
        # 0.1 s burned: RUSAGE_CHILDREN has it and the child's start-up, never less (0.2 s
        # said nothing more)
        burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.1: pass"
        subprocess.run([sys.executable, "-c", burn], check=True)
        x = c.extra({"limits": []})
        assert x["limits"] == [] and x["children_cpu"] >= 0.09
        assert x["started"] == 1  # the audit hook counted it
        c.reset()
        for _ in range(2):
            subprocess.run([sys.executable, "-c", "pass"], check=True)
        assert c.extra(None)["started"] == 2
        c.fixtures.append(["f", "session", "t.py:1", "setup", 0.5])
        c.shared = 0.5
        c.reset()
        assert c.extra(None) == {
            "fixtures": [["f", "session", "t.py:1", "setup", 0.5]],
            "shared_setup": 0.5,
        }
        assert c.fixtures == [] and c.shared == 0.0
    finally:
        c.close()
    off = Counters()
    assert "children" not in off.methods and off.extra(None) is None
    off.close()


@pytest.mark.skipif(not POSIX, reason="fork, forkpty and posix_spawn are POSIX")
def test_start_counter_counts_every_start():
    """Each way of starting a process counts once: subprocess (whether it forks or
    posix_spawns), os.fork (multiprocessing's "fork"), os.forkpty, os.posix_spawn, os.system;
    nothing else does."""
    import multiprocessing
    import pty

    from pytest_perfmon._counters import not_counted, start_counter

    n = start_counter()
    assert start_counter() is n  # once per process

    def starts(run) -> int:
        before = n[0]
        with warnings.catch_warnings():  # Python 3.12+: fork() in a process with threads
            warnings.simplefilter("ignore", DeprecationWarning)
            run()
        return n[0] - before

    exe = shutil.which("true") or "/bin/true"

    def forkpty():
        pid, fd = pty.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        os.close(fd)

    def posix_spawn():
        os.waitpid(os.posix_spawn(exe, [exe], dict(os.environ)), 0)

    def fork_process():
        p = multiprocessing.get_context("fork").Process(target=int)
        p.start()
        p.join(30)

    assert starts(lambda: subprocess.run([exe], check=True)) == 1
    # close_fds=False lets subprocess start it with os.posix_spawn: still one
    assert starts(lambda: subprocess.run([exe], check=True, close_fds=False)) == 1
    assert starts(lambda: subprocess.run([exe], check=True, preexec_fn=int)) == 1
    assert starts(lambda: os.system(exe)) == 1
    assert starts(posix_spawn) == 1
    assert starts(forkpty) == 1
    assert starts(fork_process) == 1
    assert starts(lambda: open(os.devnull).close()) == 0

    def ours():
        with not_counted():
            subprocess.run([exe], check=True)

    assert starts(ours) == 0  # the plugin's own


def test_hello_carries_children_only_when_on():
    def hello(methods):
        body = {"role": "local", "pid": os.getpid(), "methods": methods}
        return protocol.parse_hello(protocol.unpack(protocol.pack(protocol.HELLO, body))[1]).methods

    assert hello({"rss": True, "peak": True, "children": True})["children"] is True
    assert "children" not in hello({"rss": True, "peak": True, "children": False})
    assert "children" not in hello({"rss": True})


def _rec(nodeid, start, stop, extra=None, setup=0.01):
    rec = [nodeid, start, stop, setup, 0.01, 0.01, "passed", 1, 1, 1, 0.0, stop - start, extra]
    assert len(rec) == N_FIELDS
    return rec


def _worker(records, samples):
    w = report_model.Worker("main", 1, 0.0, records=records, boundary_methods={"children": True})
    for t, s in samples:
        w.child_t.append(t)
        w.child_s.append(s)
    return w


def _build(w):
    data = report_model.RunData(sample_interval=0.1)
    data.workers[w.wid] = w
    return report_model.build(data, {"start": 0.0, "stop": 10.0}, None)


def test_children_billed_to_their_starter():
    """Each descendant is billed to the test it was born in, for its whole life: a server a
    test leaves running is its, never the next tests'; a test that started nothing is null,
    even when it stops another's server (what no sample saw of it goes to its starter)."""
    mb = 1024 * 1024
    a, b = (11, 1.2), (12, 2.4)  # (pid, born); the test process is 1
    w = _worker(
        [
            _rec("t::starts_a_server", 1.0, 2.0, {"started": 1}),
            _rec("t::starts_a_short_one", 2.0, 3.0, {"children_cpu": 0.15, "started": 1}),
            _rec("t::stops_the_server", 3.0, 4.0, {"children_cpu": 2.5}),
            _rec("t::short_child", 4.0, 5.0, {"children_cpu": 0.3, "started": 1}),
            _rec("t::nothing", 5.0, 6.0),
        ],
        [
            (1.5, (100 * mb, {a: 0.2}, {11: 1}, {11: 100 * mb})),
            (2.5, (150 * mb, {a: 1.0, b: 0.1}, {11: 1, 12: 1}, {11: 100 * mb, 12: 50 * mb})),
            (3.5, (100 * mb, {a: 2.0}, {11: 1}, {11: 100 * mb})),  # b ended, reaped
            (4.5, None),  # the server stopped: RUSAGE has its 2.5 s, 2.0 s of it seen
            (5.5, None),
        ],
    )
    tests = _build(w)["tests"]
    assert tests["t::starts_a_server"]["children"] == {
        "cpu_time": 2.5,
        "peak_rss_mb": 100.0,
        "processes": 1,
    }
    # b's whole life from RUSAGE (0.15 s), never its 0.1 s seen as well; its memory alone
    assert tests["t::starts_a_short_one"]["children"] == {
        "cpu_time": 0.15,
        "peak_rss_mb": 50.0,
        "processes": 1,
    }
    assert tests["t::stops_the_server"]["children"] is None
    # a child no sample saw: counted all the same (the audit hook), its CPU from RUSAGE
    assert tests["t::short_child"]["children"] == {
        "cpu_time": 0.3,
        "peak_rss_mb": None,
        "processes": 1,
    }
    assert tests["t::nothing"]["children"] is None


def _kids(tests, name):
    c = tests[name]["children"]
    return None if c is None else (pytest.approx(c["cpu_time"], abs=1e-6), c["processes"])


def test_children_reaped_by_a_descendant():
    """A forkserver (a child of the test process, living across tests) forks the workers and
    reaps them: their CPU is in its reaped-children count, never in the test process's
    RUSAGE_CHILDREN. Counted once, to the test they were born in (issue 20); the forkserver
    is the test's that started it (issue 27)."""
    mb = 1024 * 1024
    f, w1, w2 = (20, 1.2), (21, 2.4), (22, 2.4)  # (pid, born); the test process is 1
    parents = {20: 1, 21: 20, 22: 20}
    sizes = {20: 10 * mb, 21: 20 * mb, 22: 20 * mb}
    w = _worker(
        [
            _rec("t::starts_forkserver", 1.0, 2.0),  # no audit event: multiprocessing's own
            _rec("t::pool", 2.0, 3.0),
            _rec("t::after", 3.0, 4.0),
            _rec("t::short_pool", 4.0, 4.02),  # between two samples
            _rec("t::last", 4.02, 5.0),
        ],
        [
            (1.5, (10, {f: 0.1}, parents, sizes)),
            (2.5, (50, {f: 0.1, w1: 0.15, w2: 0.15}, parents, sizes)),
            (2.9, (50, {f: 0.1, w1: 0.3, w2: 0.3}, parents, sizes)),
            # the workers ended at 2.95 with 0.35 s each, and the forkserver reaped them
            (3.1, (10, {f: 0.8}, parents, sizes)),
            (3.5, (10, {f: 0.8}, parents, sizes)),
            (4.5, (10, {f: 1.0}, parents, sizes)),  # a pool of 0.2 s in t::short_pool, unseen
        ],
    )
    tests = _build(w)["tests"]
    # what no sample saw of a forkserver's workers lands with the forkserver: samples are
    # that coarse
    assert _kids(tests, "t::starts_forkserver") == (0.3, 1)
    assert tests["t::starts_forkserver"]["children"]["peak_rss_mb"] == 10.0
    # 0.3 s each seen running, 0.05 s each after the last sample, from the forkserver's count
    assert _kids(tests, "t::pool") == (0.7, 2)
    assert tests["t::pool"]["children"]["peak_rss_mb"] == 40.0  # the forkserver's not in it
    for name in ("t::after", "t::short_pool", "t::last"):
        assert tests[name]["children"] is None, name  # nothing bleeds into the next tests

    # the same from a journal of an older collector (no parents, no sizes): taken as reaped
    # by the test process, whose RUSAGE has none of them: the forkserver's growth is its
    old = _worker(w.records, [(t, s[:2]) for t, s in zip(w.child_t, w.child_s)])
    tests = _build(old)["tests"]
    assert _kids(tests, "t::pool") == (0.6, 2)
    assert _kids(tests, "t::starts_forkserver") == (1.0, 1)
    assert tests["t::pool"]["children"]["peak_rss_mb"] is None  # whose share: not known
    assert tests["t::after"]["children"] is None


def test_children_reaped_along_a_chain():
    """A child and its grandchild: a grandchild reaped by a child still running is counted
    through the child's count; both ended and reaped by the test process, through RUSAGE
    (which has the grandchild in the child's count), never twice."""
    c, g, g2 = (30, 1.1), (31, 1.2), (32, 3.2)
    p = {30: 1, 31: 30, 32: 30}
    w = _worker(
        [
            _rec("t::server", 1.0, 2.0, {"started": 1}),
            _rec("t::its_child_ends", 2.0, 3.0, {"children_cpu": 0.0}),
            _rec("t::both_end", 3.0, 4.0, {"children_cpu": 1.6}),
            _rec("t::after", 4.0, 5.0),
        ],
        [
            (1.5, (10, {c: 0.1, g: 0.2}, p)),
            (2.5, (10, {c: 0.1, g: 0.5}, p)),
            (2.9, (10, {c: 0.1 + 0.6}, p)),  # g ended (0.6 s), reaped by c
            (3.5, (10, {c: 0.75, g2: 0.5}, p)),  # c started g2 (in t::both_end)
            # both end: c reaped g2 (0.7 s), the test process reaped c: RUSAGE has c's own
            # 0.3 s, g's 0.6 s and g2's 0.7 s
            (4.5, None),
        ],
    )
    tests = _build(w)["tests"]
    # c and g: what the samples saw of them (c's count has g's tail)
    assert _kids(tests, "t::server") == (0.75, 2)
    assert tests["t::its_child_ends"]["children"] is None
    # g2, and RUSAGE less what the samples had counted of c and g2 (1.25 s)
    assert _kids(tests, "t::both_end") == (0.5 + 1.6 - 1.25, 1)
    assert tests["t::after"]["children"] is None


def test_children_when_the_samples_end_inside_the_test():
    """No sample after the test (a worker's last test): what its starter's test is still
    running taken as ended and reaped, the rest as still running."""
    f, a, b = (20, 1.2), (40, 2.1), (41, 2.2)
    p = {20: 1, 40: 1, 41: 20}
    w = _worker(
        [
            _rec("t::first", 1.0, 2.0),
            _rec("t::last", 2.0, 3.0, {"children_cpu": 0.5, "started": 1}),
        ],
        [(1.5, (10, {f: 0.1}, p)), (2.5, (10, {f: 0.3, a: 0.2, b: 0.4}, p))],
    )
    tests = _build(w)["tests"]
    assert _kids(tests, "t::first") == (0.3, 1)  # f grew 0.2 in t::last: still its
    # b (the forkserver's) 0.4; a (the test process's) is in RUSAGE's 0.5
    assert _kids(tests, "t::last") == (0.4 + 0.5, 2)


def test_children_born_near_a_boundary():
    """A create time is truncated to the clock tick (Linux): a child born in the first
    milliseconds of a test may seem born in the previous one; the audit hook's count says
    whose it is."""
    k = (50, 1.995)  # born at most BORN_SLACK later: in t::first's last 5 ms or t::second
    for first, second, owner in ((0, 1, "t::second"), (1, 0, "t::first")):
        w = _worker(
            [
                _rec("t::first", 1.0, 2.0, {"started": first} if first else None),
                _rec("t::second", 2.0, 3.0, {"started": second} if second else None),
            ],
            [(2.5, (10, {k: 0.1}, {50: 1})), (2.9, None)],
        )
        tests = _build(w)["tests"]
        assert _kids(tests, owner) == (0.1, 1), owner
        other = "t::first" if owner == "t::second" else "t::second"
        assert tests[other]["children"] is None


def test_fixture_children_from_records():
    """A shared fixture's events carry its wall-clock start, the processes it started and its
    reaped children's CPU: its process is its, never a test's."""
    mb = 1024 * 1024
    srv = (60, 1.05)
    up = ["server", "module", "t.py:3", "setup", 0.1, 1.0, 1, 0.0]
    down = ["server", "module", "t.py:3", "teardown", 0.05, 3.9, 0, 0.4]
    w = _worker(
        [
            _rec("t::uses_server", 1.0, 2.0, {"fixtures": [up], "shared_setup": 0.1}, 0.2),
            _rec("t::does_not_use_it", 2.0, 3.0),
            _rec("t::last", 3.0, 4.0, {"fixtures": [down]}),
        ],
        [(t, (8 * mb, {srv: 0.1 * t}, {60: 1}, {60: 8 * mb})) for t in (1.5, 2.5, 3.5)]
        + [(3.95, None)],
    )
    rep = _build(w)
    for name in ("t::uses_server", "t::does_not_use_it", "t::last"):
        assert rep["tests"][name]["children"] is None, name
    (fx,) = rep["fixtures"]
    # RUSAGE at its teardown (0.4 s: its whole life), less the 0.35 s seen, plus what was seen
    assert fx["children"] == {"cpu_time": 0.4, "peak_rss_mb": 8.0, "processes": 1}
    validate(rep)


def test_child_samples_journal_round_trip():
    """The daemon's journal keeps the parents and sizes, and reads journals written without
    them."""
    sample = (100, {(11, 1.0): 0.5, (12, 2.0): 0.25}, {11: 1, 12: 11}, {11: 60, 12: 40})
    out = sampler.child_sample_out(sample)
    assert out == [100, [[11, 1.0, 0.5, 1, 60], [12, 2.0, 0.25, 11, 40]]]
    assert sampler.child_sample_out(None) is None
    w = _worker([], [])
    old = [100, [[11, 1.0, 0.5]]]
    older = [100, [[11, 1.0, 0.5, 1]]]
    sampler.add_child_samples(
        w, [1.0, 2.0, 3.0, 4.0], [json.loads(json.dumps(out)), None, old, older]
    )
    assert w.child_s == [
        sample,
        None,
        (100, {(11, 1.0): 0.5}, {}, {}),
        (100, {(11, 1.0): 0.5}, {11: 1}, {}),
    ]


def test_fixtures_block_pairs_setups_with_teardowns():
    setup = ["db", "session", "conftest.py:3", "setup", 1.5]
    mod_up = ["m", "module", "t.py:5", "setup", 0.25]
    mod_down = ["m", "module", "t.py:5", "teardown", 0.125]
    w = _worker(
        [
            _rec("t::a", 1.0, 2.0, {"fixtures": [setup, mod_up], "shared_setup": 1.75}, 2.0),
            _rec("t::b", 2.0, 3.0, {"fixtures": [mod_down, mod_up]}),
            _rec(
                "t::c",
                3.0,
                4.0,
                {"fixtures": [mod_down, ["db", "session", "conftest.py:3", "teardown", 0.5]]},
            ),
            _rec("t::d", 4.0, 5.0, {"shared_setup": 9.0}, setup=0.5),
        ],
        [],
    )
    rep = _build(w)
    assert rep["tests"]["t::a"]["shared_setup_time"] == 1.75
    assert rep["tests"]["t::b"]["shared_setup_time"] == 0.0
    assert rep["tests"]["t::d"]["shared_setup_time"] == 0.5  # never above setup_time
    got = [
        (f["name"], f["setup_test"], f["teardown_test"], f["teardown_time"])
        for f in rep["fixtures"]
    ]
    assert got == [
        ("db", "t::a", "t::c", 0.5),
        ("m", "t::a", "t::b", 0.125),
        ("m", "t::b", "t::c", 0.125),
    ]


def test_fixture_location_is_relative_to_the_rootdir(tmp_path):
    def fx():
        pass

    here = os.path.dirname(os.path.abspath(__file__))
    loc = _fixtures.location(fx, os.path.dirname(here))
    assert loc == f"tests/test_children.py:{fx.__code__.co_firstlineno}"
    assert _fixtures.location(object(), str(tmp_path)) is None


def test_children_wanted():
    class Opt:
        perf_children = None

    assert _fixtures.children_wanted(Opt, lambda name: True) is True
    assert _fixtures.children_wanted(Opt, lambda name: False) is False
    Opt.perf_children = False
    assert _fixtures.children_wanted(Opt, lambda name: True) is False


# --- every way a child starts (issue 20) -------------------------------------------------------

# A helper module (the spawn and forkserver children import it, and nothing heavier): each
# child burns a known CPU time and says how much CPU its whole process used.
BURNMOD = """
import json, os, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
BURN = ("import time\\nt = time.process_time()\\nwhile time.process_time() - t < {}: pass\\n"
        "print(time.process_time())")

def burn(sec):
    t = time.process_time()
    while time.process_time() - t < sec:
        pass
    return os.getpid(), time.process_time()

def burn_into(conn, sec):
    conn.send(burn(sec))
    conn.close()

def note(name, burned, total):
    with open(os.path.join(HERE, f"burned-{name}.json"), "w") as f:
        json.dump([burned, total], f)

def python(code):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    return float(out.stdout.split()[-1])
"""

# Each burning test is followed by one that starts nothing: what it is billed is bleed.
STARTS = """
import multiprocessing as mp
import burnmod

def pool(method):
    ctx = mp.get_context(method)
    p = ctx.Pool(2)
    try:
        got = p.map_async(burnmod.burn, [0.05] * 4, chunksize=1).get(60)
    finally:
        p.close()
        p.join()
    last = {}
    for pid, cpu in got:
        last[pid] = max(cpu, last.get(pid, 0.0))
    burnmod.note(method, 0.2, sum(last.values()))

def test_fork():
    pool("fork")

def test_fork_next():
    pass

def test_spawn():
    pool("spawn")

def test_spawn_next():
    pass

def test_forkserver():
    pool("forkserver")

def test_forkserver_next():
    pass

def test_forkserver_process():
    ctx = mp.get_context("forkserver")
    mine, theirs = ctx.Pipe(duplex=False)
    p = ctx.Process(target=burnmod.burn_into, args=(theirs, 0.2))
    p.start()
    theirs.close()
    try:
        assert mine.poll(60)
        _, total = mine.recv()
    finally:
        p.join(60)
        if p.is_alive():
            p.kill()
            p.join(10)
    burnmod.note("forkserver_process", 0.2, total)

def test_forkserver_process_next():
    pass
"""

SUBPROCESSES = """
import burnmod

def test_subprocess():
    burnmod.note("subprocess", 0.2, burnmod.python(burnmod.BURN.format(0.2)))

def test_subprocess_next():
    pass

def test_grandchild():
    inner = burnmod.BURN.format(0.2)
    code = ("import sys, time; sys.path.insert(0, %r); import burnmod\\n"
            "print(burnmod.python(%r) + time.process_time())" % (burnmod.HERE, inner))
    burnmod.note("grandchild", 0.2, burnmod.python(code))

def test_grandchild_next():
    pass
"""

STARTED = ["fork", "spawn", "forkserver", "forkserver_process", "subprocess", "grandchild"]


@pytest.mark.skipif(not POSIX, reason="fork and forkserver are POSIX start methods")
@pytest.mark.parametrize("xdist", XDIST_ENDS)
def test_children_counted_however_they_start(tmp_path_factory, xdist):
    """fork, spawn and forkserver pools, a forkserver Process, a subprocess and a grandchild:
    each test is billed the CPU its children burned (not less than 60 %, not more than their
    processes' whole CPU by half), with their memory; the next test, which starts nothing, is
    billed next to nothing. A forkserver's children are its, not pytest's: the RUSAGE of the
    test process never sees them (issue 20)."""
    run = _children_run(tmp_path_factory, xdist)
    assert run.ret == 0, run.text
    for name in STARTED:
        t = run.test(f"test_{name}")
        burned, total = json.loads((run.path.parent / f"burned-{name}.json").read_text())
        kids = t["children"]
        assert kids is not None and kids["processes"] >= 1, (name, t)
        assert kids["peak_rss_mb"] is not None, (name, t)
        cpu = kids["cpu_time"]
        # macOS and others: no CPU of a forkserver's reaped children (psutil has none there),
        # only what the samples saw of them alive
        low = 0.6 if LINUX or "forkserver" not in name else 0.0
        assert cpu >= low * burned, (name, burned, total, t)
        # the children's own processes, plus a forkserver's and a resource tracker's start-up
        assert cpu <= 1.5 * total + 0.3, (name, burned, total, t)
        nxt = run.test(f"test_{name}_next")["children"]
        assert nxt is None or nxt["cpu_time"] < 0.1, (name, nxt)


# The end-to-end suites above that run with the same options (children sampled every 0.05 s;
# with xdist, --dist loadfile: each module on one worker) share one run each way instead of a
# run each: every test reads only its own modules' entries, files and fixtures (their tests'
# names are unique; SUITE's fixture "shared", which only SUITE's test reads, is its two
# modules'). Pytest runs the modules by name: each module's children end before the next
# module starts, but the fork- and resource-tracker servers STARTS leaves until the session's
# end, whose modules come last. NESTED keeps a run of its own: its check that the last test
# is not billed the session fixture's reaped child needs its test_two to be the last.
# With two workers SUITE's test needs its two modules on two workers. --dist loadfile hands
# out one module a worker at first, the rest to whichever worker is free, in collection order
# (by name: test_a and test_b come first, one on each worker; SUITE's modules then run first
# on their worker, as in the serial run) where xdist keeps that order: before 3.5, and with
# --no-loadscope-reorder (3.8). xdist 3.5 to 3.7 hand out the modules with the most tests
# first (SUITE's last, to whichever worker is free), with no way back: there SUITE's test
# takes a run of its own with its two modules alone (the whole run: one on each worker).
CHILDREN_RUN = {
    "test_billed": BILLED,
    "burnmod": BURNMOD,
    "test_starts": STARTS,
    "test_subprocesses": SUBPROCESSES,
}
CHILDREN_RUN_SERIAL = dict(CHILDREN_RUN, test_a=SUITE, test_b=SUITE)


def _loadfile_in_order() -> list | None:
    """The options with which --dist loadfile hands out the modules in collection order, or
    None where the installed xdist cannot (3.5 to 3.7)."""
    from importlib.metadata import version

    major, minor = (int(x) for x in version("pytest-xdist").split(".")[:2])
    if (major, minor) >= (3, 8):
        return ["--no-loadscope-reorder"]
    return [] if (major, minor) < (3, 5) else None


def _children_run(tmp_path_factory, xdist: list):
    """The shared run of CHILDREN_RUN_SERIAL, with xdist too (--dist loadfile, modules in
    collection order); of CHILDREN_RUN with an xdist that reorders them. Made once per session
    (helpers.shared_run)."""
    if not xdist:
        return shared_run(tmp_path_factory, CHILDREN_RUN_SERIAL, "--perf-cpu-interval", "0.05")
    in_order = _loadfile_in_order()
    files = CHILDREN_RUN if in_order is None else CHILDREN_RUN_SERIAL
    dist = ["--dist", "loadfile", *(in_order or [])]
    return shared_run(tmp_path_factory, files, "--perf-cpu-interval", "0.05", *xdist, *dist)


def test_a_shells_child_goes_to_the_test_not_the_fixture_set_up_before():
    """A test whose first line runs a shell, right after a shared fixture's setup: the shell
    (the test process's child, counted) and the process it starts (a grandchild, known by its
    birth tick only) are the test's. The grandchild's tick began inside the fixture's span,
    which ended in it: the fixture, preferred among those near, took it (an autouse session
    fixture, pytest-asyncio's, is set up in the first test of every session)."""
    from types import SimpleNamespace

    from pytest_perfmon.monitor import children as kids

    fixture = kids.Starter("fixture", [(10.000, 10.050)], 0.0, 0, True)
    test = kids.Starter("test", [(10.000, 10.300)], 0.4, 1, False)
    shell, python = (2001, 10.05), (2002, 10.05)  # both born in the tick that began at 10.05
    parents = {2001: 1000, 2002: 2001}
    samples = [(0, {shell: 0.0, python: 0.1 * i}, parents, {2001: 1, 2002: 100}) for i in (1, 2)]
    w = SimpleNamespace(pid=1000, child_t=[10.1, 10.2], child_s=samples)
    kids.bill(w, [fixture, test])
    assert test.direct == {shell} and test.other == {python}
    assert not (fixture.direct or fixture.other)


LEFT_RUNNING = {
    "test_left.py": """
import subprocess, sys

CHILD = (
    "import time\\nt = time.process_time()\\nwhile time.process_time() - t < 0.4: pass\\n"
    "open('child.done', 'w').close()"
)


def test_leaves_a_daemon():
    subprocess.Popen([sys.executable, "-c", CHILD], start_new_session=True)
""",
    "test_waits.py": """
import os, time


def test_waits_for_it():
    deadline = time.monotonic() + 60
    while not os.path.exists("child.done"):
        assert time.monotonic() < deadline, "the child never ended"
        time.sleep(0.02)
    time.sleep(0.3)  # a sample or two after its end
""",
}


def test_a_process_left_running_is_counted_after_its_worker_ends(pytester, run_perf):
    """-n 2: a test leaves a process running and is its worker's last test; xdist ends that
    worker, the process is reparented and no longer below it. It is still that test's, as in
    a serial run: sampled until it ends (it was counted only until the worker's end: 0.0-0.11
    of 0.7 CPU-s in a probe's runs)."""
    pytester.makepyfile(**{k[:-3]: v for k, v in LEFT_RUNNING.items()})
    run = run_perf("-n", "2", "--dist", "loadfile")
    assert run.ret == 0, run.text
    kids = run.report["tests"]["test_left.py::test_leaves_a_daemon"]["children"]
    assert kids is not None and kids["cpu_time"] >= 0.8 * 0.4, kids


def test_starters_with_one_span_are_kept_apart():
    """Two starters with the same span (a clock frozen in the user's fixtures gives every test
    one moment): ordered by their spans alone, never compared themselves (which raised
    TypeError and lost the whole report)."""
    from pytest_perfmon.monitor import children as kids

    a = kids.Starter("t.py::test_a", [(5.0, 5.0)], 0.0, 0, False)
    b = kids.Starter("t.py::test_b", [(5.0, 5.0)], 0.0, 0, False)
    who = kids._Starters([a, b])
    assert [st for _, _, st in who.spans] == [a, b]
    assert set(who.near(4.0, 6.0)) == {a, b}
