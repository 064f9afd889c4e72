"""The compatibility matrix (issue 20): real installs of the pytest plugins users combine with
ours (pinned in pyproject.toml's test extra), unittest and doctest items, and every way
pytest-xdist distributes or a run stops early; each without xdist and with two workers.

One pytest run per case (pytest's own kinds of items share one: PYTEST_OWN), on a small
generated suite whose conftest.py writes down pytest's own view of the run (its terminal
reporter's stats and exit code, in the xdist controller too). Against it, for each case:

- the exit code is the one the suite was designed for, and pytest's own;
- every test pytest executed is in the report exactly once (keyed by its node id), with
  pytest's outcome (its final attempt's, the most severe of its phases; "failed" when a
  subtest failed), its subtests counted, and its executions listed when it ran more than once;
- its setup, call and teardown times add up to its duration (and, with executions, the
  executions' own do, and the entry's are their sums).
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
from helpers import inner_addopts, need_installed, validate

PYTEST_MAJOR = int(pytest.__version__.split(".")[0])

#: rounding: the report keeps 6 decimals of each time
ROUNDING = 2e-6

#: pytest's outcomes from the least to the most severe (the report's rule for a test with
#: several executions, and for one whose call passed and whose teardown failed)
SEVERITY = ["skipped", "xfailed", "passed", "xpassed", "failed", "error", "crashed", "interrupted"]

#: the conftest.py of every generated suite: pytest's view of the run, from the process that
#: prints the summary (without xdist, or the xdist controller)
STATS_CONFTEST = """
import json


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if hasattr(config, "workerinput"):
        return
    stats = {}
    for category, reports in terminalreporter.stats.items():
        stats[category] = [
            [
                r.nodeid,
                r.when,
                r.outcome,
                type(r).__name__ in ("SubtestReport", "SubTestReport") or hasattr(r, "context"),
            ]
            for r in reports
            if getattr(r, "when", None) not in (None, "collect")  # test reports only
        ]
    path = config.rootpath / "pytest-stats.json"
    path.write_text(json.dumps({"exitstatus": int(exitstatus), "stats": stats}))
"""


# --------------------------------------------------------------------------- the suites

RERUN_SUITE = """
import pathlib

HERE = pathlib.Path(__file__).parent


def attempt(name):
    path = HERE / (name + ".attempts")
    n = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(n))
    return n


def test_passes():
    pass


def test_flaky():
    assert attempt("flaky") == 3  # fails twice, passes at the second rerun


def test_always_fails():
    assert False
"""

REPEAT_SUITE = """
import pytest


def test_passes():
    pass


@pytest.mark.parametrize("x", [1, 2])
def test_param(x):
    pass


def test_fails():
    assert False
"""

TIMEOUT_SUITE = """
import time


def test_1_fast():
    pass


def test_2_hangs():
    time.sleep(30)


def test_3_after():
    pass
"""

ASYNCIO_SUITE = """
import asyncio

import pytest


@pytest.fixture
async def resource():
    await asyncio.sleep(0)
    yield 1
    await asyncio.sleep(0)


async def test_async_fixture(resource):
    assert resource == 1


async def test_gather():
    assert await asyncio.gather(asyncio.sleep(0, 1), asyncio.sleep(0, 2)) == [1, 2]


async def test_fails():
    await asyncio.sleep(0)
    assert False


def test_sync():
    pass
"""

RANDOMLY_SUITE = """
import random


def test_a():
    assert 0 <= random.random() < 1


def test_b():
    pass


def test_c():
    pass


def test_d():
    pass


def test_fails():
    assert False
"""

COV_MODULE = """
def double(x):
    return 2 * x


def unused():
    return 0
"""

COV_SUITE = """
import covered


def test_double():
    assert covered.double(2) == 4


def test_again():
    assert covered.double(0) == 0


def test_fails():
    assert covered.double(1) == 3
"""

BENCHMARK_SUITE = """
def test_bench(benchmark):
    assert benchmark(sum, range(100)) == 4950


def test_pedantic(benchmark):
    benchmark.pedantic(sorted, args=([3, 1, 2],), rounds=3, iterations=2)


def test_plain():
    pass
"""

HYPOTHESIS_SUITE = """
from hypothesis import given, settings, strategies as st

