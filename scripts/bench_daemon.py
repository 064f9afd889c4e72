"""Benchmark: 100,000 test records through one real perfmon-daemon process.

Feeds the real protocol (DEALER -> ROUTER, msgpack batches of 128 records, as the plugin sends
them) from fake sessions whose pid is this process's, then stops the daemon. Measures the
daemon's RSS (psutil) before, at its peak while fed, after every session finished, and the time
to write each session's own report and the combined report.

    python scripts/bench_daemon.py                       # 100,000 tests, 4 sessions, both modes
    python scripts/bench_daemon.py --tests 20000 --mode sequential

"concurrent": the sessions run at the same time (their records are all live in memory until
each finishes). "sequential": one after another (a finished session is dropped from memory).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid

import psutil
import zmq
from pytest_perfmon.monitor import protocol
from pytest_perfmon.monitor.daemon import DaemonError, request

BATCH = 128
MB = 1024 * 1024


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


class Fake:
    def __init__(self, endpoint: str, index: int, n: int) -> None:
        self.sid = uuid.uuid4().hex
        self.index = index
        self.n = n
        self.sent = 0
        self.seq = 0
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.sock.connect(endpoint)

    def ask(self, frame: bytes, want: str, timeout: float = 300.0) -> dict:
        self.sock.send(frame)
        if not self.sock.poll(timeout * 1000):
            raise SystemExit(f"no {want} from the daemon")
        kind, body = protocol.unpack(self.sock.recv())
        if kind != want:
            raise SystemExit(f"expected {want}, got {kind}: {body}")
        return body

    def hello(self) -> None:
        body = {"session": self.sid, "role": "local", "pid": os.getpid(), "worker": "main"}
        body["methods"] = {"rss": True, "peak": True}
        self.ask(protocol.pack(protocol.HELLO, body), protocol.READY)

    def batch(self) -> bool:
        if self.sent >= self.n:
            return False
        recs = []
        t = time.time()
        for i in range(self.sent, min(self.n, self.sent + BATCH)):
            nodeid = f"tests/pkg_{i // 1000}/test_mod_{i // 50}.py::test_case_{i}[param-{i % 7}]"
            recs.append(
                [nodeid.encode(), t, t + 0.002, 0.0001, 0.0015, 0.0001, "passed"]
                + [50 * MB + i, 51 * MB + i, 50 * MB + i, 0.0012, 0.0017, None]
            )
        self.sock.send(protocol.pack(protocol.BATCH, [self.seq, recs]))
        self.seq += 1
        self.sent += len(recs)
        return True

    def finish(self, directory: str) -> float:
        ack = self.ask(protocol.pack(protocol.BYE, {"sent": self.seq}), protocol.ACK)
        assert not ack["missing"], ack
        out = os.path.join(directory, f"session-{self.index}.json")
        t0 = time.perf_counter()
        body = {"session": self.sid, "start": time.time() - 1, "stop": time.time()}
        body.update(exit_status=0, pytest_version="bench", output=out, system_info=False)
        done = self.ask(protocol.pack(protocol.FINISH, body), protocol.DONE)
        assert done["ok"], done
        return time.perf_counter() - t0

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


def run(tests: int, sessions: int, mode: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="perfmon-bench-") as d:
        endpoint = f"ipc://{d}/d.sock"
        log_path = os.path.join(d, "daemon.log")
        cmd = [sys.executable, "-m", "pytest_perfmon.monitor.daemon", "--endpoint", endpoint]
        cmd += ["--output", os.path.join(d, "combined.json"), "--keep-journal"]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stderr=log, cwd=d)
        fakes: list = []
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    request(endpoint, protocol.STATUS, 1.0)
                    break
                except DaemonError:  # at once while the socket file does not exist yet
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise SystemExit("the daemon did not start") from None
                    time.sleep(0.02)
            r0 = rss(proc.pid)
            peak = r0
            per = tests // sessions
            fakes = [Fake(endpoint, i, per) for i in range(sessions)]
            finish_times = []
            t0 = time.perf_counter()
            groups = [fakes] if mode == "concurrent" else [[f] for f in fakes]
            for group in groups:
                for f in group:
                    f.hello()
                n = 0
                while any([f.batch() for f in group]):
                    n += 1
                    if n % 50 == 0:
                        peak = max(peak, rss(proc.pid))
                        time.sleep(0.01)  # paced a little, as real suites are
                for f in group:
                    peak = max(peak, rss(proc.pid))
                    finish_times.append(f.finish(d))
            feed = time.perf_counter() - t0
            after = rss(proc.pid)
            st = request(endpoint, protocol.STATUS, 30.0)
            assert st["tests"] == per * sessions, st["tests"]
            t1 = time.perf_counter()
            request(endpoint, protocol.STOP_KIND, 30.0)
            code = proc.wait(600)
            stop = time.perf_counter() - t1
            with open(log_path, encoding="utf-8") as f:
                text = f.read()
            m = re.search(r"written in ([0-9.]+) s", text)
            return {
                "tests": per * sessions,
                "sessions": sessions,
                "mode": mode,
                "exit": code,
                "feed_s": feed,
                "rss_start_mb": r0 / MB,
                "rss_peak_mb": peak / MB,
                "rss_after_finish_mb": after / MB,
                "finish_max_s": max(finish_times),
                "combined_s": float(m.group(1)) if m else None,
                "stop_s": stop,
                "combined_mb": os.path.getsize(os.path.join(d, "combined.json")) / MB,
                "journal_mb": os.path.getsize(os.path.join(d, "combined.json.journal")) / MB,
            }
        finally:
            for f in fakes:
                f.close()
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tests", type=int, default=100000)
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--mode", choices=["concurrent", "sequential", "both"], default="both")
    args = ap.parse_args()
    modes = ["concurrent", "sequential"] if args.mode == "both" else [args.mode]
    print(
        "| tests | sessions | mode | feed s | daemon RSS start / peak / after finish MB "
        "| slowest session report s | combined report s | stop->exit s | combined MB "
        "| journal MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for mode in modes:
        r = run(args.tests, args.sessions, mode)
        print(
            f"| {r['tests']:,} | {r['sessions']} | {mode} | {r['feed_s']:.1f} "
            f"| {r['rss_start_mb']:.0f} / {r['rss_peak_mb']:.0f} / {r['rss_after_finish_mb']:.0f} "
            f"| {r['finish_max_s']:.2f} | {r['combined_s']} | {r['stop_s']:.1f} "
            f"| {r['combined_mb']:.1f} | {r['journal_mb']:.1f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
