"""--perf-profile: a real py-spy samples real pytest runs (serial and two xdist workers) from the
monitor; the slow test's profile names the function it spends its time in, a quick test gets
none; ``perfmon profile`` prints it, the HTML page draws it in Chromium (that check is in
tests/test_html.py, on the same run); and each way sampling fails (py-spy missing, not
permitted, killed mid-run) is one line, the outcomes unchanged."""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap

import pytest
from helpers import (
    PROFILE_ARGS,
    PROFILED_SUITE,
    XDIST_ENDS,
    Run,
    need_history,
    need_py_spy,
    run_in,
    shared_run,
)
from pytest_perfmon.monitor import cli, profile, profile_view


def run(path, *args: str, command: list | None = None, env: dict | None = None) -> Run:
    """An inner pytest run with --perf-monitor in ``path`` (our plugins off), its interpreter
    command ``command`` (default: this Python)."""
    return run_in(path, *args, env=env, command=command)


def profiles(r: Run) -> dict:
    assert "profile" in r.report["session"], r.text
    block = r.report["session"]["profile"]
    with open(block["path"], encoding="utf-8") as f:
        return json.load(f)


def warnings_of(r: Run) -> list:
    return [w for w in r.report["session"].get("warnings") or [] if w.startswith("--perf-profile")]


@pytest.mark.slow
@pytest.mark.parametrize("xdist", XDIST_ENDS)
def test_slow_test_profiled_in_its_function_quick_test_not(
    xdist, tmp_path, tmp_path_factory, monkeypatch, capsys
):
    need_py_spy()
    # one run per session (helpers.shared_run): the serial one is test_html.py's page too
    r = shared_run(tmp_path_factory, {"test_suite": PROFILED_SUITE}, *xdist, *PROFILE_ARGS)
    assert r.ret == 1, r.text  # test_slow_fails fails, as without profiling
    assert r.test("test_slow")["outcome"] == "passed"
    assert r.test("test_slow_fails")["outcome"] == "failed"
    assert warnings_of(r) == [], r.text
    block = r.report["session"]["profile"]
    assert block["path"] == str(r.path.parent / "perf.profiles.json")
    assert (block["mode"], block["over"], block["rate"]) == ("slow", 0.3, profile.RATE)
    doc = profiles(r)
    by_id = {t["nodeid"].rsplit("::", 1)[-1]: t for t in doc["tests"]}
    assert set(by_id) == {"test_slow", "test_slow_fails"}, r.text  # the quick test: none
    for name, caller in (("test_slow", "test_slow"), ("test_slow_fails", "spin_then_fail")):
        t = by_id[name]
        assert t["worker"] == ("main" if not xdist else t["worker"])
        # sampled from its start, even as the first test of its process: the process's ready
        # waits for its py-spy (samples are counted by time, however late py-spy runs). At
        # most 80 ms of its time unsampled (what 0.9 of the 0.8 s spin allowed, when it spun
        # that long: with 0.5 s, 0.9 of it failed once beside a busy core, 43 of 48.7)
        missed = t["duration"] * profile.RATE - t["samples"]
        assert missed <= 0.08 * profile.RATE, (t["samples"], t["duration"])
        top = profile.functions(t["stacks"])
        assert (top[0].function, top[0].file) == ("spin_here", "test_suite.py"), top[:3]
        assert top[0].self_samples > t["samples"] / 2, top[:3]
        # under its caller; a sample at either boundary may be the neighbour test's (a stack
        # change is seen at the next sample, 10 ms later at most)
        (under,) = [f.total_samples for f in top if f.function == caller]
        assert under >= top[0].self_samples - 2, top[:5]
        # folded stacks of file:function:line frames, from pytest's frame above runtestprotocol;
        # "(pytest)": a sample between two phases, in pytest's own frames only (a busy machine
        # slows those moments enough for a sample to fall there)
        assert all(k.startswith("_pytest/runner.py:") or k == "(pytest)" for k in t["stacks"]), t[
            "stacks"
        ]
        assert any(";test_suite.py:spin_here:" in k for k in t["stacks"]), t["stacks"]
    hottest = {h["nodeid"].rsplit("::", 1)[-1]: h for h in block["hottest"]}
    assert hottest["test_slow"]["function"] == "spin_here"
    assert "perfmon: profile: test_suite.py::test_slow" in r.text
    assert "hottest spin_here (test_suite.py:" in r.text

    # perfmon profile: the terminal, speedscope, SVG; in-process through cli.main, in a
    # directory of this test's (the run's is shared), as tests/test_cli.py runs the command
    # (its console script's own start is that file's smoke test)
    capsys.readouterr()  # drop anything printed before
    with monkeypatch.context() as mp:
        mp.chdir(tmp_path)
        code = cli.main(
            ["profile", "test_slow", "--report", str(r.path), "--speedscope", "s.json"]
            + ["--svg", "f.svg"]
        )
    out, err = capsys.readouterr()
    assert code == 0, err
    rows = [ln for ln in out.splitlines() if "%" in ln]
    assert "spin_here (test_suite.py:" in rows[0], out
    ss = json.loads((tmp_path / "s.json").read_text(encoding="utf-8"))
    names = [f["name"] for f in ss["shared"]["frames"]]
    assert "spin_here" in names and ss["profiles"][0]["type"] == "sampled"
    assert "spin_here" in (tmp_path / "f.svg").read_text(encoding="utf-8")
    # The HTML page of the serial run, in Chromium (the profiled tests have a button; it draws
    # the flame graph): tests/test_html.py's test_profiled_run_draws_its_flame_graphs, in the
    # page that module's Chromium has open already, rather than a Chromium started here for
    # one page. The page draws what the report and the profiles file hold (monitor/html.py
    # reads the file the report names), checked above for the two workers as for one process.


