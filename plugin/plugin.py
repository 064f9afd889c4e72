"""The pytest entry point: option definitions only, until --perf-monitor switches the rest on.

This module imports nothing but pytest, the standard library and ``_settings`` (the same);
zmq and msgpack are imported from ``_roles`` inside pytest_configure, and only when monitoring
is on.
"""

from __future__ import annotations

import os

import pytest

from ._settings import (
    DEFAULT_INTERVAL,
    DEFAULT_LIMIT_MODE,
    DEFAULT_OUTPUT,
    DEFAULT_PROFILE_OVER,
    LIMIT_METRICS,
    LIMIT_MODES,
    MAX_INTERVAL,
    MIN_INTERVAL,
    PROFILE_MODES,
    limit_type,
    nonneg_float,
    parse_factor,
    parse_interval,
    parse_label,
)

MARKER = (
    "perf_limit(duration=s, call=s, peak_mb=MB, delta_mb=MB, cpu_time=s): performance budget "
    "of the test, enforced with --perf-monitor (pytest-perfmon); the nearest marker sets each "
    "metric (function > class > module), None removes a limit"
)


#: Our options that take a value, filled by pytest_addoption. Written as a separate argument
#: (``--perf-history ../h.db``), a value is a test path to pytest when it decides its rootdir,
#: before it loads this plugin: see _rootdir.
VALUE_FLAGS: set[str] = set()


