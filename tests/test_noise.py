"""The noise certificate (issue 21): the parsers on recorded file contents, the interpolation,
the summary and headline, the collector's reads of real processes, and end to end with a real
CPU hog in a subprocess (never a mocked /proc).

Every process started here is reaped in a finally; every wait is bounded.
"""

from __future__ import annotations

import bisect
import json
import os
import subprocess
import sys
import threading
import time

import pytest
from helpers import validate
from pytest_perfmon.monitor import noise as noise_certificate
from pytest_perfmon.monitor import protocol
from pytest_perfmon.monitor import report as report_model
from pytest_perfmon.monitor import sampler as sampler_module

LINUX = sys.platform.startswith("linux")
need_linux = pytest.mark.skipif(not LINUX, reason="the /proc sources are Linux's")
WAIT = 30.0

# --- recorded files ----------------------------------------------------------------------------

STATUS = b"""Name:\tpython
Umask:\t0022
State:\tR (running)
Tgid:\t4242
Pid:\t4242
PPid:\t1
Threads:\t5
SigQ:\t0/7823
Cpus_allowed_list:\t0-1
voluntary_ctxt_switches:\t150
nonvoluntary_ctxt_switches:\t37
"""

PROC_STAT = b"""cpu  274997 1293 62506 66218 1696 0 210 348 0 0
cpu0 137000 600 31000 33000 800 0 100 170 0 0
cpu1 137997 693 31506 33218 896 0 110 178 0 0
intr 1234 0 0
"""
#: a 2.6.9 kernel: no steal column
PROC_STAT_OLD = b"cpu  274997 1293 62506 66218 1696 0 210\ncpu0 1 2 3 4 5 6 7\n"

PSI = b"""some avg10=0.05 avg60=12.64 avg300=54.47 total=1425085383
full avg10=0.00 avg60=0.00 avg300=0.00 total=0
"""
#: kernels 4.20 to 5.12 have no "full" line for the CPU
PSI_SOME_ONLY = b"some avg10=1.00 avg60=2.00 avg300=3.00 total=77\n"

CPU_STAT_V2 = b"""usage_usec 8371542
user_usec 6215001
system_usec 2156541
core_sched.force_idle_usec 0
nr_periods 412
nr_throttled 97
throttled_usec 5123456
nr_bursts 0
burst_usec 0
"""
CPU_STAT_V1 = b"""nr_periods 120
nr_throttled 30
throttled_time 2500000000
nr_bursts 0
burst_time 0
"""