@pytest.mark.slow
def test_all_keeps_a_short_test_and_over_moves_the_bar(tmp_path):
    need_py_spy()
    (tmp_path / "test_short.py").write_text(
        textwrap.dedent(
            """
            import time

            def wait_here():
                time.sleep(0.4)

            def test_short():
                wait_here()
            """
        ),
        encoding="utf-8",
    )
    r = run(tmp_path, "--perf-profile", "all")
    assert r.ret == 0, r.text
    (t,) = profiles(r)["tests"]
    assert profile.hottest(t["stacks"])["function"] == "wait_here", t  # idle samples are kept
    r = run(tmp_path, "--perf-profile", "slow", "--perf-profile-over", "0.2")
    kept = profiles(r)["tests"]
    assert [t["nodeid"] for t in kept] == ["test_short.py::test_short"], (kept, r.text)
    # 1 s by default: a test under it is not kept (with a history it may be:
    # test_slow_with_history_keeps_a_test_well_over_its_median, whose check this is too)
    r = run(tmp_path, "--perf-profile", "slow")
    assert profiles(r)["tests"] == [], r.text
    assert r.report["session"]["profile"]["tests"] == 0


def test_py_spy_missing_is_one_line(tmp_path):
    """A Python environment without the profile extra: this one's packages, without py-spy
    beside the interpreter or on PATH."""
    env_dir = tmp_path / "env"
    (env_dir / "bin").mkdir(parents=True)
    base = os.path.realpath(sys.executable)
    cfg = os.path.join(sys.prefix, "pyvenv.cfg")
    if sys.prefix == sys.base_prefix or not os.path.exists(cfg) or os.name != "posix":
        pytest.skip("needs a POSIX virtual environment to copy")
    shutil.copy(cfg, env_dir / "pyvenv.cfg")
    os.symlink(base, env_dir / "bin" / "python")
    lib = f"lib/python{sys.version_info[0]}.{sys.version_info[1]}"
    (env_dir / lib).mkdir(parents=True)
    os.symlink(os.path.join(sys.prefix, lib, "site-packages"), env_dir / lib / "site-packages")
    path = os.pathsep.join(
        d
        for d in os.environ.get("PATH", "").split(os.pathsep)
        if d and not os.path.exists(os.path.join(d, "py-spy"))
    )
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_one.py").write_text("def test_one():\n    pass\n", encoding="utf-8")
    r = run(
        suite,
        "--perf-profile",
        "all",
        command=[str(env_dir / "bin" / "python")],
        env={"PATH": path},
    )
    assert r.ret == 0, r.text
    assert r.test("test_one")["outcome"] == "passed"
    assert "profile" not in r.report["session"]
    line = (
        "--perf-profile: py-spy is not installed (pip install 'pytest-perfmon[profile]'): "
        "no profiles"
    )
    assert warnings_of(r) == [line]
    assert r.text.count(line) == 1, r.text


