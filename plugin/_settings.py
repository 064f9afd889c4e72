"""What the user asked for, resolved once into a frozen value.

Precedence, for every setting: command line > environment > ini file > default. Three settings
have an environment variable: the daemon's endpoint (``PERFMON_DAEMON``), the history store
(``PERFMON_HISTORY``) and whether ``--perf-limit-history`` judges times without the wait for a
CPU (``PERFMON_NOISE``, only there). Imports only the standard
library and pytest: the pytest11 entry module uses it at import time for the option types.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

import pytest
from pytest_perfmon.monitor.argtypes import (
    MAX_LABELS,
    label_lengths,
    nonneg_float,  # --perf-profile-over's type too
)
from pytest_perfmon.monitor.argtypes import interval as parse_interval  # --perf-cpu-interval's
from pytest_perfmon.monitor.endpoints import is_ipv6  # noqa: F401 (the client's)
from pytest_perfmon.monitor.units import MAX_INTERVAL, MIN_INTERVAL  # noqa: F401 (the help's)
from pytest_perfmon.monitor.vocabulary import LIMIT_METRICS

DEFAULT_OUTPUT = "performance_metrics.json"
DEFAULT_INTERVAL = 0.1


LIMIT_MODES = ("fail", "warn", "off")
#: --perf-profile: off, the slow tests' profiles (over --perf-profile-over), every test's.
PROFILE_MODES = ("off", "slow", "all")
DEFAULT_PROFILE_OVER = 1.0
DEFAULT_LIMIT_MODE = "fail"


class SettingError(ValueError):
    """A setting that cannot be used; its message is one line, naming the setting."""


def limit_value(value: object, metric: str) -> Optional[float]:
    """A limit's value: a finite number >= 0 (None: no limit). Raises ValueError (one line)."""
    if value is None:
        return None
    unit = LIMIT_METRICS[metric][1]
    if isinstance(value, bool):
        raise ValueError(f"{metric}={value!r} is not a number of {unit}")
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError(f"{metric}={value!r} is not a number of {unit}") from None
    elif isinstance(value, (int, float)):
        number = float(value)
    else:
        raise ValueError(f"{metric}={value!r} is not a number of {unit}")
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{metric}={value!r} must be a finite number of {unit}, 0 or more")
    return number


def limit_type(metric: str) -> Any:
    """The argparse type of ``--perf-limit-METRIC``."""

    def parse(text: str) -> float:
        try:
            value = limit_value(text, metric)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        assert value is not None
        return value

    parse.__name__ = f"{metric} limit"
    return parse


def _ini(getini: Any, name: str) -> str:
    """An ini value as stripped text; "" where the caller's getini lacks the key (pytest
    registers every key this module reads; stand-ins in unit tests may know only some)."""
    try:
        return str(getini(name) or "").strip()
    except (KeyError, ValueError):
        return ""


def ini_bool(getini: Any, name: str) -> Any:
    """A boolean ini value (None where unset); a value pytest cannot read as a boolean is a
    SettingError naming the key, not pytest's bare "invalid truth value"."""
    try:
        return getini(name)
    except KeyError:  # stand-ins of getini in unit tests may know only some keys
        return None
    except (ValueError, pytest.UsageError) as exc:  # pytest 9: a UsageError, earlier ValueError
        raise SettingError(f"{name} in the ini file: {exc}") from None


def _regular_file(option: str, path: str) -> None:
    """An existing report path must be a regular file (or a link to one): replacing a device,
    a FIFO or a directory with our file is never what the user meant. A link is followed, as
    the writer follows it: one whose file does not exist yet is where the report will be."""
    real = os.path.realpath(path)
    if os.path.lexists(real) and not os.path.isfile(real):
        raise SettingError(f"{option}: {path} exists and is not a regular file")


def resolve_limits(option: Any, getini: Any) -> tuple:
    """``(mode, ((metric, value), ...))``: the limits every test gets unless a marker says
    otherwise. Command line > ini file. Raises SettingError on a bad ini value."""
    mode = getattr(option, "perf_limits", None)
    if mode is None:
        raw = _ini(getini, "perf_limits").lower()
        if raw and raw not in LIMIT_MODES:
            raise SettingError(
                f"perf_limits in the ini file: {raw!r} is not one of {', '.join(LIMIT_MODES)}"
            )
        mode = raw or DEFAULT_LIMIT_MODE
    defaults = []
    for metric in LIMIT_METRICS:
        value = getattr(option, "perf_limit_" + metric, None)
        if value is None:
            raw = _ini(getini, "perf_limit_" + metric)
            if raw:
                try:
                    value = limit_value(raw, metric)
                except ValueError as exc:
                    raise SettingError(f"perf_limit_{metric} in the ini file: {exc}") from None
        if value is not None:
            defaults.append((metric, float(value)))
    return mode, tuple(defaults)