FAST = settings(max_examples=20, database=None, deadline=None, derandomize=True)


@FAST
@given(st.integers())
def test_holds(x):
    assert isinstance(x, int)


@FAST
@given(st.integers(0, 1000))
def test_counterexample(x):
    assert x < 10


def test_plain():
    pass
"""

#: {module}: where the subtests fixture in use comes from (a test checks it)
SUBTESTS_SUITE = """
import pytest


def test_right_plugin(subtests):
    assert type(subtests).__module__.startswith({module!r}), type(subtests)


def test_mixed(subtests):
    for i in range(4):
        with subtests.test(i=i):
            if i == 2:
                pytest.skip("two")
            assert i != 3


def test_all_pass(subtests):
    for i in range(2):
        with subtests.test(i=i):
            pass
"""

UNITTEST_SUITE = """
import unittest


class TestCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.shared = 1

    def setUp(self):
        self.x = 1

    def tearDown(self):
        self.x = None

    def test_passes(self):
        self.assertEqual(self.x + self.shared, 2)

    def test_fails(self):
        self.assertEqual(self.x, 2)

    @unittest.skip("because")
    def test_skipped(self):
        pass

    @unittest.expectedFailure
    def test_expected_failure(self):
        self.fail()

    def test_subtests(self):
        for i in range(3):
            with self.subTest(i=i):
                self.assertNotEqual(i, 1)
"""

DOCTEST_MODULE = '''
def double(x):
    """
    >>> double(2)
    4
    """
    return 2 * x


def wrong(x):
    """
    >>> wrong(2)
    5
    """
    return x
'''

DOCTEST_TEXT = """
>>> 1 + 1
2
"""

#: -x / --maxfail: failures at the 2nd, 4th and 5th test
STOP_SUITE = """
def test_1():
    pass


def test_2():
    assert False


def test_3():
    pass


def test_4():
    assert False


def test_5():
    assert False


def test_6():
    pass
"""

#: every outcome, in two files, with a class and an xdist_group: for the ways xdist runs
GENERAL_ONE = """
import pytest


@pytest.fixture
def broken_setup():
    raise RuntimeError("setup fails")


@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("teardown fails")


def test_passes():
    pass


def test_fails():
    assert False


def test_setup_error(broken_setup):
    pass


def test_teardown_error(broken_teardown):
    pass


@pytest.mark.skip(reason="no")
def test_skipped():
    pass


@pytest.mark.xfail(reason="known")
def test_xfail():
    assert False


@pytest.mark.xfail(reason="fixed since")
def test_xpass():
    pass
"""

GENERAL_TWO = """
import pytest


class TestClass:
    def test_a(self):
        pass

    def test_b(self):
        pass


@pytest.mark.xdist_group("g")
def test_g1():
    pass


@pytest.mark.xdist_group("g")
def test_g2():
    pass
"""

GENERAL = {"test_one": GENERAL_ONE, "test_two": GENERAL_TWO}

DUPLICATE_SUITE = """
def test_a():
    pass


def test_b():
    pass


def test_fails():
    assert False
