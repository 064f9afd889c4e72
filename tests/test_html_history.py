"""perfmon html --db: the History section (per-test trends with change points, the suite's
duration per commit). A real SQLite store is filled by `perfmon history import`; the page is
written in-process and drawn in headless Chromium (conftest.py's browser fixture)."""

from __future__ import annotations

import builtins
import json
import os
import random

import pytest
from helpers import need_history  # noqa: E402
from pytest_perfmon.monitor import cli
from pytest_perfmon.monitor.html import write_html
from pytest_perfmon.monitor.report import iso

need_history(allow_module_level=True)

from helpers import INK, SCREENSHOTS, T0, page_json, synthetic_report  # noqa: E402

RUNS = 12
STEP_AT = 6  # runs 6.. are 50 % slower in STEP_TEST
N_TESTS = 30
COMMITS = [f"{i:02x}" + "c0ffee" * 6 for i in range(RUNS)]


def _report(run: int) -> dict:
    rep = synthetic_report(N_TESTS, workers=2, seed=7)
    rnd = random.Random(run)
    for t in rep["tests"].values():  # a little noise, the same outcome every run
        t["outcome"] = "passed"
        t["duration"] = round(t["duration"] * (1 + rnd.uniform(-0.02, 0.02)), 6)
    step = rep["tests"][STEP_TEST]
    step["duration"] = round((0.15 if run >= STEP_AT else 0.10) * (1 + rnd.uniform(-0.01, 0.01)), 6)
    rep["session"]["timestamp"] = iso(T0 + 3600 * run)
    rep["session"]["duration"] = round(rep["session"]["duration"] + 0.01 * run, 6)
    return rep


STEP_TEST = sorted(synthetic_report(N_TESTS, workers=2, seed=7)["tests"])[3]