#: this machine's layout: cgroup v1 controllers plus an empty cgroup2 hierarchy (hybrid)
CGROUP_HYBRID = """9:name=systemd:/
4:memory:/process_api/8959
2:cpuacct:/
1:cpu:/ci/job7
0::/
"""
MOUNTINFO_HYBRID = """22 1 0:20 / / rw - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
#: a v2-only container with a cgroup namespace: its own cgroup is "/"
CGROUP_V2_NS = "0::/\n"
MOUNTINFO_V2 = "30 25 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
#: docker on cgroup v1 without a namespace: the mount's root is the container's cgroup
CGROUP_V1_DOCKER = "5:cpu,cpuacct:/docker/abc123\n3:memory:/docker/abc123\n"
MOUNTINFO_V1_DOCKER = (
    "40 35 0:33 /docker/abc123 /sys/fs/cgroup/cpu,cpuacct ro,nosuid"
    " - cgroup cgroup rw,cpu,cpuacct\n"
)
#: no cgroup file system mounted at all (a bare chroot)
MOUNTINFO_NONE = "22 1 0:20 / / rw - ext4 /dev/vda rw\n"


def test_schedstat_and_status():
    assert noise_certificate.parse_schedstat_both(b"559655376 516014 29\n") == (559655376, 516014)
    with pytest.raises(ValueError):  # the reader's callers take it as "no read"
        noise_certificate.parse_schedstat_both(b"")
    assert noise_certificate.parse_status(STATUS) == (5, 37)
    assert noise_certificate.parse_status(b"Name:\tx\n") == (None, None)


def test_proc_stat_steal():
    assert noise_certificate.parse_steal(PROC_STAT) == 348
    assert noise_certificate.parse_steal(PROC_STAT_OLD) is None
    with pytest.raises(ValueError):
        noise_certificate.parse_steal(b"intr 1 2 3\n")


def test_psi():
    assert noise_certificate.parse_psi_some(PSI) == 1425085383
    assert noise_certificate.parse_psi_some(PSI_SOME_ONLY) == 77
    with pytest.raises(ValueError):
        noise_certificate.parse_psi_some(b"full avg10=0.00 total=5\n")


def test_cpu_stat_and_quota():
    assert noise_certificate.parse_cpu_stat(CPU_STAT_V2, b"throttled_usec") == 5123456
    assert noise_certificate.parse_cpu_stat(CPU_STAT_V1, b"throttled_time") == 2500000000
    with pytest.raises(ValueError):  # a v2 cpu.stat without the cpu controller
        noise_certificate.parse_cpu_stat(
            b"usage_usec 1\nuser_usec 1\nsystem_usec 0\n", b"throttled_usec"
        )
    assert not noise_certificate.has_quota(2, "max 100000\n")
    assert noise_certificate.has_quota(2, "50000 100000\n")
    assert not noise_certificate.has_quota(1, "-1\n")
    assert noise_certificate.has_quota(1, "30000\n")
    assert not noise_certificate.has_quota(2, "")


def test_cgroup_dirs():
    hybrid = noise_certificate.cgroup_dirs(CGROUP_HYBRID, MOUNTINFO_HYBRID)
    assert hybrid == [
        (1, "/sys/fs/cgroup/cpu/ci/job7", "/sys/fs/cgroup/cpu"),
        (2, "/sys/fs/cgroup/unified", "/sys/fs/cgroup/unified"),
    ]
    assert noise_certificate.cgroup_dirs(CGROUP_V2_NS, MOUNTINFO_V2) == [
        (2, "/sys/fs/cgroup", "/sys/fs/cgroup")
    ]
    assert noise_certificate.cgroup_dirs(CGROUP_V1_DOCKER, MOUNTINFO_V1_DOCKER) == [
        (1, "/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu,cpuacct")
    ]
    assert noise_certificate.cgroup_dirs(CGROUP_HYBRID, MOUNTINFO_NONE) == []
    spaced = "41 31 0:38 / /mnt/cg\\040two rw - cgroup2 cgroup2 rw\n"
    assert noise_certificate.cgroup_dirs("0::/a\n", spaced) == [(2, "/mnt/cg two/a", "/mnt/cg two")]


def _reader(files: dict):
    def read(path: str) -> str:
        if path not in files:
            raise FileNotFoundError(path)
        return files[path]

    return read


def test_quota_levels():
    # v2: the quota is on the parent of the process's cgroup (a container's limit)
    dirs = [(2, "/cg/box/app", "/cg")]
    files = {"/cg/box/app/cpu.max": "max 100000\n", "/cg/box/cpu.max": "150000 100000\n"}
    assert noise_certificate.quota_levels(dirs, _reader(files)) == (
        [("/cg/box/cpu.stat", b"throttled_usec", 1e-6)],
        noise_certificate.METHOD_THROTTLE_V2,
    )
    # v1 with no quota anywhere (this machine): null
    v1 = [(1, "/sys/fs/cgroup/cpu/ci/job7", "/sys/fs/cgroup/cpu")]
    files = {
        "/sys/fs/cgroup/cpu/ci/job7/cpu.cfs_quota_us": "-1\n",
        "/sys/fs/cgroup/cpu/ci/cpu.cfs_quota_us": "-1\n",
        "/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1\n",
    }
    assert noise_certificate.quota_levels(v1, _reader(files)) == ([], None)
    files["/sys/fs/cgroup/cpu/ci/job7/cpu.cfs_quota_us"] = "50000\n"
    levels, method = noise_certificate.quota_levels(v1, _reader(files))
    assert levels == [("/sys/fs/cgroup/cpu/ci/job7/cpu.stat", b"throttled_time", 1e-9)]
    assert method == noise_certificate.METHOD_THROTTLE_V1
    # the files are missing (a container without them): null
    assert noise_certificate.quota_levels(dirs, _reader({})) == ([], None)


# --- the interpolation -------------------------------------------------------------------------


def _timeline(pairs):
    """Samples of one counter at position WAIT: [(t, value)] -> (ts, vs)."""
    ts = [t for t, _ in pairs]
    vs = [(v, None, None, None, None) for _, v in pairs]
    return ts, vs


def test_growth_interpolates_between_samples():
    ts, vs = _timeline([(0.0, 0.0), (1.0, 1.0), (2.0, 1.0), (3.0, 4.0)])

    def g(a, b, slack=0.2):
        return noise_certificate.growth(ts, vs, noise_certificate.WAIT, a, b, slack)

    assert g(0.0, 1.0) == 1.0
    assert g(0.25, 0.75) == pytest.approx(0.5)  # shorter than the interval: its share
    assert g(0.5, 2.5) == pytest.approx(0.5 + 1.5)
    assert g(1.0, 2.0) == 0.0
    # neighbours split what they share: nothing counted twice, nothing lost
    bounds = [0.0, 0.3, 1.7, 2.2, 3.0]
    parts = [g(a, b) for a, b in zip(bounds, bounds[1:])]
    assert sum(parts) == pytest.approx(4.0)
    # outside the samples: the nearest one within slack, else nothing said
    assert g(-0.1, 0.5) == pytest.approx(0.5)
    assert g(-1.0, 0.5) is None
    assert g(2.5, 3.1) == pytest.approx(1.5)  # 2.5 at 2.5, the last sample's 4 at 3.1
    assert g(2.5, 4.0) is None
    assert g(1.0, 0.5) is None
    assert noise_certificate.growth([], [], noise_certificate.WAIT, 0.0, 1.0, 0.2) is None


def test_growth_null_where_a_sample_lacks_the_counter():
    ts = [0.0, 1.0, 2.0]
    vs = [(0.0, None, 0.0, None, None), (1.0, None, None, None, None), (2.0, None, 1.0, None, None)]
    assert noise_certificate.growth(ts, vs, noise_certificate.WAIT, 0.2, 1.8, 0.1) == pytest.approx(
        1.6
    )
    assert noise_certificate.growth(ts, vs, noise_certificate.STEAL, 0.2, 1.8, 0.1) is None
    assert noise_certificate.growth(ts, vs, noise_certificate.STEAL, 0.0, 2.0, 0.1) == 1.0


def _worker(samples, how=None):
    w = report_model.Worker("main", 1, 0.0)
    for t, v in samples:
        w.noise_t.append(t)
        w.noise_v.append(v)
    w.noise_how = how
    return w


def test_entry_noise_and_contended():
    # wait grows 0.5 s per second, PSI 0.25 s per second, 40 switches per second
    w = _worker([(float(t), (0.5 * t, 40 * t, 0.01 * t, 0.25 * t, None)) for t in range(11)])
    n = noise_certificate.entry_noise(w, 2.0, 4.0, 2.0, 0.2)
    assert n == {
        "wait_time": 1.0,
        "throttled_time": None,
        "steal_time": 0.02,
        "pressure": 0.25,
        "involuntary_switches": 80,
        "contended": True,
    }
    assert noise_certificate.entry_noise(w, 20.0, 21.0, 1.0, 0.2) is None  # no sample near it
    assert noise_certificate.entry_noise(_worker([]), 0.0, 1.0, 1.0, 0.2) is None
    # the rule
    assert noise_certificate.is_contended({"wait_time": 0.1, "throttled_time": None}, 1.0)
    assert not noise_certificate.is_contended({"wait_time": 0.099, "throttled_time": None}, 1.0)
    assert noise_certificate.is_contended({"wait_time": 0.0, "throttled_time": 0.001}, 1.0)
    assert not noise_certificate.is_contended({"wait_time": 0.0, "throttled_time": 0.0009}, 1.0)
    assert not noise_certificate.is_contended({"wait_time": None, "throttled_time": None}, 1.0)
    assert not noise_certificate.is_contended({"wait_time": 0.5, "throttled_time": None}, 0.0)
    assert not noise_certificate.is_contended(None, 1.0)


def test_a_test_between_two_samples_gets_what_the_whole_timeline_search_gives(monkeypatch):
    # entry_noise's one-search path (both ends between the same two samples) against its
    # general one (growths: the path switched off), on irregular samples with a counter
    # missing now and then, ends on sample times too
    import random

    inside = noise_certificate._inside
    taken = []
    on = [True]

    def spy(*args):
        out = inside(*args) if on[0] else None
        if on[0]:
            taken.append(out is not None)
        return out

    monkeypatch.setattr(noise_certificate, "_inside", spy)
    rnd = random.Random(7)
    ts, vs, acc = [], [], [0.0] * 5
    t = 0.0
    for _ in range(200):
        t += rnd.uniform(0.01, 0.3)
        acc = [a + rnd.uniform(0, 0.05) for a in acc]
        ts.append(t)
        vs.append(tuple(None if rnd.random() < 0.1 else a for a in acc))
    w = _worker(list(zip(ts, vs)))
    between = 0
    for _ in range(2000):
        start = rnd.choice(ts) if rnd.random() < 0.1 else rnd.uniform(-0.5, t + 0.5)
        stop = start + rnd.choice([0.0, 1e-4, 0.01, 0.2, 2.0])
        if rnd.random() < 0.05:
            stop = ts[min(bisect.bisect_right(ts, start), len(ts) - 1)]  # on the next sample
        i = bisect.bisect_left(ts, start)
        between += 0 < i < len(ts) and ts[i - 1] < start < stop < ts[i]
        on[0] = False
        want = noise_certificate.entry_noise(w, start, stop, stop - start, 0.2)
        on[0] = True
        assert noise_certificate.entry_noise(w, start, stop, stop - start, 0.2) == want
    assert between > 500 and sum(taken) == between  # taken where it applies, and only there


def _row(wait, on_cpu, kids=0.0):
    """A noise sample of ours: the threads' wait plus the descendants', and the threads' CPU."""
    return (wait + kids, 0, None, None, None, on_cpu, kids)


