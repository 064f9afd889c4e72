"""Prometheus metrics of the daemon, served from its last status snapshot (never live state)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Callable

from ..command import printable
from .common import MB, DaemonError


class Metrics:
    """A prometheus_client collector over ``snapshot()``, the daemon's latest status dict."""

    def __init__(self, snapshot: Callable[[], dict]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        st = self.snapshot()
        if not st:
            return
        g = GaugeMetricFamily(
            "perfmon_sessions", "pytest sessions known to the daemon", labels=["state"]
        )
        for k, v in st["sessions_by_state"].items():
            g.add_metric([k], v)
        yield g
        for name, text, key in (
            ("perfmon_tests_completed", "test records received", "tests"),
            ("perfmon_records_rejected", "test records rejected", "records_rejected"),
            (
                "perfmon_records_dropped",
                "test records the plugins reported lost",
                "records_dropped",
            ),
            ("perfmon_hello_refused", "hellos refused (pid not ours)", "hello_refused"),
        ):
            yield CounterMetricFamily(name, text, value=st[key])
        c = CounterMetricFamily(
            "perfmon_protocol_errors", "bad messages by error name", labels=["error"]
        )
        for k, v in st["protocol_errors"].items():
            c.add_metric([k], v)
        yield c
        rss = st["daemon"]["rss_mb"]
        if rss is not None:
            yield GaugeMetricFamily(
                "perfmon_daemon_rss_bytes", "the daemon's own RSS", value=rss * MB
            )
        yield from _per_session(st, GaugeMetricFamily)


def _per_session(st: dict, gauge: Any) -> Iterable[Any]:
    tests = gauge("perfmon_session_tests", "tests per session", labels=["session", "state"])
    wt = gauge("perfmon_worker_tests", "tests completed per worker", labels=["session", "worker"])
    wr = gauge("perfmon_worker_rss_bytes", "sampled RSS per worker", labels=["session", "worker"])
    wi = gauge(
        "perfmon_worker_in_test_seconds",
        "approximate: seconds since the worker's last completed test was received",
        labels=["session", "worker"],
    )
    for s in st["sessions"].values():
        label = printable(s["label"])  # (a label or worker id that is not UTF-8: escaped)
        tests.add_metric([label, s["state"]], s["tests"])
        if s["state"] != "running":
            continue
        for wid, w in s["workers"].items():
            wid = printable(wid)
            wt.add_metric([label, wid], w["tests"])
            if w["rss_mb"] is not None:
                wr.add_metric([label, wid], w["rss_mb"] * MB)
            if w["in_test_for"] is not None:
                wi.add_metric([label, wid], w["in_test_for"])
    yield tests
    yield wt
    yield wr
    yield wi


def serve(snapshot: Callable[[], dict], host: str, port: int) -> tuple[Any, str]:
    """Start the /metrics HTTP server in a thread: (the server, its URL)."""
    try:
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError:
        raise DaemonError(
            "--metrics-port needs prometheus-client: pip install 'pytest-perfmon[daemon]'"
        ) from None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Metrics(snapshot))
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise DaemonError(f"--metrics-port: cannot listen on {host}:{port}: {exc}") from None
    shown = f"[{host}]" if ":" in host else host
    return server, f"http://{shown}:{server.server_port}/metrics"
