"""The wire: every documented message kind round-trips (pack -> unpack -> parse), and every
parser refuses bodies of the wrong shape with E_FIELD."""

from __future__ import annotations

import math
import os

import pytest
from helpers import MB, record
from pytest_perfmon.monitor import protocol as P
from pytest_perfmon.monitor import server
from pytest_perfmon.monitor.daemon.core import Daemon
from pytest_perfmon.monitor.monitor import Monitor


def wire(kind: str, body):
    """What a collector sees of a message: packed, unpacked, parsed."""
    got_kind, got_body = P.unpack(P.pack(kind, body))
    assert got_kind == kind
    return P.PARSERS[kind](got_body)


def test_hello_round_trip():
    body = {
        "session": "0123abcd" * 4,
        "role": "worker",
        "pid": os.getpid(),
        "worker": "gw3",
        "methods": {"rss": True, "peak": False},
        "python": "3.12.1",
        "system_info": False,
    }
    h = wire(P.HELLO, body)
    assert h == P.Hello(
        "worker", os.getpid(), "gw3", "0123abcd" * 4, body["methods"], "3.12.1", False
    )
    # the controller's hello carries no worker; an old client no role
    h = wire(P.HELLO, {"session": "s1", "role": "controller", "pid": 7})
    assert (h.role, h.worker, h.methods, h.python) == (
        "controller",
        "main",
        {"rss": False, "peak": False},
        None,
    )
    assert wire(P.HELLO, {"pid": 7}).role == "local"


def test_batch_round_trip_decodes_node_ids_and_counts_rejects():
    good = record(b"t.py::test_\xff")
    b = wire(P.BATCH, [3, [good, record(7), ["short"], record(b"t.py::test_y")]])
    assert b.seq == 3 and b.rejected == 2
    assert [r[P.NODEID] for r in b.records] == ["t.py::test_\\xff", "t.py::test_y"]
    assert b.records[0][P.RSS_PEAK] == 2 * MB


def test_crash_round_trip():
    body = {"nodeid": b"t.py::test_boom", "worker": "gw1", "time": 5.0, "start": 4.0}
    body["recent"] = [record(b"t.py::test_before"), "junk"]
    c = wire(P.CRASH, body)
    assert (c.nodeid, c.worker, c.time, c.start, c.rejected) == (
        "t.py::test_boom",
        "gw1",
        5.0,
        4.0,
        1,
    )
    assert [r[P.NODEID] for r in c.recent] == ["t.py::test_before"]
    c = wire(P.CRASH, {"nodeid": "t.py::x", "worker": None, "start": None})
    assert (c.worker, c.time, c.start, c.recent) == (None, None, None, [])


def test_bye_finish_status_stop_round_trip():
    assert wire(P.BYE, {"sent": 12}) == P.Bye(12)
    body = {
        "session": "abc",
        "start": 1.5,
        "stop": 2.5,
        "exit_status": 1,
        "pytest_version": "8.3.0",
        "warnings": ["w1", b"w2"],
        "output": "/tmp/x.json",
        "system_info": True,
        "records_dropped": 4,
    }
    f = wire(P.FINISH, body)
    assert f == P.Finish("abc", 1.5, 2.5, 1, "8.3.0", ["w1", "w2"], "/tmp/x.json", True, 4)
    assert f.as_session()["exit_status"] == 1 and "session" in f.as_session()
    empty = wire(P.FINISH, {})
    assert empty.records_dropped == 0 and empty.as_session() == {
        "warnings": [],
        "records_dropped": 0,
    }
    assert wire(P.STATUS, None) is None and wire(P.STOP_KIND, None) is None


def test_every_client_kind_has_a_parser_and_a_handler():
    assert set(P.PARSERS) == set(P.CLIENT_KINDS)
    assert set(Daemon.KINDS) == set(P.CLIENT_KINDS)
    assert Monitor.KINDS <= set(P.CLIENT_KINDS + P.REMOTE_KINDS)
    for kind in P.CLIENT_KINDS:
        assert callable(getattr(Daemon, server.METHODS[kind]))
    for kind in Monitor.KINDS:
        assert callable(getattr(Monitor, server.METHODS[kind]))