def test_a_sleeping_test_beside_a_contended_one_gets_next_to_none_of_its_wait():
    # One sample interval (0 to 1 s): a CPU-bound test that waited, a test that slept 0.2 s
    # (0.1 ms of CPU), the time between them (pytest's own work: 5 ms of CPU in 0.3 s). The
    # process's threads waited 0.4 s and ran 0.405 s in the interval.
    ts, vs = [0.0, 1.0], [_row(0.0, 0.0), _row(0.4, 0.405)]
    tests = [(0.0, 0.5, 0.3, 0.5), (0.5, 0.7, 0.0001, 0.2)]
    busy, sleeper = noise_certificate.cpu_shared_waits(ts, vs, tests)
    assert busy == pytest.approx(0.4 * 0.3 / 0.405)
    assert sleeper == pytest.approx(0.4 * 0.0001 / 0.405) and sleeper < 1e-3
    # by time, the sleeper got a fifth of the wait: what the shares by CPU time replace
    w = _worker(list(zip(ts, vs)))
    assert noise_certificate.entry_noise(w, 0.5, 0.7, 0.2, 0.1)["wait_time"] == 0.08
    n = noise_certificate.entry_noise(w, 0.5, 0.7, 0.2, 0.1, sleeper)
    assert n["wait_time"] == round(sleeper, 6) and not n["contended"]


def test_cpu_shared_waits_count_nothing_twice_and_fall_back_where_they_cannot():
    """Random timelines and tests, some without a CPU time (shared by time by their caller),
    some samples without the CPU counter (an older relay's rows): what the tests shared by CPU
    time get, plus the time shares of the others, is never more than the wait that grew."""
    import random

    rnd = random.Random(21)
    fell_back = shared = 0
    for _ in range(400):
        ts, vs, t, wait, cpu, kids = [], [], 0.0, 0.0, 0.0, 0.0
        for _ in range(rnd.randint(2, 12)):
            ts.append(t)
            old = rnd.random() < 0.1
            vs.append((wait + kids, 0, None, None, None) if old else _row(wait, cpu, kids))
            t += rnd.choice([0.0, rnd.uniform(0.05, 0.3)])  # two samples at one time, now and then
            wait += rnd.uniform(0, 0.2)
            cpu += rnd.uniform(0, 0.3)
            kids += rnd.choice([0.0, rnd.uniform(0, 0.1)])
        tests, at = [], rnd.uniform(-0.2, 0.2)
        while at < t + 0.2:  # one process's tests, one after the other, gaps or none
            wall = rnd.uniform(0.001, 0.5)
            used = rnd.choice([None, 0.0, rnd.uniform(0, wall), wall])
            tests.append((at, at + wall, used, wall))
            at += wall + rnd.choice([0.0, rnd.uniform(0, 0.1)])
        got = noise_certificate.cpu_shared_waits(ts, vs, tests)
        assert len(got) == len(tests)
        given = 0.0
        for (start, stop, used, _), g in zip(tests, got):
            if g is not None:
                assert used is not None and g >= 0
                given += g
                shared += 1
                continue
            fell_back += 1
            for k in range(1, len(ts)):  # its time share of each interval, as its caller gives it
                a, b = vs[k - 1], vs[k]
                overlap = min(stop, ts[k]) - max(start, ts[k - 1])
                if overlap > 0 and len(a) > 5 and len(b) > 5:
                    given += (b[0] - a[0]) * overlap / (ts[k] - ts[k - 1])
        grown = sum(
            vs[k][0] - vs[k - 1][0]
            for k in range(1, len(ts))
            if len(vs[k]) > 5 and len(vs[k - 1]) > 5 and ts[k] > ts[k - 1]
        )
        assert given <= grown + 1e-9, (ts, vs, tests, got)
    assert fell_back > 300 and shared > 500
    # without the CPU counter anywhere, without a CPU time, without two samples: time decides
    old = [(0.0, 0, None, None, None), (0.4, 0, None, None, None)]
    assert noise_certificate.cpu_shared_waits([0.0, 1.0], old, [(0.1, 0.2, 0.1, 0.1)]) == [None]
    assert noise_certificate.cpu_shared_waits(
        [0.0, 1.0], [_row(0, 0), _row(0.4, 0.4)], [(0.1, 0.2, None, 0.1)]
    ) == [None]
    assert noise_certificate.cpu_shared_waits([0.0], [_row(0, 0)], [(0.1, 0.2, 0.1, 0.1)]) == [None]