def parse_label(text: str) -> tuple:
    """``--perf-label KEY=VALUE``: (key, value); the key is a non-empty name."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or not all(c.isalnum() or c in "_.-" for c in key):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not KEY=VALUE (KEY of letters, digits, '_', '.', '-')"
        )
    label_lengths(text, key, value)
    return key, value


def _labels(option: Any) -> tuple:
    """--perf-label's pairs, at most MAX_LABELS of them."""
    labels = tuple(getattr(option, "perf_label", None) or ())
    if len(dict(labels)) > MAX_LABELS:
        raise SettingError(f"--perf-label: at most {MAX_LABELS} labels ({len(labels)} given)")
    return labels


#: --perf-limit-history: the ini keys and their defaults (runs, floors).
HISTORY_RUNS = 10
FLOOR_MS = 50.0
FLOOR_MB = 10.0


@dataclass(frozen=True)
class HistoryLimits:
    """--perf-limit-history: a test fails when a metric exceeds ``factor`` x its median over the
    newest ``runs`` runs of this machine AND exceeds that median by the floor."""

    url: str
    factor: float
    runs: int = HISTORY_RUNS
    floor_s: float = FLOOR_MS / 1000.0
    floor_mb: float = FLOOR_MB
    #: times judged without the time the test waited for a CPU (PERFMON_NOISE=off: as measured)
    noise: bool = True


#: PERFMON_NOISE: "on" (the default) or "off", as ``perfmon compare/history check --noise``.
NOISE_ENV = "PERFMON_NOISE"


def noise_setting(environ: Any) -> bool:
    """PERFMON_NOISE: whether --perf-limit-history judges times without the wait."""
    raw = str(environ.get(NOISE_ENV) or "on").strip().lower()
    if raw not in ("on", "off"):
        raise SettingError(f"{NOISE_ENV}={raw!r}: must be 'on' or 'off'")
    return raw == "on"


