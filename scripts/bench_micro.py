#!/usr/bin/env python
"""Micro-benchmark: the plugin's own work per test inside the measured process.

Drives the real ``pytest_perfmon._measure.Measurer`` hooks the way pytest does for one test
(the ``pytest_runtest_protocol`` hookwrapper generator around three ``pytest_runtest_logreport``
calls) with a minimal fake item and fake reports, and times N such tests. The batches go either
nowhere (``--client none``: records kept in the process) or through the real ``Client`` and
its ``Sender`` thread (started as after ``ready``) to a real ZeroMQ ROUTER socket bound here on
ipc:// and drained by a thread (``--client zmq``). The sender's packing and sending compete
with the hooks for the GIL, so they are in the figure.

It also times each boundary counter read alone (``Counters().rss()``, ``.peak()``, ``.reset()``,
``time.process_time()``, ...) and a few alternatives, so that one sees where the time goes.

Figures are medians over ``--reps`` repetitions of ``--n`` iterations each, in microseconds.
Pluggy's own dispatch of the hooks is not included (see scripts/bench_overhead.py for the
end-to-end cost).

    python scripts/bench_micro.py [--n 20000] [--reps 7] [--client both|none|zmq] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Optional

try:
    from pytest_perfmon import _client, _counters, _limits, _measure
except ImportError:  # run from a checkout without an install: plugin/ is pytest_perfmon
    sys.exit("pytest_perfmon is not importable: install the project (pip install -e .) first")

import zmq

_perf = time.perf_counter

# --- fakes --------------------------------------------------------------------------------------


class FakeItem:
    __slots__ = ("nodeid",)

    def __init__(self, nodeid: str) -> None:
        self.nodeid = nodeid


class FakeResult:
    """What pluggy sends back into a hookwrapper: the test protocol ran to its end."""

    excinfo = None


class FakeReport:
    __slots__ = ("when", "duration", "passed", "failed", "skipped")

    def __init__(self, when: str) -> None:
        self.when = when
        self.duration = 0.0001
        self.passed = True
        self.failed = False
        self.skipped = False


class LimitReport:
    """A report the limit check can read and (were a limit exceeded) change."""

    def __init__(self, when: str) -> None:
        self.nodeid = ITEM.nodeid
        self.when = when
        self.duration = 0.0001
        self.passed = True
        self.failed = False
        self.skipped = False
        self.outcome = "passed"
        self.user_properties: list = []
        self.sections: list = []


ALL_NONE = "Measurer, all counters, no client"
LIMITS_NONE = "Measurer + Limits, no limit on this test, no client"
LIMITS_FIVE = "Measurer + Limits, 5 limits on this test (none exceeded)"
LIMITS_ALONE = "Limits hook alone (3 calls), no limit on this test"
ALL_ZMQ = "Measurer, all counters, real Client -> ROUTER"
ITEM = FakeItem("tests/test_generated_07.py::test_42")
REPORTS = (FakeReport("setup"), FakeReport("call"), FakeReport("teardown"))
RESULT = FakeResult()


# --- a ROUTER that swallows everything ----------------------------------------------------------


class Sink:
    """A ROUTER socket bound on ipc:// in a private temp dir, drained by a thread."""

    def __init__(self) -> None:
        self.tmpdir = tempfile.mkdtemp(prefix="perfmon-bench-")
        self.endpoint = "ipc://" + os.path.join(self.tmpdir, "sink.sock")
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.bind(self.endpoint)
        self.frames = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        sock = self.sock
        while not self.stop.is_set():
            if sock.poll(50, zmq.POLLIN):
                while True:
                    try:
                        sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self.frames += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close(0)
        self.ctx.term()
        shutil.rmtree(self.tmpdir, ignore_errors=True)


# --- timing helpers -----------------------------------------------------------------------------