def test_a_test_shared_by_time_takes_its_share_before_the_others_split_the_rest():
    # 0.4 s of wait in a 1 s interval: a test without a CPU time (0.5 s of it: shared by time,
    # 0.2 s) and a busy one; the busy one splits the other 0.2 s with the time between tests
    ts, vs = [0.0, 1.0], [_row(0.0, 0.0), _row(0.4, 0.6)]
    tests = [(0.0, 0.5, None, 0.5), (0.5, 0.9, 0.3, 0.4)]
    none, busy = noise_certificate.cpu_shared_waits(ts, vs, tests)
    assert none is None
    assert busy == pytest.approx(0.2 * 0.3 / max(0.3, 0.6 * 0.5))
    w = _worker(list(zip(ts, vs)))
    assert noise_certificate.entry_noise(w, 0.0, 0.5, 0.5, 0.1)["wait_time"] == 0.2


def test_descendants_wait_stays_shared_by_time():
    # 0.3 s of the 0.4 s waited is a descendant's: the test gets its time share of that (0.1 s
    # of the 1 s interval: 0.03 s) plus the threads' share by CPU time it is given
    ts, vs = [0.0, 1.0], [_row(0.0, 0.0), _row(0.1, 0.1, kids=0.3)]
    w = _worker(list(zip(ts, vs)))
    (wait,) = noise_certificate.cpu_shared_waits(ts, vs, [(0.2, 0.3, 0.05, 0.1)])
    assert wait == pytest.approx(0.1 * 0.05 / 0.1 + 0.03)
    n = noise_certificate.entry_noise(w, 0.2, 0.3, 0.1, 0.1, wait)
    assert n["wait_time"] == round(wait, 6)


def test_report_shares_the_wait_by_cpu_time():
    """Through report.build: two tests in one interval, the first busy, the second asleep."""
    w = report_model.Worker("main", 42, T0)
    busy = _record("t.py::busy", T0 + 0.1, T0 + 0.5)
    busy[protocol.CPU] = 0.3
    nap = _record("t.py::nap", T0 + 0.5, T0 + 0.7)
    nap[protocol.CPU] = 0.0001
    w.records = [busy, nap]
    w.noise_t = [T0, T0 + 1.0]
    w.noise_v = [_row(0.0, 0.0), _row(0.4, 0.305)]
    w.noise_how = {"wait_time": noise_certificate.METHOD_WAIT}
    w.noise_how["attribution"] = noise_certificate.ATTRIBUTION_CPU
    data = report_model.RunData(sample_interval=0.5)
    data.workers["main"] = w
    rep = validate(report_model.build(data, {"start": T0, "stop": T0 + 1, "exit_status": 0}, None))
    assert rep["tests"]["t.py::busy"]["noise"]["wait_time"] == pytest.approx(0.4 * 0.3 / 0.305)
    assert rep["tests"]["t.py::nap"]["noise"]["wait_time"] < 1e-3
    assert rep["session"]["measurement"]["noise"]["attribution"] == (
        noise_certificate.ATTRIBUTION_CPU
    )


def test_halving_keeps_the_last_sample_and_the_totals():
    w = _worker(
        [
            (float(t), (float(t), 0, None, None, None))
            for t in range(noise_certificate.MAX_SAMPLES + 1)
        ]
    )
    noise_certificate.halve(w)
    assert (
        w.noise_t[-1] == noise_certificate.MAX_SAMPLES
        and len(w.noise_t) == noise_certificate.MAX_SAMPLES // 2 + 1
    )
    assert (
        noise_certificate.growth(
            w.noise_t,
            w.noise_v,
            noise_certificate.WAIT,
            0.0,
            float(noise_certificate.MAX_SAMPLES),
            1.0,
        )
        == noise_certificate.MAX_SAMPLES
    )


# --- the report: entries, merge, summary, headline, schema -------------------------------------

T0 = 1_700_000_000.0


def _record(nodeid: str, start: float, stop: float) -> list:
    mb = 1 << 20
    return [
        nodeid,
        start,
        stop,
        0.0,
        stop - start,
        0.0,
        "passed",
        mb,
        mb,
        mb,
        0.1,
        stop - start,
        None,
    ]


def _built(extra_workers=()):
    """A report of two tests in one process sampled every 0.5 s: the first waited for a CPU
    half its time, the second hardly."""
    w = report_model.Worker(
        "main", 42, T0, records=[_record("t.py::a", T0, T0 + 2), _record("t.py::b", T0 + 2, T0 + 4)]
    )
    rate = lambda t: 0.5 * min(t, 2.0) + 0.01 * max(0.0, t - 2.0)  # noqa: E731
    for i in range(9):
        t = 0.5 * i
        w.noise_t.append(T0 + t)
        w.noise_v.append((rate(t), 10 * i, 0.0, 0.1 * t, None))
    w.noise_how = {
        "wait_time": noise_certificate.METHOD_WAIT,
        "throttled_time": None,
        "steal_time": noise_certificate.METHOD_STEAL,
        "pressure": noise_certificate.METHOD_PRESSURE,
        "involuntary_switches": noise_certificate.METHOD_INVOL,
    }
    data = report_model.RunData(sample_interval=0.5)
    data.workers["main"] = w
    for x in extra_workers:
        data.workers[x.wid] = x
    return validate(report_model.build(data, {"start": T0, "stop": T0 + 5, "exit_status": 0}, None))


