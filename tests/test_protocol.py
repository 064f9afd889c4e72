"""The wire: every documented message kind round-trips (pack -> unpack -> parse), and every
parser refuses bodies of the wrong shape with E_FIELD."""

from __future__ import annotations

import math
import os

import pytest
from helpers import MB, record
from pytest_perfmon.monitor import protocol, server
from pytest_perfmon.monitor.collector import Monitor
from pytest_perfmon.monitor.daemon.core import Daemon


def wire(kind: str, body):
    """What a collector sees of a message: packed, unpacked, parsed."""
    got_kind, got_body = protocol.unpack(protocol.pack(kind, body))
    assert got_kind == kind
    return protocol.PARSERS[kind](got_body)


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
    h = wire(protocol.HELLO, body)
    assert h == protocol.Hello(
        "worker", os.getpid(), "gw3", "0123abcd" * 4, body["methods"], "3.12.1", False
    )
    # the controller's hello carries no worker; an old client no role
    h = wire(protocol.HELLO, {"session": "s1", "role": "controller", "pid": 7})
    assert (h.role, h.worker, h.methods, h.python) == (
        "controller",
        "main",
        {"rss": False, "peak": False},
        None,
    )
    assert wire(protocol.HELLO, {"pid": 7}).role == "local"


def test_batch_round_trip_decodes_node_ids_and_counts_rejects():
    good = record(b"t.py::test_\xff")
    b = wire(protocol.BATCH, [3, [good, record(7), ["short"], record(b"t.py::test_y")]])
    assert b.seq == 3 and b.rejected == 2
    assert [r[protocol.NODEID] for r in b.records] == ["t.py::test_\\xff", "t.py::test_y"]
    assert b.records[0][protocol.RSS_PEAK] == 2 * MB


def test_crash_round_trip():
    body = {"nodeid": b"t.py::test_boom", "worker": "gw1", "time": 5.0, "start": 4.0}
    body["recent"] = [record(b"t.py::test_before"), "junk"]
    c = wire(protocol.CRASH, body)
    assert (c.nodeid, c.worker, c.time, c.start, c.rejected) == (
        "t.py::test_boom",
        "gw1",
        5.0,
        4.0,
        1,
    )
    assert [r[protocol.NODEID] for r in c.recent] == ["t.py::test_before"]
    c = wire(protocol.CRASH, {"nodeid": "t.py::x", "worker": None, "start": None})
    assert (c.worker, c.time, c.start, c.recent) == (None, None, None, [])


def test_bye_finish_status_stop_round_trip():
    assert wire(protocol.BYE, {"sent": 12}) == protocol.Bye(12)
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
    f = wire(protocol.FINISH, body)
    assert f == protocol.Finish("abc", 1.5, 2.5, 1, "8.3.0", ["w1", "w2"], "/tmp/x.json", True, 4)
    assert f.as_session()["exit_status"] == 1 and "session" in f.as_session()
    empty = wire(protocol.FINISH, {})
    assert empty.records_dropped == 0 and empty.as_session() == {
        "warnings": [],
        "records_dropped": 0,
    }
    assert wire(protocol.STATUS, None) is None and wire(protocol.STOP_KIND, None) is None


def test_every_client_kind_has_a_parser_and_a_handler():
    assert set(protocol.PARSERS) == set(protocol.CLIENT_KINDS)
    assert set(Daemon.KINDS) == set(protocol.CLIENT_KINDS)
    assert Monitor.KINDS <= set(protocol.CLIENT_KINDS + protocol.REMOTE_KINDS)
    for kind in protocol.CLIENT_KINDS:
        assert callable(getattr(Daemon, server.METHODS[kind]))
    for kind in Monitor.KINDS:
        assert callable(getattr(Monitor, server.METHODS[kind]))


