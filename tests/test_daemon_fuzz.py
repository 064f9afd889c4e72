"""Thousands of malformed frames at a running perfmon-daemon: it never crashes, still answers
status, and still records a normal pytest session correctly afterwards."""

from __future__ import annotations

import json
import os
import signal

import msgpack
import pytest
from conftest import validate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pytest_perfmon.monitor import protocol as P
from test_daemon import ALL, SUITE, Daemon, Pytest, Raw, names

KINDS = [P.HELLO, P.BATCH, P.CRASH, P.BYE, P.FINISH, P.STATUS, P.READY, "", "x" * 300]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
records = st.lists(
    st.one_of(
        st.lists(values, min_size=12, max_size=12),
        st.tuples(
            st.binary(max_size=30),  # node ids, mostly not UTF-8
            st.floats(),
            st.floats(),
            st.floats() | st.none(),
            st.floats() | st.none(),
            st.floats() | st.none(),
            st.sampled_from(["passed", "failed", "crashed", ""]) | st.text(max_size=5),
            st.integers(-5, 2**40) | st.none(),
            st.integers(-5, 2**40) | st.none(),
            st.integers(-5, 2**40) | st.none(),
            st.floats() | st.none(),
            st.floats() | st.none(),
        ).map(list),
        values,
    ),
    max_size=6,
)
sessions = st.sampled_from(["f" * 32, "0" * 32]) | st.text(max_size=70)
hellos = st.fixed_dictionaries(
    {
        "session": sessions,
        "pid": st.sampled_from([os.getpid(), 0, -1, 1, 2**31 + 5]) | st.integers(-(2**63), 2**63),
        "role": st.sampled_from(["local", "worker", "controller", "admin"]) | values,
        "worker": st.sampled_from(["gw0", "main"]) | values,
    },
    optional={"methods": values, "python": values},
)
bodies = st.one_of(
    values,
    hellos,
    st.tuples(st.integers(-3, 5) | values, records).map(list),  # batches
    st.fixed_dictionaries({"sent": values | st.integers(-5, 10**10)}),  # byes
    st.fixed_dictionaries(  # crashes
        {"nodeid": st.binary(max_size=20) | values, "worker": values, "recent": records},
        optional={"time": values, "start": values},
    ),
)


def _envelope(version, kind, body) -> bytes:
    if isinstance(body, dict):
        body.pop("output", None)  # never let the fuzzer choose where a report is written
    return msgpack.packb([version, kind, body], use_bin_type=True)


frames = st.one_of(
    st.binary(max_size=300),  # not msgpack, mostly
    st.builds(_envelope, st.just(P.VERSION), st.sampled_from(KINDS), bodies),
    st.builds(_envelope, st.just(P.VERSION), st.text(max_size=12), values),
    st.builds(_envelope, values, st.sampled_from(KINDS) | values, values),  # versions, kinds
    values.map(lambda v: msgpack.packb(v, use_bin_type=True)),  # not an envelope
    st.just(P.pack(P.HELLO, b"x" * (P.MAX_FRAME + 1))),  # over the size limit
).filter(lambda f: b"stop" not in f)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("fuzz"))
    try:
        d.wait_up()
        yield d
    finally:
        d.close()


@settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(batch=st.lists(frames, min_size=1, max_size=20))
def test_fuzz_frames(daemon, batch):
    c = Raw(daemon.endpoint)
    try:
        for frame in batch:
            c.send(frame)
        daemon.status(timeout=30)  # answered after everything this client sent
    finally:
        c.close()
    assert daemon.proc.poll() is None, daemon.log()


def test_after_fuzz_still_records_a_session(daemon, pytester):
    """Runs after the fuzzing (same module, same daemon)."""
    assert daemon.proc.poll() is None, daemon.log()
    before = daemon.status()
    assert sum(before["protocol_errors"].values()) > 100
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_suite=SUITE)
    run = Pytest(pytester.path, "own.json", daemon=daemon.endpoint)
    try:
        run.release.write_text("go")
        assert run.wait() == 0, run.text
    finally:
        run.close()
    rep = run.report()
    assert names(rep["tests"]) == ALL
    assert rep["session"]["collector"] == "monitor" and not rep["session"]["warnings"]
    assert daemon.status()["tests"] == before["tests"] + len(ALL)

    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0, daemon.log()
    assert "Traceback" not in daemon.log()
    combined = validate(json.loads(daemon.output.read_text(encoding="utf-8")))
    (mine,) = [s for s in combined["sessions"].values() if s["output"] == str(run.output)]
    assert mine["state"] == "finished" and mine["session"]["total_tests"] == len(ALL)
