"""The pytest entry point: option definitions only, until --perf-monitor switches the rest on.

This module imports nothing but pytest and the standard library; zmq and msgpack are imported
from ``_runtime`` inside pytest_configure, and only when monitoring is on.
"""

from __future__ import annotations

import argparse
import os

import pytest

DEFAULT_OUTPUT = "performance_metrics.json"
DEFAULT_INTERVAL = 0.1


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (value > 0 and value < 3600):
        raise argparse.ArgumentTypeError(f"must be > 0 and < 3600 seconds, got {text}")
    return value


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("perfmon", "performance monitoring (pytest-perfmon)")
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
        type=_interval,
        default=None,
        help=f"How often the monitor samples the test processes (default: {DEFAULT_INTERVAL}). "
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
        help="Report into a running perfmon-daemon at ENDPOINT (ipc://PATH or tcp://HOST:PORT) "
        "instead of spawning a monitor. [env: PERFMON_DAEMON; ini: perf_daemon]",
    )
    parser.addini("perf_monitor", "Turn on pytest-perfmon (like --perf-monitor).", type="bool")
    parser.addini("perf_output", f"Report path (default: {DEFAULT_OUTPUT}).", default="")
    parser.addini("perf_system_info", "Include system information.", type="bool", default=True)
    parser.addini("perf_cpu_interval", "Sampling interval in seconds.", default="")
    parser.addini("perf_print_summary", "Print the summary.", type="bool", default=False)
    parser.addini("perf_daemon", "Endpoint of a running perfmon-daemon.", default="")


def _endpoint_ok(endpoint: str) -> bool:
    if endpoint.startswith("ipc://"):
        return len(endpoint) > len("ipc://")
    if endpoint.startswith("tcp://"):
        host, _, port = endpoint[len("tcp://") :].rpartition(":")
        return bool(host) and port.isdigit() and 0 < int(port) < 65536
    return False


def _settings(config: pytest.Config) -> dict | None:
    """Resolve options (command line first, then ini); None when monitoring is off."""
    opt = config.option
    enabled = opt.perf_monitor if opt.perf_monitor is not None else config.getini("perf_monitor")
    if not enabled:
        return None
    output = opt.perf_output or config.getini("perf_output") or DEFAULT_OUTPUT
    interval = opt.perf_cpu_interval
    if interval is None:
        raw = config.getini("perf_cpu_interval")
        try:
            interval = _interval(raw) if raw else DEFAULT_INTERVAL
        except argparse.ArgumentTypeError as exc:
            raise pytest.UsageError(f"perf_cpu_interval in the ini file: {exc}") from None
    output = os.path.abspath(os.path.join(str(config.invocation_params.dir), output))
    directory = os.path.dirname(output)
    if not os.path.isdir(directory):
        raise pytest.UsageError(f"--perf-output: directory {directory} does not exist")
    if os.path.isdir(output):
        raise pytest.UsageError(f"--perf-output: {output} is a directory")
    system = opt.perf_system_info
    if system is None:
        system = config.getini("perf_system_info")
    summary = opt.perf_print_summary
    if summary is None:
        summary = config.getini("perf_print_summary")
    daemon = opt.perf_daemon or os.environ.get("PERFMON_DAEMON") or config.getini("perf_daemon")
    if daemon and not _endpoint_ok(daemon):
        raise pytest.UsageError(
            f"--perf-daemon: {daemon!r} is not an endpoint like ipc:///PATH or tcp://HOST:PORT"
        )
    return {
        "daemon": daemon or None,
        "output": output,
        "interval": interval,
        "system_info": bool(system),
        "print_summary": bool(summary),
    }


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    opt = config.option
    if getattr(opt, "help", False) or getattr(opt, "version", False):
        return
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:  # an xdist worker: measuring only if its controller monitors
        if "perfmon_endpoint" in workerinput:
            from . import _runtime

            _runtime.configure_worker(config, workerinput)
        return
    settings = _settings(config)
    if settings is None or getattr(opt, "collectonly", False):
        return
    from . import _runtime

    _runtime.configure(config, settings)