def _ini_number(getini: Any, name: str, default: float, lo: float) -> float:
    raw = _ini(getini, name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingError(f"{name} in the ini file: {raw!r} is not a number") from None
    if not (math.isfinite(value) and value >= lo):
        raise SettingError(f"{name} in the ini file: must be a finite number >= {lo:g}")
    return value


def parse_factor(text: str) -> float:
    """--perf-limit-history FACTOR: a finite number >= 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value >= 1):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 1, got {text}")
    return value


def resolve_history_limits(
    option: Any, getini: Any, invocation_dir: str, environ: Optional[Mapping[str, str]] = None
) -> Optional[HistoryLimits]:
    """--perf-limit-history (ini perf_limit_history) with its store (--perf-history); None when
    not asked for. Raises SettingError on a bad value or a factor without a store."""
    environ = os.environ if environ is None else environ
    factor = getattr(option, "perf_limit_history", None)
    if factor is None:
        raw = _ini(getini, "perf_limit_history")
        if not raw:
            return None
        try:
            factor = parse_factor(raw)
        except argparse.ArgumentTypeError as exc:
            raise SettingError(f"perf_limit_history in the ini file: {exc}") from None
    url = _history(option, getini, invocation_dir, environ)
    if url is None:
        raise SettingError("--perf-limit-history needs a history store: --perf-history URL")
    return HistoryLimits(
        url=url,
        factor=float(factor),
        runs=int(_ini_number(getini, "perf_limit_history_runs", HISTORY_RUNS, 1)),
        floor_s=_ini_number(getini, "perf_limit_floor_ms", FLOOR_MS, 0) / 1000.0,
        floor_mb=_ini_number(getini, "perf_limit_floor_mb", FLOOR_MB, 0),
        noise=noise_setting(environ),
    )


@dataclass(frozen=True)
class Schedule:
    """--perf-schedule: plan the xdist run from the history store or from one report."""

    history: Optional[str] = None  # the store's URL, or
    report: Optional[str] = None  # an earlier JSON report (absolute path)
    max_memory: Optional[str] = None  # --perf-max-memory as given: SIZE or "auto"


def resolve_schedule(
    option: Any, getini: Any, invocation_dir: str, environ: Optional[Mapping[str, str]] = None
) -> Optional[Schedule]:
    """--perf-schedule[=REPORT.json] and --perf-max-memory; None when not asked for."""
    environ = os.environ if environ is None else environ
    value = getattr(option, "perf_schedule", None)
    memory = getattr(option, "perf_max_memory", None)
    if value is None:
        if memory is not None and not getattr(option, "perf_shard", None):
            raise SettingError("--perf-max-memory works with --perf-schedule or --perf-shard")
        return None
    if memory is not None and memory != "auto":
        from pytest_perfmon.monitor.predict import parse_size  # stdlib only

        try:
            parse_size(memory)
        except ValueError as exc:
            raise SettingError(f"--perf-max-memory: {exc} (or auto)") from None
    if value:
        if not value.lower().endswith(".json"):
            raise SettingError(
                f"--perf-schedule got {value!r}: give a report as --perf-schedule=REPORT.json "
                "(a .json file, with '='), or put test paths before --perf-schedule"
            )
        path = os.path.abspath(os.path.join(invocation_dir, os.path.expanduser(value)))
        return Schedule(report=path, max_memory=memory)
    url = _history(option, getini, invocation_dir, environ)
    if url is None:
        raise SettingError(
            "--perf-schedule plans from a history store (--perf-history URL) or from one "
            "report (--perf-schedule=REPORT.json)"
        )
    return Schedule(history=url, max_memory=memory)


def _profile(option: Any, getini: Any) -> tuple[Optional[str], float]:
    """--perf-profile (ini perf_profile): (None when off, else slow | all, the threshold)."""
    mode = _first(getattr(option, "perf_profile", None), _ini(getini, "perf_profile"))
    if mode is not None and mode not in PROFILE_MODES:
        raise SettingError(f"perf_profile in the ini file: {mode!r} is not off, slow or all")
    over = getattr(option, "perf_profile_over", None)
    if over is None:
        raw = _ini(getini, "perf_profile_over")
        try:
            over = nonneg_float(raw) if raw else DEFAULT_PROFILE_OVER
        except argparse.ArgumentTypeError as exc:
            raise SettingError(f"perf_profile_over in the ini file: {exc}") from None
    return (None if mode in (None, "off") else mode), float(over)


def endpoint_ok(endpoint: str) -> bool:
    """ipc://PATH, tcp://HOST:PORT or tcp://[IPv6]:PORT."""
    if endpoint.startswith("ipc://"):
        return len(endpoint) > len("ipc://")
    if endpoint.startswith("tcp://"):
        host, _, port = endpoint[len("tcp://") :].rpartition(":")
        if host.startswith("["):
            if not host.endswith("]") or len(host) < 3:
                return False
        elif ":" in host or "[" in host or "]" in host:
            return False  # an IPv6 literal goes in brackets
        return bool(host) and port.isdigit() and 0 < int(port) < 65536
    return False


@dataclass(frozen=True)
class Settings:
    """Everything --perf-monitor needs, resolved once in pytest_configure."""

    output: str  # absolute path of the report
    interval: float = DEFAULT_INTERVAL
    system_info: bool = True
    print_summary: bool = False
    daemon: Optional[str] = None  # endpoint of a perfmon-daemon to join, else spawn a monitor
    limit_mode: str = DEFAULT_LIMIT_MODE  # --perf-limits: fail | warn | off
    limits: tuple = ()  # ((metric, value), ...): every test's limits unless a marker overrides
    history: Optional[str] = None  # the history store's URL (normalised), written by the collector
    labels: tuple = ()  # ((key, value), ...) from --perf-label, for the history store
    rootdir: Optional[str] = None  # where the collector asks git for the commit
    html: Optional[str] = None  # absolute path of the HTML page, written by the collector
    profile: Optional[str] = None  # --perf-profile: slow | all (None: off)
    profile_over: float = DEFAULT_PROFILE_OVER  # --perf-profile-over, seconds
    #: tcp://HOST:PORT where the collector listens (CURVE) for remote workers' relays; None:
    #: no worker can be remote (plain popen specs) and --perf-listen was not given
    listen: Optional[str] = None


def _first(*values: Any) -> Any:
    for v in values:
        if v is not None and v != "":
            return v
    return None


def _history(option: Any, getini: Any, invocation_dir: str, environ: Any) -> Optional[str]:
    """--perf-history > PERFMON_HISTORY > ini perf_history, checked (no connection) and
    normalised: a relative SQLite path is taken from the directory pytest was started in."""
    url = _first(
        getattr(option, "perf_history", None),
        environ.get("PERFMON_HISTORY"),
        _ini(getini, "perf_history"),
    )
    if url is None:
        return None
    from pytest_perfmon.monitor.history.url import URLError, check_url, normalize  # stdlib only

    if "://" not in url:
        url = os.path.join(invocation_dir, os.path.expanduser(url))
    problem = check_url(url)
    if problem is not None:
        raise SettingError(problem)
    try:
        return normalize(url)
    except URLError as exc:  # pragma: no cover - check_url ran normalize already
        raise SettingError(f"--perf-history: {exc}") from None


def resolve(
    option: Any,
    getini: Any,
    invocation_dir: str,
    environ: Optional[Mapping[str, str]] = None,
    rootdir: Optional[str] = None,
) -> Optional[Settings]:
    """Resolve the settings; None when monitoring is off. Raises SettingError on bad values.

    ``option`` is pytest's ``config.option``, ``getini`` its ``config.getini``.
    """
    environ = os.environ if environ is None else environ
    enabled = _first(option.perf_monitor, ini_bool(getini, "perf_monitor"))
    if not enabled:
        return None
    interval = option.perf_cpu_interval
    if interval is None:
        raw = str(getini("perf_cpu_interval") or "").strip()
        try:
            interval = parse_interval(raw) if raw else DEFAULT_INTERVAL
        except argparse.ArgumentTypeError as exc:
            raise SettingError(f"perf_cpu_interval in the ini file: {exc}") from None
    output = _first(option.perf_output, getini("perf_output")) or DEFAULT_OUTPUT
    output = os.path.abspath(os.path.join(invocation_dir, os.path.expanduser(output)))
    _regular_file("--perf-output", output)
    daemon = _first(option.perf_daemon, environ.get("PERFMON_DAEMON"), getini("perf_daemon"))
    if daemon is not None and not endpoint_ok(daemon):
        raise SettingError(
            f"--perf-daemon: {daemon!r} is not an endpoint like ipc:///PATH, tcp://HOST:PORT "
            "or tcp://[IPv6]:PORT"
        )
    limit_mode, limits = resolve_limits(option, getini)
    html = _first(getattr(option, "perf_html", None), _ini(getini, "perf_html"))
    if html is not None:
        html = os.path.abspath(os.path.join(invocation_dir, os.path.expanduser(html)))
        _regular_file("--perf-html", html)
    ini_bool(getini, "perf_children")  # read by _fixtures; a bad value is an error here, at start
    profile, profile_over = _profile(option, getini)
    return Settings(
        output=output,
        interval=float(interval),
        system_info=bool(
            _first(option.perf_system_info, ini_bool(getini, "perf_system_info"), True)
        ),
        print_summary=bool(
            _first(option.perf_print_summary, ini_bool(getini, "perf_print_summary"))
        ),
        daemon=daemon,
        limit_mode=limit_mode,
        limits=limits,
        history=_history(option, getini, invocation_dir, environ),
        labels=_labels(option),
        rootdir=rootdir,
        html=html,
        profile=profile,
        profile_over=profile_over,
        listen=_listen(option),
    )


def _listen(option: Any) -> Optional[str]:
    """--perf-listen HOST[:PORT], else where remote workers may be (xdist's --px and --tx)."""
    from ._remote import listen_endpoint

    try:
        specs = [*(getattr(option, "px", None) or ()), *(getattr(option, "tx", None) or ())]
        return listen_endpoint(getattr(option, "perf_listen", None), specs)
    except ValueError as exc:
        raise SettingError(f"--perf-listen: {exc}") from None


def make_output_directory(settings: Settings) -> None:
    """Create the missing parent directories of the report (and of the HTML page), as
    --junitxml does."""
    for option, path in (("--perf-output", settings.output), ("--perf-html", settings.html)):
        if path is None:
            continue
        directory = os.path.dirname(path)
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise SettingError(
                f"{option}: cannot create the directory {directory}: {exc.strerror or exc}"
            ) from None