@pytest.mark.slow
@pytest.mark.parametrize("xdist", XDIST_ENDS)
def test_not_permitted_says_why_and_how(xdist, tmp_path):
    """The kernel refuses: no CAP_SYS_PTRACE (as in a container without it) and processes their
    owner cannot trace (not dumpable)."""
    need_py_spy()
    setpriv = shutil.which("setpriv")
    if not sys.platform.startswith("linux") or setpriv is None or os.geteuid() != 0:
        pytest.skip("needs Linux, setpriv and root (to drop CAP_SYS_PTRACE)")
    (tmp_path / "conftest.py").write_text(
        "import ctypes\nctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0\n",
        encoding="utf-8",
    )
    (tmp_path / "test_p.py").write_text("def test_p():\n    pass\n", encoding="utf-8")
    drop = [setpriv, "--inh-caps=-sys_ptrace", "--bounding-set=-sys_ptrace", sys.executable]
    r = run(tmp_path, *xdist, "--perf-profile", "all", command=drop)
    assert r.ret == 0, r.text
    assert r.test("test_p")["outcome"] == "passed"
    (line,) = warnings_of(r)
    assert line.startswith("--perf-profile: py-spy is not permitted to sample "), line
    assert ": no CAP_SYS_PTRACE" in line, line
    assert "--cap-add SYS_PTRACE" in line and line.endswith("; no profiles")
    if xdist:
        assert "worker gw0" in line and "worker gw1" in line, line
    assert r.text.count("is not permitted") == 1, r.text
    assert "profile" not in r.report["session"]


@pytest.mark.slow
def test_sampler_killed_mid_run(tmp_path):
    need_py_spy()
    (tmp_path / "test_k.py").write_text(
        textwrap.dedent(
            """
            import os, signal, time
            import psutil

            def test_kill_my_sampler():
                deadline = time.monotonic() + 30
                spies = []
                while not spies and time.monotonic() < deadline:
                    spies = [
                        p for p in psutil.process_iter(["name", "cmdline"])
                        if p.info["name"] == "py-spy"
                        and str(os.getpid()) in (p.info["cmdline"] or [])
                    ]
                    time.sleep(0.05)
                assert spies
                for p in spies:
                    p.send_signal(signal.SIGKILL)

            def test_after():
                time.sleep(0.2)
            """
        ),
        encoding="utf-8",
    )
    r = run(tmp_path, "--perf-profile", "all")
    assert r.ret == 0, r.text
    assert [r.test(n)["outcome"] for n in ("test_kill_my_sampler", "test_after")] == ["passed"] * 2
    (line,) = warnings_of(r)
    assert line.startswith("--perf-profile: py-spy died mid-run (signal 9) on pytest (pid "), line
    assert r.text.count("py-spy died mid-run") == 1


def test_bad_ini_value_is_a_usage_error(pytester):
    pytester.makeini("[pytest]\nperf_profile = sometimes\n")
    pytester.makepyfile("def test_a():\n    pass\n")
    res = pytester.runpytest_subprocess("--perf-monitor")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(
        ["*perf_profile in the ini file: 'sometimes' is not off, slow or all*"]
    )


# --------------------------------------------------------------------------- reading


def test_frames_split_with_windows_paths_and_without_lines():
    assert profile.split_frame(r"C:\src\t.py:f:12") == (r"C:\src\t.py", "f", 12)
    assert profile.split_frame("t.py:Cls.m") == ("t.py", "Cls.m", None)
    stacks = {"t.py:test:3;t.py:a:5": 6, "t.py:test:3;t.py:a:6;t.py:b:9": 3, "t.py:test:4": 1}
    fs = {f.function: f for f in profile.functions(stacks)}
    assert (fs["a"].self_samples, fs["a"].total_samples, fs["a"].line) == (6, 9, 5)
    assert (fs["test"].self_samples, fs["test"].total_samples) == (1, 10)
    assert profile.hottest(stacks) == {"function": "a", "file": "t.py", "line": 5, "share": 0.6}


def test_cut_counts_the_samples_inside_the_test():
    s = [profile.Stretch(10.0, 10.5, ("a",)), profile.Stretch(10.5, 12.0, ("b",))]
    assert profile.cut(
        s,
        10.2,
        11.0,
    ) == {"a": 30, "b": 50}
    assert profile.cut(s, 12.0, 13.0) == {}