def test_report_carries_the_noise():
    rep = _built()
    a, b = rep["tests"]["t.py::a"]["noise"], rep["tests"]["t.py::b"]["noise"]
    assert a["wait_time"] == pytest.approx(1.0) and a["contended"]
    assert b["wait_time"] == pytest.approx(0.02) and not b["contended"]
    assert a["pressure"] == pytest.approx(0.1) and a["involuntary_switches"] == 40
    assert rep["summary"]["noise"] == {
        "tests": 2,
        "wait_time": pytest.approx(1.02),
        "wait_share": pytest.approx(0.255),
        "throttled_time": None,
        "steal_time": 0.0,
        "contended": 1,
    }
    m = rep["session"]["measurement"]["noise"]
    assert m["wait_time"] == noise_certificate.METHOD_WAIT and m["throttled_time"] is None
    assert m["attribution"] == noise_certificate.ATTRIBUTION and "10%" in m["contended"]
    assert noise_certificate.headline(rep) == (
        "26 % of test time was spent waiting for a CPU; 1 test ran contended; "
        "its time is not comparable"
    )
    assert noise_certificate.contended_tests(rep) == ["t.py::a"]


def test_no_samples_no_noise():
    """The plugin's fallback report (no collector): no noise object, methods null."""
    data = report_model.RunData(sample_interval=None)
    data.workers["main"] = report_model.Worker(
        "main", 42, T0, records=[_record("t.py::a", T0, T0 + 1)]
    )
    rep = validate(report_model.build(data, {"start": T0, "stop": T0 + 2}, None))
    assert "noise" not in rep["tests"]["t.py::a"] and "noise" not in rep["summary"]
    assert set(rep["session"]["measurement"]["noise"].values()) == {
        None,
        noise_certificate.CONTENDED_RULE,
    }
    assert noise_certificate.headline(rep) is None


def test_executions_of_one_node_id_add_up():
    """--dist each: the same node id in two processes; its noise is the sum of both."""
    w2 = report_model.Worker("gw1", 43, T0, records=[_record("t.py::a", T0, T0 + 2)])
    for i in range(5):
        w2.noise_t.append(T0 + 0.5 * i)
        w2.noise_v.append((0.05 * i, i, None, 0.5 * 0.5 * i, None))
    rep = _built([w2])
    a = rep["tests"]["t.py::a"]
    assert len(a["executions"]) == 2
    assert a["noise"]["wait_time"] == pytest.approx(1.2)
    assert a["noise"]["involuntary_switches"] == 44
    assert a["noise"]["steal_time"] == 0.0
    assert a["noise"]["pressure"] == pytest.approx((0.1 * 2 + 0.5 * 2) / 4, abs=1e-4)


def test_headline_wording():
    def rep(block):
        return {"summary": {"noise": block}, "tests": {}}

    quiet = {"tests": 9, "wait_share": 0.004, "throttled_time": None, "contended": 0}
    assert (
        noise_certificate.headline(rep(quiet))
        == "0.4 % of test time was spent waiting for a CPU; no test ran contended"
    )
    assert noise_certificate.headline(rep(quiet), only_contended=True) is None
    # the wait of every thread of the process (the sender's, xdist's, ZeroMQ's beside the
    # test's) on a loaded machine, over tests of a fraction of a millisecond: no "247 %"
    crowded = {"tests": 50, "wait_share": 2.4759, "throttled_time": None, "contended": 50}
    assert noise_certificate.headline(rep(crowded)).startswith(
        "the tests' threads waited for a CPU 2.5 times as long as the tests ran; 50 tests"
    )
    busy = {"tests": 90, "wait_share": 0.14, "throttled_time": 2.5, "contended": 37}
    assert noise_certificate.headline(rep(busy)) == (
        "14 % of test time was spent waiting for a CPU; the CPU quota throttled the tests' "
        "cgroup for 2.50 s; 37 tests ran contended; their times are not comparable"
    )
    # a merged report: no summary.noise, the tests decide
    merged = {
        "summary": {},
        "tests": {"x": {"duration": 1.0, "noise": {"wait_time": 0.5, "contended": True}}},
    }
    assert noise_certificate.headline(merged).startswith("50 % of test time")
    assert noise_certificate.headline({}) is None and noise_certificate.headline(None) is None


# --- reading real processes --------------------------------------------------------------------


@need_linux
def test_reader_on_real_processes():
    """Our own process: the counters move forward; a thread that ends keeps its wait; a
    process that is gone is dropped and its files closed."""
    reader = noise_certificate.NoiseReader()
    w = report_model.Worker("main", os.getpid(), time.time())
    fds_before = len(os.listdir("/proc/self/fd"))
    reader.sample(w, 1.0)
    stop = threading.Event()
    th = threading.Thread(target=stop.wait)
    th.start()
    try:
        reader.sample(w, 2.0)
        assert len(reader.procs[os.getpid()].threads) >= 2
    finally:
        stop.set()
        th.join(WAIT)
    reader.sample(w, 3.0)
    waits = [v[noise_certificate.WAIT] for v in w.noise_v]
    assert all(x is not None for x in waits) and waits == sorted(waits)
    assert (
        w.noise_v[-1][noise_certificate.INVOL] is not None
        and w.noise_v[-1][noise_certificate.PSI] is not None
    )
    assert w.noise_how["wait_time"] == noise_certificate.METHOD_WAIT
    # the threads' time on a CPU, and the descendants' part of the wait (none sampled: 0)
    on_cpu = [v[noise_certificate.ON_CPU] for v in w.noise_v]
    assert on_cpu == sorted(on_cpu) and on_cpu[-1] > 0
    assert on_cpu[-1] <= time.process_time() + 0.01  # the same clock as the records' CPU time
    assert {v[noise_certificate.KIDS_WAIT] for v in w.noise_v} == {0.0}
    assert w.noise_how["attribution"] == noise_certificate.ATTRIBUTION_CPU

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        cw = report_model.Worker("gw0", child.pid, time.time())
        reader.sample(cw, 4.0)
        assert len(cw.noise_t) == 1 and child.pid in reader.procs
    finally:
        child.kill()
        child.wait(WAIT)
    reader.sample(cw, 5.0)  # gone: no sample, its files closed
    assert len(cw.noise_t) == 1 and child.pid not in reader.procs
    reader.close()
    assert len(os.listdir("/proc/self/fd")) <= fds_before


