"""``python -m pytest_perfmon.monitor.history.schedule_inputs URL RUNS``: what
``--perf-schedule`` plans from, as JSON on stdout.

The pytest process never imports the database layer, so the xdist controller runs this module
as a short-lived child process (bounded) and reads its answer. The runs are the newest RUNS of
this machine; when the store has none of this machine, those of the machine of its newest run
(relative durations carry over; ``"this_machine": false`` says so). Output::

    {"runs": n, "this_machine": true, "baseline_mb": 31.5,
     "tests": {nodeid: [median duration s, median peak MB or null]}}

``"run_stats"``: per run read [workers, session s, busiest worker's test time s]. A store
that does not exist yet, or holds no runs, gives ``"runs": 0``. Any other problem: one
line on stderr, exit 2.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable, Optional


def plan_data(url: str, runs: int, pick: Optional[Callable] = None) -> dict:
    """Per test its median duration and peak over the newest ``runs`` runs, a worker's
    baseline RSS (see :mod:`..predict`) and per run [workers, duration, busiest worker's test
    time]. ``pick(eng, store)`` -> (machine id or None for all, this machine?, run ids to
    leave out); default: this machine's runs, else the newest run's machine's."""
    from .. import predict as prediction
    from . import store
    from .predict_command import load
    from .url import normalize

    empty: dict[str, Any] = {"runs": 0, "this_machine": True, "baseline_mb": None, "tests": {}}
    url = normalize(url)
    if url.startswith("sqlite:///") and not os.path.exists(url[len("sqlite:///") :]):
        return empty
    eng = store.open_store(url, create=False)
    try:
        machine, local, exclude = (pick or _this_machine)(eng, store)
        if machine is None and pick is None:
            return empty
        try:
            _, series, stats = load(eng, store, (), runs, machine, exclude)
        except store.HistoryError:
            return empty
    finally:
        eng.dispose()
    tests = {}
    for nodeid, s in series.items():
        durs = [d for d in s["duration"] if d is not None]
        if not durs:
            continue
        peaks = [p for p in s["peak_mb"] if p is not None]
        tests[nodeid] = [prediction.median(durs), prediction.median(peaks) if peaks else None]
    return {
        "runs": len(stats),
        "this_machine": local,
        "baseline_mb": prediction.baseline_mb(stats) if stats else None,
        "tests": tests,
        "run_stats": [[r.workers, r.duration, r.busy_max] for r in stats],
    }


def _this_machine(eng: Any, store: Any) -> tuple:
    from .predict_command import _machine

    return (*_machine(eng, store), ())


def child_main(module: str, answer: Callable[[str, int], dict], argv: Optional[list]) -> int:
    """``python -m MODULE URL RUNS`` for the plugin's child processes: ``answer(url, runs)`` as
    JSON on stdout, or one line on stderr and exit 2 (never a traceback)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or not args[1].isdigit() or int(args[1]) < 1:
        print(f"usage: python -m pytest_perfmon.monitor.history.{module} URL RUNS", file=sys.stderr)
        return 2
    try:
        out = answer(args[0], int(args[1]))
    except Exception as exc:  # one line for the plugin's warning, never a traceback
        from .store import HistoryError
        from .url import redact

        text = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
        if not isinstance(exc, HistoryError):  # that one names the store already
            text = f"history store {redact(args[0])}: {type(exc).__name__}: {text}"
        print(text, file=sys.stderr)
        return 2
    json.dump(out, sys.stdout)
    return 0


def main(argv: Optional[list] = None) -> int:
    return child_main("schedule_inputs", plan_data, argv)


if __name__ == "__main__":
    sys.exit(main())