def test_profile_of_a_report_without_profiles_is_one_line(tmp_path):
    report = tmp_path / "r.json"
    report.write_text(json.dumps({"session": {}, "tests": {}}), encoding="utf-8")
    with pytest.raises(profile_view.ReportError, match="no profiles in this report"):
        profile_view.profiles_of(str(report))


def test_a_malformed_profiles_file_leaves_the_page_and_the_command_working(tmp_path, capsys):
    """Entries of a profiles file that --perf-profile did not write (no node id, a duration
    or a count that is text, a rate that is no number) are left out: `perfmon profile` draws
    what is left, the HTML page is written (without flame graphs where none is left)."""
    from pytest_perfmon.monitor import html

    good = {"nodeid": "t.py::test_a", "duration": 2.0, "stacks": {"t.py:f:1;t.py:g:2": 40}}
    odd = [
        {"duration": 1.0, "stacks": {"x": 1}},  # no node id
        {"nodeid": "t.py::test_b", "duration": "slow", "stacks": {"y": "many", "z": 3}},
        {"nodeid": "t.py::test_c", "duration": 1.0},  # no stacks
    ]
    profiles = tmp_path / "r.profiles.json"
    profiles.write_text(json.dumps({"rate": "fast", "tests": [good, *odd]}), encoding="utf-8")
    report = {"session": {"profile": {"path": str(profiles)}}, "tests": {}}
    drawn = html.flames(report)
    assert set(drawn) == {"t.py::test_a", "t.py::test_b"} and "<svg" in drawn["t.py::test_a"]
    path = tmp_path / "r.json"
    path.write_text(json.dumps(report), encoding="utf-8")
    assert cli.main(["profile", "test_b", "--report", str(path)]) == 0
    assert "3 samples at 100 per second" in capsys.readouterr().out
    profiles.write_text('{"tests": "none"}', encoding="utf-8")
    assert not html.flames(report)  # nothing to draw


@pytest.mark.slow
def test_slow_with_history_keeps_a_test_well_over_its_median(tmp_path):
    need_py_spy()
    need_history()
    test = tmp_path / "test_h.py"
    body = "import time\n\ndef wait_here():\n    time.sleep({})\n\ndef test_h():\n    wait_here()\n"
    db = str(tmp_path / "h.db")
    test.write_text(body.format(0.02), encoding="utf-8")
    before = []  # the durations the history holds
    for _ in range(profile.HISTORY_MIN):
        seed = run(tmp_path, "--perf-history", db)
        assert seed.ret == 0, seed.text
        before += [t["duration"] for t in seed.report["tests"].values()]
    test.write_text(body.format(0.5), encoding="utf-8")  # under the 1 s of --perf-profile-over
    r = run(tmp_path, "--perf-history", db, "--perf-profile", "slow")
    assert r.ret == 0, r.text
    assert warnings_of(r) == [], r.text
    kept = profiles(r)["tests"]  # (it failed once in a whole-suite run; say why if again)
    durations = [t["duration"] for t in r.report["tests"].values()]
    assert len(kept) == 1, (before, durations, [t["nodeid"] for t in kept], r.text)
    hot = profile.hottest(kept[0]["stacks"])
    assert hot is not None and hot["function"] == "wait_here", (hot, before, durations, r.text)
    # Without the history a test under the 1 s bar is not kept: the last run of
    # test_all_keeps_a_short_test_and_over_moves_the_bar (0.4 s there, 0.5 s here).


def test_trace_read_event_by_event_in_small_chunks(tmp_path):
    events = [
        {"args": {"filename": f"a{i}.py", "line": i}, "name": "f[]", "ph": "BE"[i % 2], "ts": i}
        for i in range(50)
    ]
    path = tmp_path / "t.json"
    path.write_text(json.dumps(events) + "\n", encoding="utf-8")
    for chunk in (1, 7, 1 << 20):
        assert list(profile.iter_events(str(path), chunk)) == events
    path.write_text(json.dumps(events)[:-40], encoding="utf-8")
    with pytest.raises(ValueError, match="ends early"):
        list(profile.iter_events(str(path), 64))
    path.write_text("[]", encoding="utf-8")
    assert list(profile.iter_events(str(path))) == []