class _Group:
    """The option group, recording the flags of options that take a value in VALUE_FLAGS."""

    def __init__(self, group: pytest.OptionGroup) -> None:
        self.group = group

    def addoption(self, *names: str, **attrs: object) -> None:
        self.group.addoption(*names, **attrs)
        if attrs.get("action") not in ("store_true", "store_false"):
            VALUE_FLAGS.update(names)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = _Group(parser.getgroup("perfmon", "performance monitoring (pytest-perfmon)"))
    group.addoption(
        "--perf-monitor",
        action="store_true",
        default=None,
        help="Measure wall time, memory and CPU of every test through a separate monitor "
        "process and write a JSON report. [ini: perf_monitor]",
    )
    group.addoption(
        "--no-perf-monitor",
        action="store_false",
        dest="perf_monitor",
        default=None,
        help="Switch monitoring off even where the ini file switches it on.",
    )
    group.addoption(
        "--perf-output",
        metavar="FILE",
        default=None,
        help=f"Where to write the JSON report (default: {DEFAULT_OUTPUT}). [ini: perf_output]",
    )
    group.addoption(
        "--perf-system-info",
        action="store_true",
        default=None,
        help="Include the system block (platform, Python, CPUs, memory) in the report "
        "(default: on). [ini: perf_system_info]",
    )
    group.addoption(
        "--no-perf-system-info",
        action="store_false",
        dest="perf_system_info",
        default=None,
        help="Leave the system block out of the report.",
    )
    group.addoption(
        "--perf-cpu-interval",
        metavar="SECONDS",
        type=parse_interval,
        default=None,
        help=f"How often the monitor samples the test processes, in seconds: at least "
        f"{MIN_INTERVAL} and below {MAX_INTERVAL:.0f} (default: {DEFAULT_INTERVAL}). "
        "[ini: perf_cpu_interval]",
    )
    group.addoption(
        "--perf-print-summary",
        action="store_true",
        default=None,
        help="Print the slowest, most memory-hungry and most CPU-intensive tests at the end. "
        "[ini: perf_print_summary]",
    )
    group.addoption(
        "--perf-daemon",
        metavar="ENDPOINT",
        default=None,
        help="Report into a running perfmon-daemon at ENDPOINT (ipc://PATH, tcp://HOST:PORT or "
        "tcp://[IPv6]:PORT) instead of spawning a monitor. [env: PERFMON_DAEMON; ini: perf_daemon]",
    )
    group.addoption(
        "--perf-listen",
        metavar="HOST[:PORT]",
        default=None,
        help="Where the collector listens (TCP, CURVE-encrypted, keys per session) for the "
        "relays of xdist workers on other hosts (--tx ssh=/socket=). Default: the local address "
        "that reaches the first remote --tx/--px host, any free port.",
    )
    group.addoption(
        "--perf-limits",
        choices=LIMIT_MODES,
        default=None,
        help=f"What a test over a performance limit does: fail it, warn (terminal summary, "
        f"GitHub ::warning lines) or off (default: {DEFAULT_LIMIT_MODE}). [ini: perf_limits]",
    )
    for metric, (unit, _, how) in LIMIT_METRICS.items():
        flag = metric.replace("_", "-")
        group.addoption(
            f"--perf-limit-{flag}",
            metavar="SECONDS" if unit == "s" else unit,
            type=limit_type(metric),
            default=None,
            help=f"Limit of every test's {metric} ({how}), unless its perf_limit marker sets "
            f"one. [ini: perf_limit_{metric}]",
        )
        parser.addini(f"perf_limit_{metric}", f"Default limit of {metric} ({unit}).", default="")
    parser.addini("perf_limits", "fail | warn | off (like --perf-limits).", default="")
    group.addoption(
        "--perf-limit-history",
        metavar="FACTOR",
        type=parse_factor,
        default=None,
        help="With --perf-history: a test fails when a metric (duration, call, peak_mb, "
        "delta_mb) exceeds FACTOR x its median over the last runs of this machine and exceeds "
        "that median by the floor (ini perf_limit_floor_ms, perf_limit_floor_mb; runs: "
        "perf_limit_history_runs). [ini: perf_limit_history]",
    )
    parser.addini("perf_limit_history", "Like --perf-limit-history FACTOR.", default="")
    parser.addini("perf_limit_history_runs", "Runs the medians are taken over (10).", default="")
    parser.addini("perf_limit_floor_ms", "Floor of history limits on times, ms (50).", default="")
    parser.addini("perf_limit_floor_mb", "Floor of history limits on memory, MB (10).", default="")
    group.addoption(
        "--no-perf-children",
        action="store_false",
        dest="perf_children",
        default=None,
        help="Do not measure the tests' child processes (CPU through RUSAGE_CHILDREN, memory "
        "by sampling their descendants): on by default. [ini: perf_children]",
    )
    parser.addini(
        "perf_children",
        "Measure the tests' child processes (default: on).",
        type="bool",
        default=True,
    )
    group.addoption(
        "--perf-html",
        metavar="FILE",
        default=None,
        help="Also write the report as one self-contained HTML page (charts, sortable table), "
        "written by the monitor. [ini: perf_html]",
    )
    group.addoption(
        "--perf-history",
        metavar="URL",
        default=None,
        help="Append the run to a history store at the end: a file path (SQLite), sqlite:///PATH "
        "or postgresql://user:pass@host:port/db; written by the monitor, needs "
        "pytest-perfmon[history]. [env: PERFMON_HISTORY; ini: perf_history]",
    )
    group.addoption(
        "--perf-label",
        metavar="KEY=VALUE",
        action="append",
        type=parse_label,
        default=None,
        help="A label of the run in the history store (repeatable); commit=SHA and branch=NAME "
        "override what is found in CI variables or git.",
    )
    group.addoption(
        "--perf-schedule",
        nargs="?",
        const="",
        default=None,
        metavar="REPORT.json",
        help="With pytest-xdist -n N: run the longest predicted tests first (their history in "
        "--perf-history, or one earlier report: --perf-schedule=REPORT.json), keeping the "
        "groups of --dist loadscope/loadfile/loadgroup; falls back to xdist's scheduling when "
        "there is nothing to plan from.",
    )
    group.addoption(
        "--perf-max-memory",
        metavar="SIZE|auto",
        default=None,
        help="With --perf-schedule: never start a test when the workers' predicted memory "
        "would pass SIZE (8G, 512M; auto = the memory available now): it waits for a heavy "
        "test to end.",
    )
    group.addoption(
        "--perf-shard",
        metavar="K/N",
        type=_shard_type,
        default=None,
        help="Run only shard K of N (K from 1) of a CI matrix, split so that the shards take "
        "about the same time, from the tests' durations in --perf-history (its newest runs, "
        "without those of this matrix) or in --perf-shard-from; every job computes the same "
        "split. A shard without tests exits 0. [ini: perf_shard]",
    )
    group.addoption(
        "--perf-shard-from",
        metavar="PATH",
        default=None,
        help="With --perf-shard: split from one earlier report (single or merged) or a "
        "pytest-split .test_durations file instead of the history store.",
    )
    group.addoption(
        "--perf-profile",
        choices=PROFILE_MODES,
        default=None,
        help="Sample every measured process with py-spy from outside (xdist workers too) and "
        "keep a profile (folded stacks) of each slow test (slow: over --perf-profile-over) or of "
        "every test (all), in a file beside the report; needs pytest-perfmon[profile]. "
        "[ini: perf_profile]",
    )
    group.addoption(
        "--perf-profile-over",
        metavar="SECONDS",
        type=nonneg_float,
        default=None,
        help=f"With --perf-profile slow: keep the profiles of tests longer than this "
        f"(default: {DEFAULT_PROFILE_OVER}). [ini: perf_profile_over]",
    )
    parser.addini("perf_profile", "off | slow | all (like --perf-profile).", default="")
    parser.addini("perf_profile_over", "Like --perf-profile-over SECONDS.", default="")
    parser.addini("perf_shard", "Shard K/N of a CI matrix (like --perf-shard).", default="")
    parser.addini("perf_html", "Path of the HTML page (like --perf-html).", default="")
    parser.addini("perf_history", "History store URL (like --perf-history).", default="")
    parser.addini("perf_monitor", "Turn on pytest-perfmon (like --perf-monitor).", type="bool")
    parser.addini("perf_output", f"Report path (default: {DEFAULT_OUTPUT}).", default="")
    parser.addini("perf_system_info", "Include system information.", type="bool", default=True)
    parser.addini(
        "perf_cpu_interval",
        f"Sampling interval in seconds (at least {MIN_INTERVAL}, below {MAX_INTERVAL:.0f}).",
        default="",
    )
    parser.addini("perf_print_summary", "Print the summary.", type="bool", default=False)
    parser.addini("perf_daemon", "Endpoint of a running perfmon-daemon.", default="")


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    # Always registered: suites with --strict-markers keep working without --perf-monitor.
    config.addinivalue_line("markers", MARKER)
    opt = config.option
    if getattr(opt, "help", False) or getattr(opt, "version", False):
        return
    if _shard_wanted(config):  # --perf-shard: in a worker, when its controller shards
        from . import _shard

        _shard.configure(config)
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:  # an xdist worker: measuring only if its controller monitors
        if "perfmon_endpoint" in workerinput:
            from . import _fixtures, _limits, _roles, _settings

            _fixtures.configure(config, lambda: _roles.configure_worker(config, workerinput))
            try:  # the same command line and ini file as the controller, which checked them
                mode, limits = _settings.resolve_limits(opt, config.getini)
                history = _settings.resolve_history_limits(
                    opt, config.getini, str(config.invocation_params.dir)
                )
            except _settings.SettingError as exc:  # pragma: no cover - the controller stopped
                raise pytest.UsageError(str(exc)) from None
            _limits.install(config, mode, limits, history)
        return
    _check_rootdir(config)
    from . import _settings

    try:
        if not _runs_no_tests(opt):
            schedule = _settings.resolve_schedule(
                opt, config.getini, str(config.invocation_params.dir)
            )
            if schedule is not None:
                from . import _schedule

                _schedule.install(config, schedule)
        settings = _settings.resolve(
            opt, config.getini, str(config.invocation_params.dir), rootdir=str(config.rootpath)
        )
        if settings is None or _runs_no_tests(opt):
            return
        history = _settings.resolve_history_limits(
            opt, config.getini, str(config.invocation_params.dir)
        )
        _settings.make_output_directory(settings)
    except _settings.SettingError as exc:
        raise pytest.UsageError(str(exc)) from None
    from . import _handle

    early = _handle.spawn_early(settings)  # before the imports below: beside its start-up
    if early is not None:
        config.add_cleanup(early.drop)  # a no-op once the session's role claimed it
    from . import _fixtures, _limits, _roles

    _fixtures.configure(config, lambda: _roles.configure(config, settings, early))
    _limits.install(config, settings.limit_mode, settings.limits, history)