BAD = [
    (P.HELLO, [1, 2]),
    (P.HELLO, {"pid": "1"}),
    (P.HELLO, {"pid": True}),
    (P.HELLO, {"pid": 1, "role": "admin"}),
    (P.HELLO, {"pid": 1, "worker": ["gw0"]}),
    (P.HELLO, {"pid": 1, "worker": "x" * 201}),
    (P.HELLO, {"pid": 1, "session": "a b"}),
    (P.HELLO, {"pid": 1, "methods": [1]}),
    (P.HELLO, {"pid": 1, "python": 3.12}),
    (P.BATCH, {"seq": 0}),
    (P.BATCH, [0, {}]),
    (P.BATCH, ["0", []]),
    (P.BATCH, [-1, []]),
    (P.BATCH, [2**40, []]),
    (P.CRASH, {"nodeid": None}),
    (P.CRASH, {"nodeid": "x", "worker": ["gw0"]}),  # this one used to kill the monitor
    (P.CRASH, {"nodeid": "x", "worker": {"a": 1}}),
    (P.CRASH, {"nodeid": "x", "time": math.nan}),
    (P.CRASH, {"nodeid": "x", "start": math.inf}),
    (P.CRASH, {"nodeid": "x", "recent": {"a": 1}}),
    (P.BYE, {"sent": -1}),
    (P.BYE, {"sent": 1.0}),
    (P.BYE, [3]),
    (P.FINISH, [1]),
    (P.FINISH, {"exit_status": "1"}),
    (P.FINISH, {"start": math.nan}),
    (P.FINISH, {"output": 7}),
    (P.FINISH, {"output": "/a\0b"}),
    (P.FINISH, {"warnings": "w"}),
    (P.FINISH, {"records_dropped": -1}),
    (P.FINISH, {"system_info": 1}),
    (P.STATUS, [1]),
    (P.STOP_KIND, "now"),
]


@pytest.mark.parametrize("kind,body", BAD, ids=[f"{k}-{i}" for i, (k, _) in enumerate(BAD)])
def test_bad_bodies_are_field_errors(kind, body):
    with pytest.raises(P.ProtocolError) as err:
        wire(kind, body)
    assert err.value.code == P.E_FIELD


@pytest.mark.parametrize(
    "field,value",
    [
        (P.START, math.nan),
        (P.STOP, math.inf),
        (P.CPU, -1.0),
        (P.RSS_PEAK, "big"),
        (P.OUTCOME, "crashed"),
        (P.WALL, True),
    ],
)
def test_record_fields_checked_by_name(field, value):
    rec = record()
    rec[field] = value
    with pytest.raises(P.ProtocolError) as err:
        P.check_record(rec)
    assert err.value.code == P.E_FIELD


def test_unpack_errors():
    for frame, code in [
        (b"\xc1", P.E_MALFORMED),
        (P.pack("x")[:-1], P.E_MALFORMED),
        (b"\x93\x02\xa1x\xc0", P.E_VERSION),
        (b"\x93\xc3\xa1x\xc0", P.E_VERSION),  # True is not version 1
        (b"\x93\x01\x05\xc0", P.E_MALFORMED),  # kind not a string
        (b"\x92\x01\xa1x", P.E_MALFORMED),
        (b"\x00" * (P.MAX_FRAME + 1), P.E_TOO_LARGE),
    ]:
        with pytest.raises(P.ProtocolError) as err:
            P.unpack(frame)
        assert err.value.code == code, frame[:10]


def test_interval_lower_bound():
    assert server.interval("0.01") == 0.01
    for text in ("0.001", "1e-9", "0", "-1", "nan", "inf", "x"):
        with pytest.raises(Exception, match="at least 0.01|not a number"):
            server.interval(text)


def test_missing_batches():
    assert server.missing({0, 2}, 4) == [1, 3]
    assert server.missing(set(), 0) == []
    assert len(server.missing(set(), 10**6)) == server.MAX_MISSING