@pytest.fixture(scope="module")
def store_and_report(tmp_path_factory):
    """A store of RUNS imported runs (runs 10 and 11 on one commit), and the newest report."""
    d = tmp_path_factory.mktemp("hist")
    db = str(d / "h.sqlite")
    for run in range(RUNS):
        path = str(d / f"r{run}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(_report(run), f)
        commit = COMMITS[min(run, RUNS - 2)]
        args = ["history", "import", "--db", db, path, "--label", f"commit={commit}"]
        assert cli.main(args) == 0
    return db, path


def _html(args, capsys):
    code = cli.main(["html", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_html_db_builds_the_history_data(store_and_report, tmp_path, capsys):
    db, report = store_and_report
    out_path = str(tmp_path / "p.html")
    code, out, err = _html([report, "--db", db, "-o", out_path], capsys)
    assert (code, err) == (0, "")
    with open(out_path, encoding="utf-8") as f:
        hist = page_json(f.read())["history"]
    assert len(hist["runs"]) == RUNS and hist["own_machine"] is True
    assert [r["commit"] for r in hist["runs"]] == [COMMITS[min(i, RUNS - 2)] for i in range(RUNS)]
    # the suite per commit: one point per commit, two runs on the last one
    assert [g["commit"] for g in hist["suite"]] == COMMITS[: RUNS - 1]
    assert [g["runs"] for g in hist["suite"]] == [1] * (RUNS - 2) + [2]
    # drawn: the 20 slowest and every changed test; the stepped one has exactly its change
    assert hist["with_history"] == N_TESTS and hist["max_tests"] == 20
    drawn = {t["test"]: t for t in hist["tests"]}
    assert STEP_TEST in drawn and drawn[STEP_TEST]["changed"] is True
    (change,) = drawn[STEP_TEST]["metrics"]["duration"]["changes"]
    assert change["run"] == STEP_AT and change["kind"] == "regression"
    assert change["change_percent"] == pytest.approx(50, abs=3)
    assert change["p_value"] <= 0.01
    assert hist["changed"] == 1  # the noise (+-2 %) is under the 10 % gate: no other change
    assert len(drawn) == 20 + (0 if drawn[STEP_TEST]["slowest"] else 1)
    series = drawn[STEP_TEST]["metrics"]["duration"]
    assert series["x"] == list(range(RUNS)) and len(series["y"]) == RUNS
    assert "peak_mb" in drawn[STEP_TEST]["metrics"]
    # CPU time is drawn too (check watches it): the same step, the synthetic CPU share fixed
    (cpu_change,) = drawn[STEP_TEST]["metrics"]["cpu_time"]["changes"]
    assert cpu_change["run"] == STEP_AT and cpu_change["kind"] == "regression"


def test_same_change_as_history_check(store_and_report, tmp_path, capsys):
    """The page marks what `perfmon history check` reports by default (the same metrics, gates
    and seed)."""
    db, report = store_and_report
    args = ["history", "check", "--db", db, "--recent", str(RUNS), "--format", "json"]
    assert cli.main(args) == 1
    result = json.loads(capsys.readouterr().out)
    assert [(c["test"], c["metric"], c["commit"]) for c in result["changes"]] == [
        (STEP_TEST, "duration", COMMITS[STEP_AT]),
        (STEP_TEST, "cpu_time", COMMITS[STEP_AT]),
    ]
    out_path = str(tmp_path / "p.html")
    assert _html([report, "--db", db, "-o", out_path], capsys)[0] == 0
    with open(out_path, encoding="utf-8") as f:
        hist = page_json(f.read())["history"]
    marked = [
        (t["test"], m, hist["runs"][c["run"]]["commit"])
        for t in hist["tests"]
        for m, series in t["metrics"].items()
        for c in series["changes"]
    ]
    assert sorted(marked) == sorted(
        (c["test"], c["metric"], c["commit"]) for c in result["changes"]
    )


def test_empty_store_says_so(tmp_path, capsys):
    db = str(tmp_path / "empty.sqlite")
    from pytest_perfmon.monitor.history import store

    store.open_store(db).dispose()  # an empty, initialised store
    src = str(tmp_path / "r.json")
    with open(src, "w", encoding="utf-8") as f:
        json.dump(synthetic_report(5), f)
    out_path = str(tmp_path / "p.html")
    assert _html([src, "--db", db, "-o", out_path], capsys)[0] == 0
    with open(out_path, encoding="utf-8") as f:
        hist = page_json(f.read())["history"]
    assert hist["runs"] == [] and hist["tests"] == [] and hist["suite"] == []


@pytest.mark.parametrize(
    "db, message",
    [
        ("missing.sqlite", "does not exist"),
        ("mysql://u@h/db", "mysql"),
    ],
)
def test_bad_url_is_one_line(tmp_path, capsys, db, message):
    src = str(tmp_path / "r.json")
    with open(src, "w", encoding="utf-8") as f:
        json.dump(synthetic_report(3), f)
    if db.endswith(".sqlite"):
        db = str(tmp_path / db)
    code, out, err = _html([src, "--db", db, "-o", str(tmp_path / "p.html")], capsys)
    assert (code, out) == (2, "") and err.count("\n") == 1 and message in err
    assert not os.path.exists(tmp_path / "p.html")


def test_without_the_history_extra(tmp_path, capsys, monkeypatch):
    real_import = builtins.__import__

    def no_sqlalchemy(name, *a, **k):
        if name == "sqlalchemy" or name.startswith("sqlalchemy."):
            raise ImportError(f"No module named {name!r}", name=name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_sqlalchemy)
    src = str(tmp_path / "r.json")
    with open(src, "w", encoding="utf-8") as f:
        json.dump(synthetic_report(3), f)
    code, out, err = _html(
        [src, "--db", str(tmp_path / "x.sqlite"), "-o", str(tmp_path / "p.html")], capsys
    )
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert "sqlalchemy" in err and "pytest-perfmon[history]" in err


def test_history_must_be_a_dict(tmp_path):
    with pytest.raises(TypeError):
        write_html(synthetic_report(3), str(tmp_path / "p.html"), history=object())
    assert not os.listdir(tmp_path)


def test_page_draws_the_history(browser, store_and_report, tmp_path, capsys):  # noqa: F811
    db, report = store_and_report
    path = str(tmp_path / "perf.html")
    assert _html([report, "--db", db, "-o", path], capsys)[0] == 0
    with open(path, encoding="utf-8") as f:
        drawn = len(page_json(f.read())["history"]["tests"])
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = ctx.new_page()
        page.set_default_timeout(15_000)
        errors: list = []
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto("file://" + path)
        page.wait_for_selector("body[data-ready='1']")
        assert errors == []
        assert page.is_visible("#history-panel")
        n_trends = page.eval_on_selector_all("#trends .trend", "t => t.length")
        assert n_trends == drawn
        assert page.evaluate("window.perfmon.historyCharts()") == n_trends + 1
        width, height, inked = page.evaluate(INK, "#suite-chart canvas")
        assert width > 100 and height > 50 and inked > 300
        width, height, inked = page.evaluate(INK, "#trends .trend canvas")
        assert width > 100 and height > 50 and inked > 300
        # the stepped test's box: a badge and the change written out under its chart
        box = page.locator("#trends .trend", has_text=STEP_TEST)
        assert box.locator(".badge").text_content() == "2 change points"  # duration, CPU time
        text = box.locator(".changes").text_content() or ""
        assert "duration +" in text and "regression at " + COMMITS[STEP_AT][:8] in text
        assert "cpu_time +" in text
        caption = page.text_content("#trends-caption") or ""
        assert "every test with a detected change point (1)" in caption and "20 slowest" in caption
        if SCREENSHOTS:
            panel = page.locator("#history-panel").bounding_box()
            assert panel is not None
            page.screenshot(
                path=os.path.join(SCREENSHOTS, "html-history.png"),
                full_page=True,
                clip={**panel, "height": min(panel["height"], 1150)},
            )
    finally:
        ctx.close()


# The page of an empty store in Chromium: tests/test_html.py's
# test_page_with_an_empty_history_store (it needs no store), in the page that module has open
# already: this module's one test in Chromium is the one above, so one Chromium at most runs for
# it whichever xdist workers run this module's tests.