def interleaved_us(cases: list, n: int, reps: int) -> list:
    """Time ``fn(n)`` for every ``(name, fn)``, the cases taking turns in each repetition.

    Taking turns spreads any change of the machine's load over all cases alike. Returns, per
    case, the median / min / max of microseconds per iteration over the repetitions.
    """
    for _, fn in cases:
        fn(max(n // 10, 100))  # warm up
    times: list = [[] for _ in cases]
    for _ in range(reps):
        for i, (_, fn) in enumerate(cases):
            gc.collect()
            t0 = _perf()
            fn(n)
            times[i].append((_perf() - t0) / n * 1e6)
    return [
        {"name": name, "median": statistics.median(t), "min": min(t), "max": max(t)}
        for (name, _), t in zip(cases, times)
    ]


def loop_of(call: Callable[[], Any]) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            call()

    return run


def empty_loop(n: int) -> None:
    for _ in range(n):
        pass


# --- the per-test drivers -----------------------------------------------------------------------


def drive(m: Any) -> Callable[[int], None]:
    """N fake tests through the hooks of ``m``, exactly as pytest calls them."""
    protocol = m.pytest_runtest_protocol
    logreport = m.pytest_runtest_logreport
    item = ITEM
    r1, r2, r3 = REPORTS

    def run(n: int) -> None:
        for _ in range(n):
            gen = protocol(item, None)
            next(gen)
            logreport(r1)
            logreport(r2)
            logreport(r3)
            try:
                gen.send(RESULT)
            except StopIteration:
                pass
        # records kept in-process (no client, no sender) would pile up over the repetitions
        if getattr(m, "sender", True) is None:
            m.queue.clear()

    return run


def drive_limit_hook_alone(m: Any) -> Callable[[int], None]:
    """Only the limit check's three logreport calls of a test without a limit."""
    check = _limits.Limits(m, "fail", ())
    check.by_nodeid["tests/test_other.py::test_with_a_limit"] = {"call": 1.0}
    hook = check.pytest_runtest_logreport
    r1, r2, r3 = (LimitReport(w) for w in ("setup", "call", "teardown"))

    def run(n: int) -> None:
        for _ in range(n):
            hook(r1)
            hook(r2)
            hook(r3)

    return run


def drive_limits(m: Any, limits: Optional[dict]) -> Callable[[int], None]:
    """As :func:`drive`, plus the limit check's logreport hook before the Measurer's (the check
    stays registered when some test of the run has a limit)."""
    protocol = m.pytest_runtest_protocol
    logreport = m.pytest_runtest_logreport
    check = _limits.Limits(m, "fail", ())
    if limits is not None:
        check.by_nodeid[ITEM.nodeid] = limits
    else:
        check.by_nodeid["tests/test_other.py::test_with_a_limit"] = {"call": 1.0}
    limit_logreport = check.pytest_runtest_logreport
    item = ITEM
    r1, r2, r3 = (LimitReport(w) for w in ("setup", "call", "teardown"))

    def run(n: int) -> None:
        for _ in range(n):
            gen = protocol(item, None)
            next(gen)
            limit_logreport(r1)
            logreport(r1)
            limit_logreport(r2)
            logreport(r2)
            limit_logreport(r3)
            logreport(r3)
            try:
                gen.send(RESULT)
            except StopIteration:
                pass
        m.queue.clear()

    return run


class EmptyMeasurer:
    """The same hook shapes doing nothing: the cost of the fake calls themselves."""

    client = None

    def pytest_runtest_protocol(self, item: Any, nextitem: Any) -> Any:
        yield

    def pytest_runtest_logreport(self, report: Any) -> None:
        pass


def make_measurer(client: Optional[Any], disable: tuple = ()) -> Any:
    m = _measure.Measurer("main", client)
    for name in disable:
        setattr(m.counters, name, _counters._none)
    if client is not None:
        client.ready = True  # as after the collector's "ready": the sender thread sends
        m.start_sending()
    return m


def pluggy_limits_cost(n: int, reps: int) -> dict:
    """The limit check through pluggy's real dispatch: pytest_runtest_logreport with 8 no-op
    implementations (about what a pytest run has), without and with the Limits hook (a test
    without a limit, the check registered because another test has one), taking turns."""
    import pluggy

    spec = pluggy.HookspecMarker("pytest")
    impl = pluggy.HookimplMarker("pytest")

    class Spec:
        @spec
        def pytest_runtest_logreport(self, report: Any) -> None: ...

    class NoOp:
        @impl
        def pytest_runtest_logreport(self, report: Any) -> None:
            pass

    def hook(with_limits: bool) -> Any:
        pm = pluggy.PluginManager("pytest")
        pm.add_hookspecs(Spec)
        for _ in range(8):
            pm.register(NoOp())
        if with_limits:
            check = _limits.Limits(_measure.Measurer("main", None), "fail", ())
            check.by_nodeid["tests/test_other.py::test_with_a_limit"] = {"call": 1.0}
            pm.register(check)
        return pm.hook.pytest_runtest_logreport

    report = LimitReport("call")

    def calls(h: Any) -> Callable[[int], None]:
        def run(k: int) -> None:
            for _ in range(k):
                h(report=report)

        return run

    rows = interleaved_us(
        [("8 impls", calls(hook(False))), ("+ Limits", calls(hook(True)))], n, reps
    )
    per_call = rows[1]["median"] - rows[0]["median"]
    return {"rows": rows, "per_test_us": 3 * per_call}


# --- counter reads ------------------------------------------------------------------------------


def counter_benchmarks(n: int, reps: int) -> dict:
    out: dict = {}
    c = _counters.Counters()
    out["methods"] = dict(c.methods)
    cases: list = [
        ("Counters.rss()   (as shipped)", c.rss),
        ("Counters.peak()  (as shipped)", c.peak),
        ("Counters.reset() (as shipped)", c.reset),
        ("time.process_time()", time.process_time),
        ("time.perf_counter()", time.perf_counter),
        ("time.time()", time.time),
    ]
    # Alternatives a change could use instead.
    ru = resource.getrusage
    self_ = resource.RUSAGE_SELF
    cases.append(("getrusage(RUSAGE_SELF).ru_maxrss", lambda: ru(self_).ru_maxrss))
    cases.append(("os.times()", os.times))
    if sys.platform.startswith("linux"):
        try:
            fd = os.open("/proc/self/status", os.O_RDONLY)
            cases.append(("VmHWM parsed from pread /proc/self/status", vmhwm_reader(fd)))
            cases.append(("pread /proc/self/status only (no parse)", lambda: os.pread(fd, 4096, 0)))
            cases.append(("pread /proc/self/status, 256 bytes", lambda: os.pread(fd, 256, 0)))
        except OSError:
            fd = -1
        try:
            sfd = os.open("/proc/self/statm", os.O_RDONLY)
            cases.append(("pread /proc/self/statm only (no parse)", lambda: os.pread(sfd, 96, 0)))
        except OSError:
            sfd = -1
    timed = interleaved_us(
        [(name, loop_of(fn)) for name, fn in cases] + [("", empty_loop)], n, reps
    )
    base = timed.pop()["median"]
    rows = [{"name": t["name"], "us": max(t["median"] - base, 0.0)} for t in timed]
    out["rows"] = rows
    out["loop_us"] = base
    c.close()
    if sys.platform.startswith("linux"):
        for f in (fd, sfd):
            if f >= 0:
                os.close(f)
    return out


def vmhwm_reader(fd: int) -> Callable[[], int]:
    """The peak as the first version of the plugin read it: VmHWM parsed from /proc/self/status."""
    pread = os.pread

    def vmhwm() -> int:
        data = pread(fd, 4096, 0)
        i = data.index(b"VmHWM:") + 6
        return int(data[i : data.index(b"kB", i)]) * 1024

    return vmhwm


def status_size() -> Optional[int]:
    try:
        with open("/proc/self/status", "rb") as f:
            data = f.read()
        return len(data)
    except OSError:
        return None


# --- main ---------------------------------------------------------------------------------------


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000, help="fake tests per repetition")
    ap.add_argument("--reps", type=int, default=7, help="repetitions (the median is reported)")
    ap.add_argument("--client", choices=("both", "none", "zmq"), default="both")
    ap.add_argument("--target-us", type=float, default=30.0, help="target per test, us")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    n, reps = args.n, args.reps

    result: dict = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "nproc": os.cpu_count(),
        "n": n,
        "reps": reps,
        "batch_records": _client.BATCH_RECORDS,
    }

    print(f"pytest-perfmon micro-benchmark: {n} fake tests x {reps} reps, medians in us")
    print(f"python {result['python']}, {result['platform']}, nproc={result['nproc']}")
    print()

    # 1. counters
    cb = counter_benchmarks(max(n, 20000), reps)
    result["counters"] = cb
    print(f"boundary counter reads (each alone, empty loop {cb['loop_us']:.3f} us subtracted)")
    print(f"  methods available: {cb['methods']}; /proc/self/status is {status_size()} bytes")
    for r in cb["rows"]:
        us = "n/a" if r["us"] is None else f"{r['us']:8.2f}"
        print(f"  {r['name']:<52} {us} us")
    print()

    # 1b. the limit check through pluggy
    pc = pluggy_limits_cost(max(n, 20000), reps)
    result["limits_pluggy"] = pc
    print("pytest_runtest_logreport through pluggy (8 no-op impls), per call:")
    for r in pc["rows"]:
        print(f"  {r['name']:<52} {r['median']:8.3f} us")
    print(f"  the Limits hook, 3 phases of a test without a limit: {pc['per_test_us']:.3f} us")
    print()

    # 2. per-test: every variant set up first, then timed taking turns
    cases: list = [("empty hooks (fake calls only, baseline)", drive(EmptyMeasurer()))]
    measurers: list = []

    def measurer(client: Optional[Any], disable: tuple = ()) -> Any:
        m = make_measurer(client, disable)
        measurers.append(m)
        return m

    if args.client in ("both", "none"):
        for name, disable in (
            ("Measurer, counters off, no client", ("rss", "peak", "reset")),
            ("Measurer, peak+reset off, no client", ("peak", "reset")),
            ("Measurer, peak off, no client", ("peak",)),
            (ALL_NONE, ()),
        ):
            cases.append((name, drive(measurer(None, disable))))
        cases.append((LIMITS_NONE, drive_limits(measurer(None), None)))
        big = {"duration": 1e9, "call": 1e9, "peak_mb": 1e9, "delta_mb": 1e9, "cpu_time": 1e9}
        cases.append((LIMITS_FIVE, drive_limits(measurer(None), big)))
        cases.append((LIMITS_ALONE, drive_limit_hook_alone(measurer(None))))
        _counters.CHILDREN = True  # children measured: the default with --perf-monitor
        try:
            cases.append(("Measurer, all counters + children, no client", drive(measurer(None))))
        finally:
            _counters.CHILDREN = False
        # What-ifs (not necessarily the plugin's code): the peak read one way or the other.
        m = measurer(None)
        if m.counters.methods["peak"]:
            ru, who = resource.getrusage, resource.RUSAGE_SELF
            m.counters.peak = lambda: ru(who).ru_maxrss * 1024
            cases.append(("what-if: peak = getrusage() only, no client", drive(m)))
            m = measurer(None)
            m.counters.fds.append(os.open("/proc/self/status", os.O_RDONLY))
            m.counters.peak = vmhwm_reader(m.counters.fds[-1])
            cases.append(("what-if: peak = /proc/self/status VmHWM, no client", drive(m)))
    sink = None
    clients: list = []
    if args.client in ("both", "zmq"):
        sink = Sink()
        # one client per measurer: each sender thread owns its socket
        clients = [_client.Client(sink.endpoint), _client.Client(sink.endpoint)]
        m0 = measurer(clients[0], ("rss", "peak", "reset"))
        cases.append(("Measurer, counters off, real Client -> ROUTER", drive_zmq(m0, clients[0])))
        cases.append((ALL_ZMQ, drive_zmq(measurer(clients[1]), clients[1])))
    try:
        rows = interleaved_us(cases, n, reps)
    finally:
        for m in measurers:
            m.stop_sending()
            m.counters.close()
        for client in clients:
            client.close()
        if sink is not None:
            time.sleep(0.2)
            sink.close()
    by_name = {r["name"]: r["median"] for r in rows}
    empty = rows[0]["median"]
    real_none = by_name.get(ALL_NONE)
    real_zmq = by_name.get(ALL_ZMQ)

    print("per fake test (protocol hookwrapper + 3 logreport calls)")
    print(f"  {'':<50} {'median':>8} {'min':>8} {'max':>8} {'minus empty':>12}")
    for r in rows:
        print(
            f"  {r['name']:<50} {r['median']:8.2f} {r['min']:8.2f} {r['max']:8.2f} "
            f"{r['median'] - empty:12.2f}"
        )
    result["per_test"] = rows
    result["empty_us"] = empty
    print()
    print(f"target: plugin work per test <= {args.target_us:.0f} us")
    verdicts = {}
    for name, v in (("no client", real_none), ("zmq client", real_zmq)):
        if v is None:
            continue
        own = v - empty
        ok = own <= args.target_us
        verdicts[name] = {"us": own, "ok": ok}
        print(f"  {name:<12} {own:7.2f} us  {'OK' if ok else 'MISSED'}")
    result["verdicts"] = verdicts
    if real_none is not None and LIMITS_NONE in by_name:
        # A run where no test has a limit unregisters the check: nothing per test. Where some
        # test has one, a test without pays for one more logreport call per phase.
        # Through pluggy is the figure that counts (the hook's call is most of it); the hook
        # alone and the difference of two Measurer runs (noisier) are there to compare.
        alone = by_name[LIMITS_ALONE]  # the bare loop included: an upper bound
        cost = by_name[LIMITS_NONE] - real_none
        five = by_name[LIMITS_FIVE] - real_none
        via = pc["per_test_us"]
        ok = via <= 3.0
        print(
            f"  limits, a test without a limit: {via:5.2f} us through pluggy (target <= 3 us: "
            f"{'OK' if ok else 'MISSED'}), {alone:5.2f} us the hook alone, {cost:5.2f} us as a "
            f"difference of Measurer runs; {five:5.2f} us with 5 limits checked; 0 when no "
            "test has a limit (the check unregisters itself)"
        )
        result["limits"] = {
            "no_limit_pluggy_us": via,
            "no_limit_hook_us": alone,
            "no_limit_diff_us": cost,
            "five_limits_us": five,
            "ok": ok,
        }
    if sink is not None:
        result["sink_frames"] = sink.frames
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
        print(f"\nJSON written to {args.json}")
    return 0


def drive_zmq(m: Any, client: Any) -> Callable[[int], None]:
    base = drive(m)

    def run(n: int) -> None:
        base(n)
        client.frames.clear()  # kept for a fallback report; not what is measured here

    return run


if __name__ == "__main__":
    sys.exit(main())
