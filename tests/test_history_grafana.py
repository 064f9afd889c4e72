"""The Grafana dashboards in docs/grafana: every panel's SQL against a filled store on a real
PostgreSQL, every metric the daemon's dashboard uses exported by the daemon."""

from __future__ import annotations

import json
import os
import re

from helpers import need_history

need_history(allow_module_level=True)  # the test extra installs the history extra

from helpers import fill_history, hello, record  # noqa: E402
from pytest_perfmon.monitor import protocol  # noqa: E402
from pytest_perfmon.monitor.history import store  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

# --------------------------------------------------------------------------- Grafana

GRAFANA = os.path.join(HERE, "..", "docs", "grafana")


def _grafana(name: str) -> dict:
    with open(os.path.join(GRAFANA, name), encoding="utf-8") as f:
        return json.load(f)


def _sql_literal(v: str) -> str:
    return "'" + v.replace("'", "''") + "'"


def _expand(sql: str, variables: dict) -> str:
    """Grafana's macros and variables as the PostgreSQL data source expands them."""
    sql = re.sub(
        r"\$__timeFilter\(([^)]+)\)",
        r"\1 BETWEEN '1970-01-01T00:00:00Z' AND '2100-01-01T00:00:00Z'",
        sql,
    )
    for name, values in variables.items():
        sql = sql.replace(f"${{{name}:sqlstring}}", ",".join(_sql_literal(v) for v in values))
    assert "$" not in sql, sql
    return sql


def test_grafana_history_panels_run_on_the_real_schema(pg):
    """Every panel's SQL and every variable's query, against a filled PostgreSQL store."""
    url = pg.new_db()
    fill_history(url, 6)
    dash = _grafana("perfmon-history-postgresql.json")
    eng = store.engine(url)
    try:
        with eng.connect() as c:
            var_values = {}
            for var in dash["templating"]["list"]:
                rows = c.exec_driver_sql(var["query"]).all()
                assert rows, var["name"]
                var_values[var["name"]] = [r[0] for r in rows]
            variables = {"machine": var_values["machine"], "test": ["t.py::test_b"]}
            targets = [t for p in dash["panels"] for t in p["targets"]]
            assert len(targets) >= 6
            for t in targets:
                result = c.exec_driver_sql(_expand(t["rawSql"], variables))
                cols, rows = list(result.keys()), result.all()
                assert rows, t["rawSql"]
                if t["format"] == "time_series":
                    assert cols[0] == "time" and len(cols) >= 2
    finally:
        eng.dispose()
    titles = " ".join(p["title"] for p in dash["panels"])
    for what in ("Per-test trend", "Slowest tests over time", "Suite duration per commit"):
        assert what in titles


def test_grafana_daemon_panels_use_metrics_the_daemon_exports(inprocess_daemon, tmp_path):
    from prometheus_client import CollectorRegistry, generate_latest
    from pytest_perfmon.monitor.daemon.metrics import Metrics

    srv = inprocess_daemon
    srv.send(b"w", protocol.HELLO, hello(role="worker", worker="gw0"))
    srv.send(b"w", protocol.BATCH, [0, [record(b"t.py::test_x")]])
    srv.send(
        b"w", protocol.BYE, "not a map"
    )  # one protocol error, so that its counter has a sample
    srv.srv.book.sample()
    srv.srv.housekeeping()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Metrics(lambda: srv.srv.snapshot))
    exported = {
        line.split("{")[0].split(" ")[0]
        for line in generate_latest(registry).decode().splitlines()
        if line and not line.startswith("#")
    }
    dash = _grafana("perfmon-daemon-prometheus.json")
    used = set()
    for p in dash["panels"]:
        for t in p["targets"]:
            used.update(re.findall(r"perfmon_[a-z_]+", t["expr"]))
    for var in dash["templating"]["list"]:
        used.update(re.findall(r"perfmon_[a-z_]+", var["query"]))
    assert len(used) >= 8
    assert used <= exported, used - exported
