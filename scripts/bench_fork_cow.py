#!/usr/bin/env python
"""What a live forked child costs its parent (issue 25: why the monitor is forked only from a
pytest process of at most FORK_MAX_RSS resident; see also bench_fork_gc.py).

A heap of about MB megabytes of small strings; each round touches every object twice (the
refcount writes of a loop over them), alternately with no child and with a child forked just
before that sleeps (sharing every page), and prints the fork's time and the touch's.

    python scripts/bench_fork_cow.py MB

Linux (``/proc/self/statm``). A benchmark, not a test.
"""

from __future__ import annotations

import os
import sys
import time


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> int:
    mb = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    objs = [str(i) * 10 for i in range(mb * 1024 * 1024 // 70)]

    def touch() -> float:
        t = time.perf_counter()
        for _ in range(2):
            for _o in objs:
                pass
        return (time.perf_counter() - t) * 1000

    for mode in ("none", "child") * 3:
        pid = 0
        t0 = time.perf_counter()
        if mode == "child":
            pid = os.fork()
            if pid == 0:
                time.sleep(30)
                os._exit(0)
        forked = (time.perf_counter() - t0) * 1000
        touched = touch()
        if pid:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        print(f"rss {rss_mb():.0f} MB {mode:5} fork {forked:.1f} ms touch {touched:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