@need_linux
def test_reader_beyond_its_open_file_budget():
    """Past the budget of kept-open files, each schedstat file is opened for its read."""
    reader = noise_certificate.NoiseReader()
    reader.budget.left = 0
    w = report_model.Worker("main", os.getpid(), time.time())
    reader.sample(w, 1.0)
    reader.sample(w, 2.0)
    proc = reader.procs[os.getpid()]
    assert all(t[0] is None for t in proc.threads.values())
    assert (
        w.noise_v[-1][noise_certificate.WAIT] is not None
        and w.noise_v[-1][noise_certificate.WAIT] >= w.noise_v[0][noise_certificate.WAIT]
    )
    reader.close()
    assert reader.budget.left == 0


def test_sampler_and_daemon_journal_round_trip():
    """The sampler adds a noise sample with each RSS sample; the daemon's journal entry keeps
    it (with the methods) and the replay puts it back."""
    from pytest_perfmon.monitor.daemon.session import Session

    sampler = sampler_module.Sampler()
    w = report_model.Worker("main", os.getpid(), time.time())
    sampler.sample(w, time.time())
    sampler.sample(w, time.time() + 0.01)
    assert len(w.noise_t) == 2
    s = Session("d" * 32, "dddddddd", 0.1)
    s.apply({"k": "hello", "s": s.sid, "w": "main", "p": os.getpid(), "r": "local", "t": w.joined})
    entry = {"k": "samples", "s": s.sid, "d": {}, "cp": None}
    entry["n"] = {"main": [w.noise_t, [list(v) for v in w.noise_v], w.noise_how]}
    s.apply(json.loads(json.dumps(entry)))  # as the journal stores it
    back = s.data.workers["main"]
    assert back.noise_t == w.noise_t and back.noise_v == w.noise_v
    assert back.noise_how == w.noise_how


def test_daemon_session_report_has_noise(tmp_path, monkeypatch):
    """In-process daemon sampling a real busy process: the session's own report, the combined
    report (rebuilt from the journal) and the noise methods agree."""
    import tempfile

    from helpers import InProcess
    from pytest_perfmon.monitor.daemon.core import Daemon as Server

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    busy = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: pass"])
    out = tmp_path / "combined.json"
    d = InProcess(Server("ipc://unused", str(out), str(out) + ".journal", 0.1, False))
    try:
        sid = "e" * 32
        body = {"session": sid, "role": "local", "pid": busy.pid, "worker": "main"}
        assert d.send(sid.encode(), protocol.HELLO, body)[0] == protocol.READY
        start = time.time()
        for _ in range(4):
            d.srv.book.sample()
            time.sleep(0.05)
        d.srv.book.journal_all_samples()
        d.srv.book.sample()
        rec = _record("t.py::busy", start + 0.01, time.time())
        d.send(sid.encode(), protocol.BATCH, [0, [[rec[0].encode(), *rec[1:]]]])
        assert d.send(sid.encode(), protocol.BYE, {"sent": 1}) == (protocol.ACK, {"missing": []})
        own = tmp_path / "own.json"
        done = d.send(sid.encode(), protocol.FINISH, {"output": str(own), "exit_status": 0})[1]
        assert done["ok"], done
        assert d.srv.shutdown() == 0
    finally:
        busy.kill()
        busy.wait(WAIT)
        d.close()
    mine = validate(json.loads(own.read_text()))
    combined = validate(json.loads(out.read_text()))
    noise = mine["tests"]["t.py::busy"]["noise"]
    assert noise is not None and set(noise) == set(noise_certificate.FIELDS) | {"contended"}
    assert combined["tests"]["eeeeeeee::t.py::busy"]["noise"] == noise
    if LINUX:
        assert noise["wait_time"] is not None and noise["involuntary_switches"] is not None
        assert mine["session"]["measurement"]["noise"]["wait_time"] == noise_certificate.METHOD_WAIT


# --- end to end: a real CPU hog ----------------------------------------------------------------