"""

#: pytest's own kinds of items, no plugin enabled, in one run (each was a case of its own, two
#: pytest runs, and a run costs about as much CPU as this whole suite): unittest TestCases,
#: doctests (in a module and a text file), the subtests fixture of pytest's built-in plugin
#: (pytest 9), and a file given twice with --keep-duplicates (each of its tests runs twice under
#: one node id). None changes how another is collected or run: --doctest-modules finds no
#: example in the other modules, --keep-duplicates repeats only the path given twice. Every
#: kind is checked as before (its outcomes, subtests, executions), each test against pytest's
#: own view of the run.
PYTEST_OWN = {
    "test_unit": UNITTEST_SUITE,
    "documented": DOCTEST_MODULE,
    "test_plain": "def test_plain():\n    pass\n",
    "doc.txt": DOCTEST_TEXT,
    "test_dup": DUPLICATE_SUITE,
    # pytest 9's built-in subtests (below 9 there is none: pytest-subtests has its own case)
    **(
        {"test_subtests": SUBTESTS_SUITE.format(module="_pytest.subtests")}
        if PYTEST_MAJOR >= 9
        else {}
    ),
}


# --------------------------------------------------------------------------- the cases


@dataclass
class Plugin:
    dist: str  # its name on PyPI
    module: str  # what it imports as
    entry_point: str  # the name pytest knows it by (-p no:NAME)
    python: tuple = (3, 9)  # the oldest Python its pinned release supports


PLUGINS = {
    "rerunfailures": Plugin(
        "pytest-rerunfailures", "pytest_rerunfailures", "rerunfailures", (3, 10)
    ),
    "repeat": Plugin("pytest-repeat", "pytest_repeat", "repeat"),
    "timeout": Plugin("pytest-timeout", "pytest_timeout", "timeout"),
    "asyncio": Plugin("pytest-asyncio", "pytest_asyncio", "asyncio", (3, 10)),
    "randomly": Plugin("pytest-randomly", "pytest_randomly", "randomly", (3, 11)),
    "cov": Plugin("pytest-cov", "pytest_cov", "pytest_cov"),
    "benchmark": Plugin("pytest-benchmark", "pytest_benchmark", "benchmark", (3, 10)),
    "hypothesis": Plugin("hypothesis", "hypothesis", "hypothesispytest"),
    "subtests": Plugin("pytest-subtests", "pytest_subtests", "subtests"),
}


@dataclass
class Case:
    files: dict  # module name (or file name with a suffix) -> source
    args: list = field(default_factory=list)
    exit: int | dict = 1  # the exit code the suite is designed for (or one per variant)
    plugin: str | None = None  # the key in PLUGINS of the plugin under test
    xdist: tuple = ("serial", "n2")  # the variants it runs in
    #: node id suffix -> the outcome the suite's design gives it (checked against pytest's view,
    #: which is what the report is compared with)
    expect: dict = field(default_factory=dict)
    #: text the run's output must hold (the plugin under test did its part)
    output: str | None = None
    min_pytest: int = 0
    sigalrm: bool = False  # needs signal.SIGALRM (POSIX)


def _subtests_case(module: str, **kw) -> Case:
    return Case(
        {"test_subtests": SUBTESTS_SUITE.format(module=module)},
        expect={"::test_right_plugin": "passed", "::test_mixed": "failed"},
        **kw,
    )


CASES = {
    "rerunfailures": Case(
        {"test_rerun": RERUN_SUITE},
        ["--reruns", "2"],
        plugin="rerunfailures",
        expect={"::test_flaky": "passed", "::test_always_fails": "failed"},
    ),
    "repeat": Case(
        {"test_repeat": REPEAT_SUITE},
        ["--count", "2"],
        plugin="repeat",
        expect={"::test_passes[1-2]": "passed", "::test_fails[2-2]": "failed"},
    ),
    "timeout-signal": Case(
        {"test_timeout": TIMEOUT_SUITE},
        ["--timeout=1", "--timeout-method=signal"],
        plugin="timeout",
        sigalrm=True,
        expect={"::test_2_hangs": "failed", "::test_3_after": "passed"},
    ),
    # the thread method ends the process with os._exit(1): without xdist, pytest itself (the
    # test "interrupted", the tests after it never run, no summary); with xdist, the worker
    # (the test "crashed", as xdist reports it; the others run elsewhere). Checked apart below.
    "timeout-thread": Case(
        {"test_timeout": TIMEOUT_SUITE},
        ["--timeout=1", "--timeout-method=thread"],
        plugin="timeout",
        xdist=("n2",),
        expect={"::test_2_hangs": "crashed", "::test_3_after": "passed"},
    ),
    "asyncio": Case(
        {"test_async": ASYNCIO_SUITE},
        ["-o", "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=function"],
        plugin="asyncio",
        expect={"::test_async_fixture": "passed", "::test_fails": "failed"},
    ),
    "randomly": Case(
        {"test_random": RANDOMLY_SUITE},
        ["--randomly-seed=1234"],
        plugin="randomly",
        expect={"::test_a": "passed", "::test_fails": "failed"},
        output="randomly-seed=1234",
    ),
    "cov": Case(
        {"covered": COV_MODULE, "test_cov": COV_SUITE},
        ["--cov=covered", "--cov-report=term"],
        plugin="cov",
        expect={"::test_double": "passed", "::test_fails": "failed"},
        output="covered.py",
    ),
    "benchmark": Case(
        {"test_bench": BENCHMARK_SUITE},
        ["--benchmark-max-time=0.01", "--benchmark-min-rounds=2", "--benchmark-warmup=off"],
        exit=0,
        plugin="benchmark",
        expect={"::test_bench": "passed", "::test_pedantic": "passed"},
    ),
    "hypothesis": Case(
        {"test_hypo": HYPOTHESIS_SUITE},
        plugin="hypothesis",
        expect={"::test_holds": "passed", "::test_counterexample": "failed"},
    ),
    # pytest 9's built-in subtests plugin is registered as "subtests", the name of
    # pytest-subtests' entry point, which pytest then never loads: there it is named by module.
    "pytest-subtests": _subtests_case(
        "pytest_subtests",
        args=["-p", "pytest_subtests.plugin"] if PYTEST_MAJOR >= 9 else [],
        plugin="subtests",
    ),
    "pytest-own": Case(
        PYTEST_OWN,
        # "." collects every file once; test_dup.py, given again, is collected a second time
        ["--doctest-modules", "--doctest-glob=*.txt", "--keep-duplicates", ".", "test_dup.py"],
        expect={
            "::TestCase::test_passes": "passed",
            "::TestCase::test_fails": "failed",
            "::TestCase::test_skipped": "skipped",
            "::TestCase::test_expected_failure": "xfailed",
            "::TestCase::test_subtests": "failed",
            "::documented.double": "passed",
            "::documented.wrong": "failed",
            "doc.txt::doc.txt": "passed",
            "test_dup.py::test_a": "passed",
            "test_dup.py::test_fails": "failed",
            **(
                {"::test_right_plugin": "passed", "::test_mixed": "failed"}
                if PYTEST_MAJOR >= 9
                else {}
            ),
        },
    ),
    # stopped early, pytest exits 1; xdist's controller stops as interrupted: 2. (-x has no
    # case of its own: pytest defines it as --maxfail=1, store_const to the same dest, so
    # pytest, xdist's controller and this plugin see one option; and --maxfail=2 also has a
    # failure that does not stop the run before the one that does.)
    "maxfail": Case(
        {"test_stop": STOP_SUITE},
        ["--maxfail=2"],
        {"serial": 1, "n2": 2},
        expect={"::test_4": "failed"},
    ),
    "n0": Case(GENERAL, ["-n", "0"], xdist=("serial",)),
    "no-xdist": Case(GENERAL, ["-p", "no:xdist"], xdist=("serial",)),
    # more workers than the general suite has tests (11): some get none; two-digit ids. (It
    # was -n 16: every worker beyond the 12th only cost the run another process's start.)
    "n12": Case(GENERAL, ["-n", "12"], xdist=("n12",)),
    # --dist load is xdist's default: every n2 case above runs with it, and n12 runs the
    # general suite with it (its check_workers included), so it has no case of its own.
    # --dist loadscope has none either: xdist's loadfile and loadgroup schedulers are its
    # scheduler (subclasses of LoadScopeScheduling that override only _split_scope, the key a
    # test is grouped by), and this plugin has no code that depends on the --dist mode outside
    # --perf-schedule (whose loadscope grouping tests/test_schedule.py covers).
    **{
        f"dist-{mode}": Case(GENERAL, ["--dist", mode], xdist=("n2",))
        for mode in ("loadfile", "loadgroup", "worksteal", "each")
    },
}

#: the outcomes the general suite's design gives (every --dist mode, -n 0, -n 12, ...)
for _case in CASES.values():
    if _case.files is GENERAL:
        _case.expect = {
            "::test_passes": "passed",
            "::test_fails": "failed",
            "::test_setup_error": "error",
            "::test_teardown_error": "error",
            "::test_skipped": "skipped",
            "::test_xfail": "xfailed",
            "::test_xpass": "xpassed",
            "::TestClass::test_a": "passed",
            "::test_g2": "passed",
        }

XDIST_ARGS = {"serial": [], "n2": ["-n", "2"], "n12": []}

PARAMS = [
    pytest.param(name, variant, id=f"{name}-{variant}")
    for name, case in CASES.items()
    for variant in case.xdist
]


def _need(case: Case) -> None:
    """Skip, saying why, where the case cannot run: the plugin's pinned release needs a newer
    Python (the test extra installs it only there), or pytest is too old for what it tests.
    A plugin missing where the test extra installs it fails with CI=true."""
    if case.sigalrm and not hasattr(signal, "SIGALRM"):
        pytest.skip("pytest-timeout's signal method needs SIGALRM (POSIX)")
    if PYTEST_MAJOR < case.min_pytest:
        pytest.skip(f"needs pytest >= {case.min_pytest} (this is pytest {pytest.__version__})")
    if case.plugin is None:
        return
    plugin = PLUGINS[case.plugin]
    if sys.version_info < plugin.python:
        floor = ".".join(map(str, plugin.python))
        pytest.skip(
            f"the tested release of {plugin.dist} (pinned in the test extra) needs Python "
            f">= {floor}; the test extra installs it only there"
        )
    need_installed(
        plugin.module, f'{plugin.dist} is not installed (pip install -e ".[test]" installs it)'
    )


# --------------------------------------------------------------------------- pytest's view


@dataclass
class Seen:
    """One node id as pytest's terminal reporter saw it."""

    outcomes: list = field(default_factory=list)  # of its phases, all executions but reruns
    attempts: int = 0  # its setup reports: one per execution
    reruns: int = 0  # attempts pytest-rerunfailures reported as "rerun"
    subtests: Counter = field(default_factory=Counter)

    @property
    def outcome(self) -> str:
        outcomes = list(self.outcomes)
        if self.subtests["failed"]:
            # pytest-subtests, and pytest 9 for unittest's subTest, pass the test itself
            outcomes.append("failed")
        return max(outcomes, key=SEVERITY.index)


