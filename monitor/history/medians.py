"""``python -m pytest_perfmon.monitor.history.medians URL RUNS``: each test's medians over the
newest RUNS runs of this machine, as JSON on stdout.

For ``--perf-limit-history``: the pytest process never imports the database layer, so it runs
this module as a short-lived child process (bounded) and reads its answer. Output:
``{"runs": n, "tests": {nodeid: {metric: [median, samples]}}}`` with the metrics ``duration``,
``call``, ``peak_mb`` and ``delta_mb`` of passed results (a run where the test was executed
more than once, reruns included, is stored ``"passed x3"`` and left out: its figures are sums).
A store that does not exist yet is an empty history, not an error. Any other problem: one line
on stderr, exit 2.

The times are judged without the time each test waited for a CPU (its stored noise
certificate: ``vocabulary.without_wait``), so that a contended run does not raise the limit;
``--noise=off`` after RUNS: as measured.
"""

from __future__ import annotations

import os
import statistics
import sys
from typing import Optional

from ..vocabulary import HISTORY_LIMITS

#: limit metric -> the history store's results column
METRICS = HISTORY_LIMITS


def medians(url: str, runs: int, noise: bool = True) -> dict:
    """The medians of this machine's newest ``runs`` runs in the store at ``url`` (``noise``:
    of the times without the wait)."""
    from . import context, store
    from .url import normalize

    url = normalize(url)
    if url.startswith("sqlite:///") and not os.path.exists(url[len("sqlite:///") :]):
        return {"runs": 0, "tests": {}}
    import sqlalchemy as sa

    eng = store.open_store(url, create=False)
    try:
        fp = context.fingerprint(context.machine(None))
        with eng.connect() as conn:
            q = sa.select(store.machines.c.id).where(store.machines.c.fingerprint == fp)
            machine_id = conn.execute(q).scalar()
        if machine_id is None:
            return {"runs": 0, "tests": {}}
        run_rows, series = store.window(eng, machine_id, runs, METRICS.values(), noise=noise)
    finally:
        eng.dispose()
    tests: dict = {}
    for nodeid, per in series.items():
        entry = {}
        for metric, column in METRICS.items():
            values = [v for _, v in per[column]]
            if values:
                entry[metric] = [statistics.median(values), len(values)]
        if entry:
            tests[nodeid] = entry
    return {"runs": len(run_rows), "tests": tests}


#: The last argument that asks for the medians as measured.
NOISE_OFF = "--noise=off"


def main(argv: Optional[list] = None) -> int:
    from .schedule_inputs import child_main

    args = list(sys.argv[1:] if argv is None else argv)
    noise = not (args and args[-1] == NOISE_OFF)
    if not noise:
        args.pop()
    return child_main("medians", lambda url, runs: medians(url, runs, noise), args)


if __name__ == "__main__":
    sys.exit(main())