#: CPU-bound work three times: quiet, beside a hog, quiet. The hog (two busy
#: processes) is started by one test and stopped by another, so that the test beside it measures
#: the work alone; the hog and that test share one CPU (the test's thread and the hog pinned to
#: it), so that the hog outweighs whatever else the machine runs. Sleeping tests between them
#: take the share of the sampling intervals they touch. Each hog process says (one byte) that it
#: is pinned and in its loop: the work starts beside both, however long they took to start.
#: The work beside the hog is 0.3 s of CPU time, not a number of loop turns: on a fast machine
#: 2,000,000 turns took 0.09 s, and the test beside the hog was shorter (0.28 s) than what a
#: busy machine's queued wake-ups give the sleeping tests around it. The quiet tests' work is
#: only compared in the line printed (their waits say the machine's load, not the hog's): a
#: million turns (0.05-0.1 s), a CPU-bound test as long as a sampling interval or so (each
#: test's noise certificate is checked), not two million.
HOG_SUITE = """
import os, subprocess, sys, time
import pytest

N = 1_000_000
CPU = min(os.sched_getaffinity(0))
HOG = "import os\\nos.sched_setaffinity(0, {%d})\\nos.write(1, b'.')\\nwhile True: pass" % CPU
hogs = []

def work():
    s = 0
    for i in range(N):
        s += i * i
    return s

def work_for(seconds):
    end = time.process_time() + seconds
    s = 0
    while time.process_time() < end:
        for i in range(20000):
            s += i * i
    return s

@pytest.fixture(scope="module", autouse=True)
def reap():
    yield
    for p in hogs:
        p.kill()
        p.wait(30)
        p.stdout.close()

def test_1_quiet():
    work()

def test_2_hog_on():
    hogs.extend(
        subprocess.Popen([sys.executable, "-S", "-c", HOG], stdout=subprocess.PIPE, bufsize=0)
        for _ in range(2)
    )
    for p in hogs:  # both busy before the work starts
        assert p.stdout.read(1) == b"."
    time.sleep(0.2)  # and this test sleeps beside them

def test_3_beside_hog():
    mask = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {CPU})
    try:
        work_for(0.3)
    finally:
        os.sched_setaffinity(0, mask)

def test_4_hog_off():
    for p in hogs:
        p.kill()
    for p in hogs:
        p.wait(30)
    time.sleep(0.3)

def test_5_quiet():
    work()
"""

#: For the other xdist worker (--dist loadfile): a CPU-bound test of its own (a million turns,
#: as the quiet tests').
OTHER_SUITE = """
def test_other():
    s = 0
    for i in range(1_000_000):
        s += i
"""


#: A test whose two busy children (0.15 s of CPU time each) share one CPU while its own thread
#: sleeps in wait(). Pinned to one CPU, each waits while the other runs, however many CPUs the
#: machine has (three unpinned children of 0.2 s each waited only where the machine had fewer
#: than three free CPUs).
CHILDREN_SUITE = """
import os, subprocess, sys

def test_children():
    cpu = min(os.sched_getaffinity(0))
    code = (
        "import os, time\\nos.sched_setaffinity(0, {%d})\\n"
        "t = time.process_time()\\nwhile time.process_time() - t < 0.15: pass" % cpu
    )
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(2)]
    for p in procs:
        p.wait(60)
"""


def _off_cpu(t: dict) -> float:
    """Seconds of a test's duration its process was not running (from its own CPU time)."""
    return t["duration"] * (1.0 - t["cpu_percent"] / 100.0)


@need_linux
@pytest.mark.parametrize(
    "xdist",
    [pytest.param([], id="no-xdist"), pytest.param(["-n", "2", "--dist", "loadfile"], id="n2")],
)
def test_hog_shows_as_wait_time(run_perf, pytester, xdist):
    pytester.makepyfile(test_hog=HOG_SUITE, test_other=OTHER_SUITE)
    # the hog is a test's child: with children counted, its own waiting would be the test's
    run = run_perf("-q", "--no-perf-children", *xdist)
    assert run.ret == 0, run.text
    rep = run.report
    m = rep["session"]["measurement"]["noise"]
    assert (
        m["wait_time"] == noise_certificate.METHOD_WAIT
        and m["involuntary_switches"] == noise_certificate.METHOD_INVOL
    )
    assert m["attribution"] == noise_certificate.ATTRIBUTION_CPU
    for name, t in rep["tests"].items():
        assert t["noise"] is not None, name
        assert t["noise"]["wait_time"] is not None, name
        assert t["noise"]["involuntary_switches"] is not None, name
    if xdist:
        assert {t["worker"] for t in rep["tests"].values()} == {"gw0", "gw1"}
    hog = run.test("test_3_beside_hog")
    q1, q5 = run.test("test_1_quiet"), run.test("test_5_quiet")
    on, off = run.test("test_2_hog_on"), run.test("test_4_hog_off")
    wait = hog["noise"]["wait_time"]
    # sharing one CPU with two busy processes: about two thirds of its time waiting
    assert wait >= 0.4 * hog["duration"], hog
    assert hog["noise"]["contended"] and hog["noise"]["involuntary_switches"] > 0
    # the time it did not run was mostly waiting for a CPU (the rest: interpolation, the
    # moments the samples shared with its neighbours)
    assert wait >= 0.6 * _off_cpu(hog), hog
    # and it is this test's: the tests on either side of it, which slept beside the same hog
    # (their threads need a CPU only to wake up), were not given its wait: each waited less
    # than a third as long. The samples they share with it are split by the CPU time each
    # used, so next to none of its wait reaches them (by time, before: up to 0.82 of a
    # sleeper's 0.2-0.3 s on a busy machine); a busy machine still queues their own wake-ups,
    # so their share of their own time says little.
    # (Not compared with the quiet runs' waits: on a busy machine those wait for the machine's
    # other jobs, which the scheduler moves off the hog's CPU while it runs, as much as this
    # test waits for the hog: that compares the machine's load at two moments.)
    sleepers = max(t["noise"]["wait_time"] for t in (on, off))
    assert sleepers < wait / 3, [(t["duration"], t["noise"]) for t in (hog, on, off)]
    assert rep["summary"]["noise"]["contended"] >= 1
    assert rep["summary"]["noise"]["wait_time"] >= wait
    assert "ran contended" in noise_certificate.headline(rep)
    print(
        f"\nbeside the hog: {hog['duration']:.3f} s, {wait:.3f} s waiting "
        f"(off CPU {_off_cpu(hog):.3f} s); quiet: "
        + ", ".join(
            f"{q['duration']:.3f} s, {q['noise']['wait_time']:.3f} s waiting" for q in (q1, q5)
        )
        + f"; the sleepers beside it waited at most {sleepers:.3f} s"
    )