def pytest_view(stats: dict) -> dict:
    """node id -> Seen, from the terminal reporter's stats ({category: [[nodeid, when,
    outcome, is_subtest], ...]}). Categories: passed, failed, skipped, error, xfailed, xpassed,
    rerun; '' holds the passed setups and teardowns; an xdist worker that died under a test
    gives it a 'failed' report of phase '???'."""
    seen: dict = {}
    for category, rows in stats.items():
        for nodeid, when, outcome, is_subtest in rows:
            s = seen.setdefault(nodeid, Seen())
            if is_subtest:
                s.subtests[outcome] += 1
                continue
            if when == "setup":
                s.attempts += 1
            if category == "rerun":
                s.reruns += 1
            elif when == "???":
                s.outcomes.append("crashed")
            elif category in SEVERITY:
                s.outcomes.append(category)
    for nodeid, s in seen.items():
        s.attempts = max(s.attempts, 1)  # a crash's own report may be its only one
        assert s.outcomes, (nodeid, s)  # every executed test has a final outcome
    return seen


# --------------------------------------------------------------------------- the checks


def _phases_add_up(where: str, t: dict) -> None:
    """setup + call + teardown == duration (a phase that never ran is null, counting 0). A test
    that crashed or was interrupted has the phases pytest reported (at most its setup) and the
    time until its end: the phases add up to at most its duration."""
    phases = [t[k] for k in ("setup_time", "call_time", "teardown_time")]
    total = sum(p for p in phases if p is not None)
    if t["outcome"] in ("crashed", "interrupted"):
        if t["duration"] is None:
            assert all(p is None for p in phases), (where, t)
        else:
            assert total < t["duration"] + ROUNDING, (where, phases, t["duration"])
        return
    assert t["duration"] is not None, (where, t)
    assert abs(total - t["duration"]) < ROUNDING, (where, phases, t["duration"])