BAD = [
    (protocol.HELLO, [1, 2]),
    (protocol.HELLO, {"pid": "1"}),
    (protocol.HELLO, {"pid": True}),
    (protocol.HELLO, {"pid": 1, "role": "admin"}),
    (protocol.HELLO, {"pid": 1, "worker": ["gw0"]}),
    (protocol.HELLO, {"pid": 1, "worker": "x" * 201}),
    (protocol.HELLO, {"pid": 1, "session": "a b"}),
    (protocol.HELLO, {"pid": 1, "methods": [1]}),
    (protocol.HELLO, {"pid": 1, "python": 3.12}),
    (protocol.BATCH, {"seq": 0}),
    (protocol.BATCH, [0, {}]),
    (protocol.BATCH, ["0", []]),
    (protocol.BATCH, [-1, []]),
    (protocol.BATCH, [2**40, []]),
    (protocol.CRASH, {"nodeid": None}),
    (protocol.CRASH, {"nodeid": "x", "worker": ["gw0"]}),  # this one used to kill the monitor
    (protocol.CRASH, {"nodeid": "x", "worker": {"a": 1}}),
    (protocol.CRASH, {"nodeid": "x", "time": math.nan}),
    (protocol.CRASH, {"nodeid": "x", "start": math.inf}),
    (protocol.CRASH, {"nodeid": "x", "recent": {"a": 1}}),
    (protocol.BYE, {"sent": -1}),
    (protocol.BYE, {"sent": 1.0}),
    (protocol.BYE, [3]),
    (protocol.FINISH, [1]),
    (protocol.FINISH, {"exit_status": "1"}),
    (protocol.FINISH, {"start": math.nan}),
    (protocol.FINISH, {"output": 7}),
    (protocol.FINISH, {"output": "/a\0b"}),
    (protocol.FINISH, {"warnings": "w"}),
    (protocol.FINISH, {"records_dropped": -1}),
    (protocol.FINISH, {"system_info": 1}),
    (protocol.STATUS, [1]),
    (protocol.STOP_KIND, "now"),
]


@pytest.mark.parametrize("kind,body", BAD, ids=[f"{k}-{i}" for i, (k, _) in enumerate(BAD)])
def test_bad_bodies_are_field_errors(kind, body):
    with pytest.raises(protocol.ProtocolError) as err:
        wire(kind, body)
    assert err.value.code == protocol.E_FIELD


@pytest.mark.parametrize(
    "field,value",
    [
        (protocol.START, math.nan),
        (protocol.STOP, math.inf),
        (protocol.CPU, -1.0),
        (protocol.RSS_PEAK, "big"),
        (protocol.OUTCOME, "crashed"),
        (protocol.WALL, True),
    ],
)
def test_record_fields_checked_by_name(field, value):
    rec = record()
    rec[field] = value
    with pytest.raises(protocol.ProtocolError) as err:
        protocol.check_record(rec)
    assert err.value.code == protocol.E_FIELD


def test_unpack_errors():
    for frame, code in [
        (b"\xc1", protocol.E_MALFORMED),
        (protocol.pack("x")[:-1], protocol.E_MALFORMED),
        (b"\x93\x02\xa1x\xc0", protocol.E_VERSION),
        (b"\x93\xc3\xa1x\xc0", protocol.E_VERSION),  # True is not version 1
        (b"\x93\x01\x05\xc0", protocol.E_MALFORMED),  # kind not a string
        (b"\x92\x01\xa1x", protocol.E_MALFORMED),
        (b"\x00" * (protocol.MAX_FRAME + 1), protocol.E_TOO_LARGE),
    ]:
        with pytest.raises(protocol.ProtocolError) as err:
            protocol.unpack(frame)
        assert err.value.code == code, frame[:10]
    # the text "1" is not version 1, and the answer says which was sent
    with pytest.raises(protocol.ProtocolError, match="protocol version '1', expected 1"):
        protocol.unpack(b"\x93\xa11\xa1x\xc0")


def test_interval_bounds():
    assert server.interval("0.01") == 0.01
    assert server.interval("3599.9") == 3599.9
    for text in ("0.001", "1e-9", "0", "-1", "nan", "inf", "x", "3600", "1e9"):
        with pytest.raises(Exception, match="at least 0.01 and below 3600 seconds|not a number"):
            server.interval(text)


def test_missing_batches():
    assert server.missing({0, 2}, 4) == [1, 3]
    assert server.missing(set(), 0) == []
    assert len(server.missing(set(), 10**6)) == server.MAX_MISSING