#: pytest's options with which it runs no test (it lists, plans or sets up only): the session is
#: not measured, and the previous report stays where it is (the options are still checked).
NO_TEST_OPTIONS = (
    "collectonly",
    "markers",
    "showfixtures",
    "show_fixtures_per_test",
    "setuponly",
    "setupplan",
    "cacheshow",
)


def _runs_no_tests(opt: object) -> bool:
    return any(getattr(opt, name, False) for name in NO_TEST_OPTIONS)


def _shard_type(text: str) -> tuple:
    from ._shard import parse_option

    return parse_option(text)


def _shard_wanted(config: pytest.Config) -> bool:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        return "perfmon_shard" in workerinput
    opt = config.option
    return bool(opt.perf_shard or opt.perf_shard_from or config.getini("perf_shard"))


def _check_rootdir(config: pytest.Config) -> None:
    """Warn when a value of ours, written as a separate argument, moved pytest's rootdir or ini
    file (with or without --perf-monitor: node ids change and the ini file may go unread either
    way). Imports _rootdir only when one of our value-taking flags is an argument of its own."""
    args = config.invocation_params.args
    env = os.environ.get("PYTEST_ADDOPTS", "")
    if any(a in VALUE_FLAGS for a in args) or ("--perf-" in env and VALUE_FLAGS & set(env.split())):
        from . import _rootdir

        _rootdir.warn(config, VALUE_FLAGS)