def check_report(report: dict, seen: dict) -> None:
    tests = report["tests"]
    assert set(tests) == set(seen), (
        f"missing: {sorted(set(seen) - set(tests))}, not run: {sorted(set(tests) - set(seen))}"
    )
    for nodeid, s in seen.items():
        t = tests[nodeid]
        assert t["outcome"] == s.outcome, (nodeid, t["outcome"], s)
        _phases_add_up(nodeid, t)
        subtests = {k: s.subtests[k] for k in ("passed", "failed", "skipped")}
        if s.subtests:
            assert t.get("subtests") == subtests, (nodeid, t.get("subtests"), s.subtests)
        else:
            assert "subtests" not in t, (nodeid, t)
        if s.attempts == 1:
            assert "executions" not in t, (nodeid, t)
            continue
        executions = t.get("executions")
        assert executions and len(executions) == s.attempts, (nodeid, s, executions)
        assert [e["attempt"] for e in executions] == list(range(1, s.attempts + 1)), executions
        outcomes = [e["outcome"] for e in executions]
        assert outcomes.count("rerun") == s.reruns, (nodeid, outcomes, s)
        if s.reruns:  # the reruns come first; the last attempt's outcome is pytest's
            assert outcomes == ["rerun"] * s.reruns + [s.outcome], (nodeid, outcomes)
        for i, e in enumerate(executions):
            _phases_add_up(f"{nodeid} execution {i + 1}", e)
        starts = [e["start"] for e in executions]
        assert starts == sorted(starts), (nodeid, starts)
        assert t["start"] == starts[0], (nodeid, t["start"], starts)
        tolerance = ROUNDING * (len(executions) + 1)
        for k in ("duration", "setup_time", "call_time", "teardown_time"):
            total = sum(e[k] or 0 for e in executions)
            assert abs((t[k] or 0) - total) < tolerance, (nodeid, k, t[k], total)


