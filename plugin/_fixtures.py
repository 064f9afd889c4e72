"""Children on or off, and shared fixtures billed to the fixture, not only to the first test.

A fixture of scope session, package, module or class is set up during the setup of the first
test that needs it and torn down during the teardown of the last: pytest bills both to those
tests. :class:`SharedFixtures` times each such setup and teardown and hands them to the
measurer's counters, which put them in the test's record (EXTRA ``fixtures``: ``[name, scope,
location, "setup" | "teardown", seconds]``, with children on followed by ``[wall clock start,
processes started, children's CPU s]``; and ``shared_setup``: the seconds of the test's setup
phase spent in them). With children on, what a shared fixture's setup and teardown started and
reaped is the fixture's: the test's own counts leave it out. Function-scoped fixtures pass
through the wrapper untouched (the cost is the hook wrapper itself: scripts/bench_children.py
measures it).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional, TypeVar

import pytest

from . import _clock, _counters

_perf = _clock.perf  # the real clocks (._clock)
_time = _clock.now

#: The measurer's plugin name (``_roles.PLUGIN_NAME + "-measure"``).
MEASURER = "perfmon-session-measure"


def children_wanted(option: Any, getini: Any) -> bool:
    """--perf-children / --no-perf-children > ini perf_children > on."""
    value = getattr(option, "perf_children", None)
    if value is None:
        try:
            value = getini("perf_children")
        except (ValueError, KeyError):  # pragma: no cover - the ini option is always added
            value = None
    return True if value is None else bool(value)


def configure(config: pytest.Config, build: Callable[[], None]) -> None:
    """Run ``build`` (the role's set-up, which makes the measurer's counters and says hello)
    with children measured as asked, then time the shared fixtures of the tests it runs."""
    _counters.CHILDREN = children_wanted(config.option, config.getini)
    try:
        build()
    finally:
        _counters.CHILDREN = False
    measurer = config.pluginmanager.get_plugin(MEASURER)
    if measurer is not None:
        root = str(config.rootpath)  # new in pytest 6.1; we need 7.0
        config.pluginmanager.register(SharedFixtures(measurer, root), MEASURER + "-fixtures")


def location(func: Any, root: str) -> Optional[str]:
    """``path:line`` of a fixture function, the path relative to the rootdir when inside it."""
    for _ in range(5):
        code = getattr(func, "__code__", None)
        if code is not None:
            break
        func = getattr(func, "__wrapped__", None) or getattr(func, "__func__", None)
    else:
        return None
    if code is None:
        return None
    path = code.co_filename
    try:
        rel = os.path.relpath(path, root)
        if not rel.startswith(".."):
            path = rel
    except ValueError:  # another drive (Windows)
        pass
    return f"{path.replace(os.sep, '/')}:{code.co_firstlineno}"


_F = TypeVar("_F", bound=Callable[..., object])


def _wrapper_marker() -> Callable[[_F], _F]:
    """pluggy's new-style wrapper where it has one (pluggy >= 1.1: about 0.7 us cheaper per
    call than an old-style hookwrapper, and function-scoped fixtures pay it for nothing), else
    the old style. The wrapper's body works as either: ``return (yield)``."""
    try:
        return pytest.hookimpl(wrapper=True)
    except TypeError:  # pragma: no cover - pluggy < 1.1
        return pytest.hookimpl(hookwrapper=True)


class SharedFixtures:
    """Times the setup and teardown of every fixture of a scope wider than the function."""

    def __init__(self, measurer: Any, root: str) -> None:
        self.m = measurer
        self.root = root
        self.where: dict = {}  # FixtureDef id -> location

    @_wrapper_marker()
    def pytest_fixture_setup(self, fixturedef: Any, request: Any) -> Any:
        if fixturedef.scope == "function":
            return (yield)
        m = self.m
        counters = m.counters
        in_setup = "setup" not in m.phase  # a fixture asked for in the call is no setup cost
        name, scope = fixturedef.argname, fixturedef.scope
        key = id(fixturedef)
        loc = self.where.get(key)
        if loc is None:
            loc = self.where[key] = location(fixturedef.func, self.root) or "?"
        began = [0.0]
        now = counters.children_now  # None with children off
        base = counters.child_base
        at: list = []  # children on: [wall clock, (CPU, started), base] at the teardown's start

        def teardown_begins() -> None:
            began[0] = _perf()
            if now is not None:
                at[:] = [_time(), now(), list(base)]

        def teardown_ends() -> None:
            if began[0]:
                event = [name, scope, loc, "teardown", _perf() - began[0]]
                if at:
                    event += _children_used(at[0], at[1], at[2], now, base)
                counters.fixtures.append(event)

        # Finalizers run last-in first-out: this one after the fixture's own teardown...
        fixturedef.addfinalizer(teardown_ends)
        wall0, used0, base0 = (
            (_time(), now(), list(base)) if now is not None else (0.0, (0.0, 0), [])
        )
        t0 = _perf()
        try:
            return (yield)
        finally:
            spent = _perf() - t0
            event = [name, scope, loc, "setup", spent]
            if now is not None:
                event += _children_used(wall0, used0, base0, now, base)
            counters.fixtures.append(event)
            if in_setup:
                counters.shared += spent
            # ...and this one before it (after the teardown of the fixtures that use it).
            fixturedef.addfinalizer(teardown_begins)


def _children_used(wall0: float, used0: tuple, base0: list, now: Any, base: list) -> list:
    """What a shared fixture's setup or teardown started and its reaped children used, as the
    event's last three fields ``[wall clock start, processes started, children's CPU s]``;
    the test's counters' base moves by as much, so the test is never billed them. A shared
    fixture set up inside this one (``request.getfixturevalue``) moved the base already: its
    part is its own, not this one's."""
    cpu, n = now()
    cpu -= used0[0] + (base[0] - base0[0])
    n -= used0[1] + (base[1] - base0[1])
    base[0] += cpu
    base[1] += n
    return [round(wall0, 6), n, round(max(0.0, cpu), 6)]