@need_linux
def test_children_waiting_counts(run_perf, pytester):
    """Two busy children on one CPU: their waiting is the test's (its own thread sleeps)."""
    pytester.makepyfile(test_kids=CHILDREN_SUITE)
    run = run_perf("-q")
    assert run.ret == 0, run.text
    kids = run.test("test_children")
    assert kids["children"] is not None and kids["children"]["processes"] >= 1, kids
    assert kids["noise"]["wait_time"] >= 0.1 * kids["duration"], kids


#: A CPU-bound test under a quota, then a sleeping one (see test_throttled_by_a_cpu_quota).
QUOTA_SUITE = """
import time

def test_busy():  # 0.1 s of CPU or so: a second under the quota, its ten periods throttled
    s = 0
    for i in range(1_500_000):
        s += i

def test_idle():
    time.sleep(0.5)
"""

#: The run of QUOTA_SUITE puts itself in the cgroup with the quota as pytest loads its
#: conftest: before the plugin starts its monitor (in pytest_configure), whose process is then
#: in it too, as is every process started after. (pytest's own start-up, outside it, was a
#: real start of `python -m pytest` in it, 0.3 CPU-s: three seconds under the quota.)
QUOTA_CONFTEST = """
import os

with open(os.path.join(os.environ["PERFMON_TEST_CGROUP"], "cgroup.procs"), "w") as f:
    f.write(str(os.getpid()))
"""


def _cpu_cgroup_parent():
    """Where this process can make a cgroup with a CPU quota: (version, directory) or None."""
    if not LINUX or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    try:
        with open("/proc/self/cgroup") as f, open("/proc/self/mountinfo") as g:
            dirs = noise_certificate.cgroup_dirs(f.read(), g.read())
    except OSError:
        return None
    for version, d, _ in dirs:
        if version == 1 and os.path.exists(os.path.join(d, "cpu.cfs_quota_us")):
            return version, d
        if version == 2:
            try:
                with open(os.path.join(d, "cgroup.subtree_control")) as f:
                    if "cpu" in f.read().split():
                        return version, d
            except OSError:
                pass
    return None


@pytest.mark.skipif(
    _cpu_cgroup_parent() is None, reason="no writable cgroup with the cpu controller"
)
def test_throttled_by_a_cpu_quota(run_perf, pytester):
    """A real cgroup with a quota of 0.1 CPU: a CPU-bound test in it is throttled, and says so.
    (0.3 was seen not to throttle on a busy machine: the test got less than that anyway.)"""
    version, parent = _cpu_cgroup_parent()
    cg = os.path.join(parent, f"perfmon-noise-{os.getpid()}")
    os.mkdir(cg)
    try:
        if version == 1:
            with open(os.path.join(cg, "cpu.cfs_period_us"), "w") as f:
                f.write("100000")
            with open(os.path.join(cg, "cpu.cfs_quota_us"), "w") as f:
                f.write("10000")
        else:
            with open(os.path.join(cg, "cpu.max"), "w") as f:
                f.write("10000 100000")
        pytester.makepyfile(test_q=QUOTA_SUITE, conftest=QUOTA_CONFTEST)
        run = run_perf("-q", "test_q.py", env={"PERFMON_TEST_CGROUP": cg})
        assert run.ret == 0, run.text
    finally:
        deadline = time.monotonic() + WAIT
        while True:
            try:
                os.rmdir(cg)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    rep = run.report
    want = (
        noise_certificate.METHOD_THROTTLE_V1
        if version == 1
        else noise_certificate.METHOD_THROTTLE_V2
    )
    assert rep["session"]["measurement"]["noise"]["throttled_time"] == want
    t = rep["tests"]["test_q.py::test_busy"]
    assert t["noise"]["throttled_time"] is not None and t["noise"]["contended"], t
    # a throttled thread is runnable, not running: its run_delay counts the throttling
    assert t["noise"]["wait_time"] >= 0.3 * t["duration"], t
    # the kernel adds a throttled period to cpu.stat when the cgroup is unthrottled, which
    # (kernel 6.18's task-based throttling) can be as late as when it goes idle: the sleeping
    # test after the busy one takes what came late
    assert rep["summary"]["noise"]["throttled_time"] > 0.01, rep["tests"]
    assert "throttled" in noise_certificate.headline(rep)
    print(
        f"\nthrottled {t['noise']['throttled_time']:.3f} s, "
        f"wait {t['noise']['wait_time']:.3f} s of {t['duration']:.3f} s"
    )


def test_growths_equal_growth_of_each_counter():
    """The report's one-search-per-end growths give, to the bit, what growth gives counter by
    counter: random timelines with gaps (None), exact sample times, ends outside the timeline
    within and beyond the slack, reversed spans, and rows that are not five counters long."""
    import random

    rnd = random.Random(25)
    compared = 0
    for _ in range(5000):
        n = rnd.choice([0, 1, 2, 3, 12])
        width = rnd.choice([5, 5, 5, 4, 6])
        ts = sorted(rnd.choice([rnd.uniform(0, 10), float(rnd.randint(0, 10))]) for _ in range(n))
        vs = [
            tuple(rnd.choice([None, rnd.uniform(0, 5), rnd.randint(0, 50)]) for _ in range(width))
            for _ in range(n)
        ]
        start = rnd.choice([rnd.uniform(-1, 11), float(rnd.randint(0, 10)), *ts])
        stop = rnd.choice([start + rnd.uniform(0, 3), start - 0.5, float(rnd.randint(0, 10)), *ts])
        slack = rnd.choice([0.0, 0.05, 1.0])
        want = [noise_certificate.growth(ts, vs, k, start, stop, slack) for k in range(5)]
        # a row of four: the missing counter is None; of six: a sixth value after the five
        assert noise_certificate.growths(ts, vs, start, stop, slack)[:5] == want, (
            ts,
            vs,
            start,
            stop,
            slack,
        )
        compared += sum(g is not None for g in want)
    assert compared > 1000  # most cases had counters to compare