def _perf_run(run_perf, pytester, case: Case, variant: str):
    pytester.makeconftest(STATS_CONFTEST)
    for name, source in case.files.items():
        if "." in name:
            (pytester.path / name).write_text(source, encoding="utf-8")
        else:
            pytester.makepyfile(**{name: source})
    enable = [PLUGINS[case.plugin].entry_point] if case.plugin else []
    env = {"PYTEST_ADDOPTS": inner_addopts(*enable)}
    return run_perf(*XDIST_ARGS[variant], *case.args, env=env)


@pytest.mark.parametrize("name, variant", PARAMS)
def test_matrix(run_perf, pytester, name, variant):
    case = CASES[name]
    _need(case)
    run = _perf_run(run_perf, pytester, case, variant)
    stats_path = pytester.path / "pytest-stats.json"
    assert stats_path.exists(), run.text  # pytest reached its summary
    view = json.loads(stats_path.read_text(encoding="utf-8"))
    exit = case.exit[variant] if isinstance(case.exit, dict) else case.exit
    assert run.ret == exit == view["exitstatus"], (run.ret, view["exitstatus"], run.text)
    if case.output:
        assert case.output in run.text, run.text
    seen = pytest_view(view["stats"])
    for suffix, outcome in case.expect.items():  # the suite's design, as pytest saw it
        # (with pytest 8, --dist loadgroup appends "@GROUP" to the grouped tests' node ids)
        match = [s for nodeid, s in seen.items() if nodeid.split("@")[0].endswith(suffix)]
        assert len(match) == 1 and match[0].outcome == outcome, (suffix, outcome, match)
    assert run.report is not None, run.text
    assert run.report["session"].get("exit_status", run.ret) == run.ret, run.report["session"]
    check_report(run.report, seen)
    _case_specific(name, variant, seen, run.report)
    if name == "maxfail":  # stopped early, the session still finished
        assert run.report["session"]["aborted"] is False, run.report["session"]
        assert "perfmon: warning" not in run.text, run.text
    if case.files is GENERAL:
        check_workers(run.report, WORKERS[variant])


#: the workers each variant of the general suite may run its tests on
WORKERS = {"serial": {"main"}, "n2": {"gw0", "gw1"}, "n12": {f"gw{i}" for i in range(12)}}


def check_workers(report: dict, workers: set) -> None:
    """Every way xdist distributes (or is off): every execution ran on one of the run's
    workers, whose report counts them all, and each worker's tests ran in its process; no
    record dropped; the session and summary count the entries."""
    tests = report["tests"]
    session = report["session"]
    assert session["records_dropped"] == 0, session
    assert session["total_tests"] == len(tests), session
    outcomes = Counter(t["outcome"] for t in tests.values())
    assert report["summary"]["outcomes"] == dict(outcomes), report["summary"]["outcomes"]
    ran = Counter(e["worker"] for t in tests.values() for e in t.get("executions", [t]))
    assert set(ran) <= set(report["workers"]) <= workers, (set(ran), report["workers"])
    for wid, w in report["workers"].items():
        assert w["tests"] == ran[wid], (wid, w, ran)
        pids = {t["pid"] for t in tests.values() if t["worker"] == wid and "executions" not in t}
        assert pids <= {w["pid"]}, (wid, pids, w)
        # (-n 12: the workers xdist gave no test are there, busy for no time)
        assert (w["busy_time"] > 0) == (w["tests"] > 0), (wid, w)
        assert w["idle_time"] >= 0 and w["peak_rss_mb"] > 0, (wid, w)


