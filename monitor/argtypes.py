"""argparse types of the command lines: ``perfmon``, ``perfmon-daemon`` and the monitor
(standard library only)."""

from __future__ import annotations

import argparse
from typing import Callable

from .units import MAX_INTERVAL, MIN_INTERVAL

_INF = float("inf")


def _float(text: str, ok: Callable[[float], bool], rule: str) -> float:
    """``text`` as a number that passes ``ok``; else argparse's error: not a number, or ``rule``."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not ok(v):
        raise argparse.ArgumentTypeError(rule)
    return v


def nonneg_float(text: str) -> float:
    """A finite number >= 0."""
    return _float(text, lambda v: 0 <= v < _INF, f"must be a finite number >= 0: {text!r}")


#: The longest wait for a locked or remote store, seconds: SQLite's busy timeout is a 32-bit
#: count of milliseconds (a day is far more than any wait worth having).
MAX_WAIT = 86400.0


def wait_seconds(text: str) -> float:
    """A wait in seconds: from 0 to MAX_WAIT."""
    rule = f"must be from 0 to {MAX_WAIT:.0f} seconds: {text!r}"
    return _float(text, lambda v: 0 <= v <= MAX_WAIT, rule)


def positive(text: str) -> float:
    """A finite number > 0."""
    return _float(text, lambda v: 0 < v < _INF, f"must be > 0, got {text}")


def probability(text: str) -> float:
    """A number in (0, 1]: a significance level."""
    v = nonneg_float(text)
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1]: {text!r}")
    return v


def interval(text: str) -> float:
    """A sampling interval: a number of seconds from MIN_INTERVAL to below MAX_INTERVAL."""
    rule = f"must be at least {MIN_INTERVAL} and below {MAX_INTERVAL:.0f} seconds, got {text}"
    return _float(text, lambda v: MIN_INTERVAL <= v < MAX_INTERVAL, rule)


#: The most of anything counted on a command line (runs, rows, a store's limit): a number past
#: it is a typo, and past 2**63 SQLite cannot even take it.
MAX_COUNT = 1_000_000_000
#: The most shards or workers a plan is made for (a plan holds one bin per shard): as
#: ``--perf-shard`` allows.
MAX_SHARDS = 10_000


def positive_int(text: str, most: int = MAX_COUNT) -> int:
    """A whole number from 1 to ``most``."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 1 <= v <= most:
        raise argparse.ArgumentTypeError(f"must be from 1 to {most}: {text!r}")
    return v


def shard_count(text: str) -> int:
    """A number of shards or of workers a plan is made for: 1 to MAX_SHARDS."""
    return positive_int(text, MAX_SHARDS)


def runs_window(text: str) -> int:
    """A whole number of runs >= 2 (a trend needs two points)."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 2 <= n <= MAX_COUNT:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number of runs from 2 to {MAX_COUNT}"
        )
    return n


#: A run's labels (--perf-label, perfmon history import --label): at most this many, keys and
#: values at most this long (the collector's protocol refuses more; the store keeps keys whole).
MAX_LABELS = 100
MAX_LABEL_KEY = 128
MAX_LABEL_VALUE = 1000


def label_lengths(text: str, key: str, value: str) -> None:
    """Raise ArgumentTypeError when label ``text`` (KEY=VALUE, split into ``key`` and
    ``value``) is longer than a label may be."""
    if len(key) > MAX_LABEL_KEY or len(value) > MAX_LABEL_VALUE:
        raise argparse.ArgumentTypeError(
            f"{text[:40]!r}...: a label's KEY is at most {MAX_LABEL_KEY} characters, its VALUE "
            f"at most {MAX_LABEL_VALUE}"
        )
