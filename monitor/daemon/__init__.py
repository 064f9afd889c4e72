"""perfmon-daemon: one long-running monitor that many pytest sessions report into.

    perfmon-daemon --endpoint ENDPOINT --output combined.json      # runs in the foreground
    pytest --perf-monitor --perf-daemon ENDPOINT                     # or PERFMON_DAEMON=ENDPOINT
    perfmon-daemon status --endpoint ENDPOINT                       # live view
    perfmon-daemon stop --endpoint ENDPOINT                         # or SIGTERM / SIGINT
    perfmon-daemon rebuild --journal combined.json.journal --output combined.json

Sessions are keyed by the ``session`` id of their hello (an xdist controller and its workers
share one). Every accepted message is appended to the journal (pytest_perfmon.monitor.journal)
before it is applied, so the combined report can be rebuilt after the daemon dies. A finished
session's records are dropped from memory once its own report is written: the combined report
reads them back from the journal, one session at a time, so the daemon's memory does not grow
with the suite.

Modules, each with one set of dependencies:

- ``session``: one session's state, its replay from the journal, its own report;
- ``combined``: the combined report, written streaming;
- ``book``: the daemon's sessions, journaling, sampling, closing (psutil through ``sampler``);
- ``core``: the ROUTER server and its message handlers (zmq);
- ``status`` and ``metrics``: the live view, as text and as Prometheus metrics;
- ``client``: one request to a running daemon; ``curve``: CURVE keys for both sides;
- ``rebuild``: reports from a journal;
- ``cli``: the command line.
"""

from .cli import main
from .client import request
from .common import DaemonError, NoDaemon

__all__ = ["main", "request", "DaemonError", "NoDaemon"]