def _case_specific(name: str, variant: str, seen: dict, report: dict) -> None:
    """What the design says beyond outcomes, as a check of the suite (pytest's view) and of
    the report."""
    tests = report["tests"]
    if name == "rerunfailures":
        flaky = seen["test_rerun.py::test_flaky"]
        assert (flaky.attempts, flaky.reruns) == (3, 2), flaky
        assert seen["test_rerun.py::test_always_fails"].reruns == 2
    elif name == "repeat":
        assert len(seen) == 8, sorted(seen)
    elif name.startswith("timeout"):
        hung = tests["test_timeout.py::test_2_hangs"]
        assert hung["duration"] is None or hung["duration"] >= 0.9, hung
    elif name == "pytest-subtests" or (name == "pytest-own" and PYTEST_MAJOR >= 9):
        mixed = seen["test_subtests.py::test_mixed"].subtests
        assert (mixed["passed"], mixed["failed"], mixed["skipped"]) == (2, 1, 1), mixed
    elif name == "maxfail" and variant == "serial":
        assert len(seen) == 4, sorted(seen)
    elif name == "dist-each":
        for nodeid, t in tests.items():
            assert sorted(e["worker"] for e in t["executions"]) == ["gw0", "gw1"], (nodeid, t)
        assert {w: v["tests"] for w, v in report["workers"].items()} == {
            "gw0": len(tests),
            "gw1": len(tests),
        }
    elif name == "dist-loadfile":  # a file's tests on one worker
        by_file: dict = {}
        for nodeid, t in tests.items():
            by_file.setdefault(nodeid.split("::")[0], set()).add(t["worker"])
        assert all(len(w) == 1 for w in by_file.values()), by_file
    if name == "pytest-own":  # the file given twice ran twice, every other test once
        twice = {k for k, s in seen.items() if s.attempts == 2}
        assert twice == {f"test_dup.py::test_{n}" for n in ("a", "b", "fails")}, seen
        assert all(s.attempts in (1, 2) for s in seen.values()), seen


# --------------------------------------------------------------------------- timeout, thread


def _wait_for_report(path, seconds: float = 15.0) -> dict:
    """The report of a pytest that died: its monitor writes it after noticing."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return validate(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_timeout_thread_method_ends_pytest(run_perf, pytester):
    """pytest-timeout's thread method ends pytest with os._exit(1) under the hung test: the
    report holds the tests before it with their outcomes and the hung test as interrupted;
    the tests after it never ran, and pytest never reached its summary. The monitor wrote the
    report of an aborted session, whose one warning names os._exit(1) and the test (also
    tests/test_endings.py's os._exit case, which was this run with a marker instead of the
    options)."""
    case = CASES["timeout-thread"]
    _need(case)
    run = _perf_run(run_perf, pytester, case, "serial")
    assert run.ret == 1, run.text
    assert "Timeout" in run.text, run.text
    assert not (pytester.path / "pytest-stats.json").exists()  # no summary: os._exit
    report = run.report or _wait_for_report(run.path)
    tests = report["tests"]
    assert sorted(tests) == ["test_timeout.py::test_1_fast", "test_timeout.py::test_2_hangs"]
    assert tests["test_timeout.py::test_1_fast"]["outcome"] == "passed"
    hung = tests["test_timeout.py::test_2_hangs"]
    assert hung["outcome"] == "interrupted" and hung["duration"] >= 0.9, hung
    for nodeid, t in tests.items():
        _phases_add_up(nodeid, t)
        assert "executions" not in t, t
    assert report["session"]["aborted"] is True, report["session"]
    assert report["session"]["warnings"] == [
        "session aborted: pytest exited through os._exit(1) during test_timeout.py::test_2_hangs"
    ]
