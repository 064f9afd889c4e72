"""The wire between the pytest plugin and its collector: every message, packing, parsing, errors.

The collector is either the monitor the plugin spawned (``pytest_perfmon.monitor.collector``) or a
``perfmon-daemon`` (``pytest_perfmon.monitor.daemon``). Both read messages only through the
``parse_<kind>`` functions below, which return checked, typed values or raise
:class:`ProtocolError` with ``E_FIELD``.

Each ZeroMQ message is one msgpack frame holding an array ``[VERSION, KIND, BODY]``.
Clients (the plugin in pytest or in an xdist worker) hold a DEALER socket and connect; the
collector holds a ROUTER socket and binds, so a client may send before the collector is up.

Kinds sent by clients (fields in brackets are optional):

``hello``   BODY = {"role": "local"|"controller"|"worker", "pid": int, ["worker": str|None],
            ["session": str|None], ["methods": {"rss": bool, "peak": bool, "children": bool}],
            ["python": str], ["system_info": bool]}.  ``worker`` defaults to "main";
            ``session`` is the pytest session's id (required by a daemon: an xdist controller
            and its workers share it); ``methods`` says which boundary counters the process can
            read (``children``: it reads RUSAGE_CHILDREN and wants its descendants sampled);
            ``python`` is its version; ``system_info`` false asks for no system block (a
            daemon honours it even when the session dies before its finish);
            ``profile`` {"mode": "slow"|"all", "over": float} asks a spawned monitor to sample
            this process with py-spy (``--perf-profile``; a daemon ignores it).
            Reply ``ready`` {"monitor_pid": int, ["session": str]} or ``error``.
``batch``   BODY = [seq, [record, ...]]: ``seq`` counts the sender's batches from 0, so that a
            resent batch is taken once.  A record is the list of ``RECORD_FIELDS``.  No
            reply (fire and forget, the hot path); records of the wrong shape are counted as
            rejected, the others kept.
``crash``   BODY = {"nodeid": str|bytes, "worker": str|None, ["time": float],
            ["start": float|None], ["recent": [record, ...]]}; no reply.  Sent by the xdist
            controller when a worker died while running ``nodeid``; ``recent`` holds the tests
            that worker finished last, as the controller saw them (some may not have reached the
            collector).
``bye``     BODY = {"sent": int}: the number of batches sent.  Reply ``ack``
            {"missing": [seq, ...]} (at most 10,000): the batches that never arrived, which the
            client resends before saying bye again.  A client's last message.
``finish``  BODY = {["session": str], ["start": float], ["stop": float],
            ["exit_status": int|None], ["pytest_version": str], ["warnings": [str, ...]],
            ["output": str], ["system_info": bool], ["records_dropped": int],
            ["history": str|None], ["labels": {str: str}], ["rootdir": str],
            ["html": str|None], ["shard": {"k": int, "n": int, "source": str, "tests": int,
            ...}]}.  Sent by the
            process that owns the collector (or, to a daemon, the session's owner): write the
            session's report (a daemon: to ``output``; a spawned monitor: to the ``--output``
            it was started with, and the plugin sends it no ``output``); when ``html`` (an
            absolute path) is given, write the HTML page of the report there; then, when
            ``history`` (a history store URL, see ``pytest_perfmon.monitor.history``) is given,
            append the run to that store with ``labels`` (at most 100; ``commit``/``branch``
            override what the collector finds) and ``rootdir`` (where to ask ``git`` for the
            commit).  Reply ``done`` {"ok": bool, "path": str|None, "error": str|None,
            "saved_to": str|None, "history_warning": str|None, "html_warning": str|None}:
            ``error`` says why the report is not at ``path`` and where it was saved instead;
            the warnings, the one-line problem of the history store or of the HTML page, if
            any (the report is written all the same).  A spawned monitor then exits; a daemon
            closes that session only.  ``shard`` (``--perf-shard``) goes into the report as
            ``session.shard`` (its fields: the schema's).

Two more kinds, for a daemon, which need no ``hello`` first:

``status``  BODY = None (or {}); reply ``status-reply``: the daemon's live state (see
            ``pytest_perfmon.monitor.daemon.status``).
``stop``    BODY = None (or {}); reply ``stopping`` {"pid": int}: close every open session as
            aborted, write the combined report, exit 0.

Any message may be answered ``error`` {"code": int, "name": str, "message": str} (codes E_*).

Node ids travel as bytes (``surrogateescape`` on the sender) so that ids that are not valid
UTF-8 survive the trip; the collector decodes them with ``backslashreplace``.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple, Optional

import msgpack

from . import argtypes
from .record import (  # noqa: F401 - re-exported: the record is part of the wire
    CALL,
    CPU,
    EXTRA,
    N_FIELDS,
    NODEID,
    OUTCOME,
    RECORD_FIELDS,
    RSS_END,
    RSS_PEAK,
    RSS_START,
    SETUP,
    START,
    STOP,
    TEARDOWN,
    WALL,
)

VERSION = 1

#: Largest frame the monitor accepts; a batch of 256 records with long node ids fits easily.
MAX_FRAME = 8 * 1024 * 1024

HELLO = "hello"
READY = "ready"
BATCH = "batch"
CRASH = "crash"
BYE = "bye"
ACK = "ack"
FINISH = "finish"
DONE = "done"
ERROR = "error"
STATUS = "status"
STATUS_REPLY = "status-reply"
STOP_KIND = "stop"  # not STOP: that name is the record position below
STOPPING = "stopping"
#: A relay's samples of one remote worker (monitor/relay.py), on that worker's connection.
SAMPLES = "samples"
#: The xdist controller hands over a remote worker's records that no relay could deliver.
HANDBACK = "handback"

#: Every kind a client may send, in the order of the docstring.
CLIENT_KINDS = (HELLO, BATCH, CRASH, BYE, FINISH, STATUS, STOP_KIND)
#: The kinds only a spawned monitor takes: from remote workers' relays, and the controller.
REMOTE_KINDS = (SAMPLES, HANDBACK)

#: Hard cut: frames over this many bytes are dropped by ZeroMQ itself (the connection is closed)
#: before the daemon sees them; between MAX_FRAME and this they are answered with E_TOO_LARGE.
HARD_MAX_FRAME = 2 * MAX_FRAME

#: Stable numeric error codes, sent in ``error`` replies and counted in the report.
E_MALFORMED = 1  # not msgpack, or not [version, kind, body]
E_VERSION = 2  # protocol version this monitor does not speak
E_KIND = 3  # unknown message kind
E_FIELD = 4  # a field of the wrong type or shape
E_TOO_LARGE = 5  # frame over MAX_FRAME
E_PID = 6  # hello for a pid that is not ours / does not exist
E_UNKNOWN_PEER = 7  # batch from a client that never said hello
E_SESSION = 8  # daemon: hello or message for a session that is already closed
E_INTERNAL = 9  # the collector failed on a message (a bug): counted, answered, survived

ERROR_NAMES = {
    E_MALFORMED: "malformed",
    E_VERSION: "version",
    E_KIND: "kind",
    E_FIELD: "field",
    E_TOO_LARGE: "too-large",
    E_PID: "pid",
    E_UNKNOWN_PEER: "unknown-peer",
    E_SESSION: "session-closed",
    E_INTERNAL: "internal",
}

# One test record, as the plugin builds it on the measured path: a list whose positions are
# named in pytest_perfmon.monitor.record (plain ints, so ``rec[RSS_PEAK]`` costs what ``rec[8]``
# does; every reader and writer uses the names, never a bare index):
#   NODEID     bytes (str accepted)
#   START      wall-clock time.time() when the test protocol began
#   STOP       wall-clock time.time() when it ended
#   SETUP      pytest's report.duration of the setup phase, seconds (None if not run)
#   CALL       ... of the call phase
#   TEARDOWN   ... of the teardown phase
#   OUTCOME    passed | failed | skipped | error | xfailed | xpassed | interrupted
#   RSS_START  bytes, or None where no boundary counter is readable
#   RSS_PEAK   bytes: the kernel's peak RSS between the test's boundaries, or None
#   RSS_END    bytes, or None
#   CPU        process CPU seconds used by the test
#   WALL       wall seconds over the same interval as CPU
#   EXTRA      None, or a map of optional per-test figures with string keys (each key's meaning
#              and type are the report builder's: it copies the keys it knows, checked)

#: Record fields that are a number >= 0 or None.
OPTIONAL_AMOUNTS = (SETUP, CALL, TEARDOWN, RSS_START, RSS_PEAK, RSS_END, CPU, WALL)

#: Strings travel as their UTF-8 bytes, a path's undecodable bytes (os.fsdecode's surrogate
#: escapes: a directory name that is not UTF-8) included, and come back as the same str.
_packer = msgpack.Packer(use_bin_type=True, unicode_errors="surrogateescape")


class ProtocolError(Exception):
    """A frame that breaks the protocol; ``code`` is one of the E_* constants."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def pack(kind: str, body: Any = None) -> bytes:
    return _packer.pack([VERSION, kind, body])


def unpack(frame: bytes) -> tuple[str, Any]:
    """Decode one frame into (kind, body); raise ProtocolError for anything off-protocol."""
    if len(frame) > MAX_FRAME:
        raise ProtocolError(E_TOO_LARGE, f"frame of {len(frame)} bytes over {MAX_FRAME}")
    try:
        msg = msgpack.unpackb(
            frame,
            raw=False,
            strict_map_key=True,
            max_bin_len=MAX_FRAME,
            unicode_errors="surrogateescape",
        )
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise ProtocolError(E_MALFORMED, f"not msgpack: {type(exc).__name__}") from None
    if not isinstance(msg, list) or len(msg) != 3:
        raise ProtocolError(E_MALFORMED, "frame is not [version, kind, body]")
    version, kind, body = msg
    if version != VERSION or isinstance(version, bool):
        raise ProtocolError(E_VERSION, f"protocol version {repr(version)[:20]}, expected {VERSION}")
    if not isinstance(kind, str):
        raise ProtocolError(E_MALFORMED, "kind is not a string")
    return kind, body


def error_reply(code: int, message: str) -> bytes:
    return pack(ERROR, {"code": code, "name": ERROR_NAMES.get(code, "?"), "message": message})


_NUM = (int, float)

#: The outcomes a record may carry (the report's "crashed" is the monitor's, never a record's;
#: "interrupted": the run ended while the test ran, by Ctrl-C or pytest.exit()).
OUTCOMES = frozenset(("passed", "failed", "skipped", "error", "xfailed", "xpassed", "interrupted"))
#: The outcomes of a test that a crash message reports.
CRASH_OUTCOMES = ("crashed", "interrupted")
_INF = float("inf")


def finite(v: Any) -> bool:
    """A real number (not a bool), neither NaN nor infinite."""
    return isinstance(v, _NUM) and not isinstance(v, bool) and -_INF < v < _INF


def _field(message: str) -> ProtocolError:
    return ProtocolError(E_FIELD, message)


def check_record(rec: Any) -> list:
    """Validate one record from a batch; return it with the node id decoded to str."""
    if not isinstance(rec, list) or len(rec) != N_FIELDS:
        raise _field(f"record is not a list of {N_FIELDS} fields")
    extra = rec[EXTRA]
    if extra is not None and (
        not isinstance(extra, dict) or not all(isinstance(k, str) for k in extra)
    ):
        raise _field("field extra is not null or a map with string keys")
    nodeid = rec[NODEID]
    if isinstance(nodeid, bytes):
        rec[NODEID] = nodeid.decode("utf-8", "backslashreplace")
    elif not isinstance(nodeid, str):
        raise _field("node id is not bytes or str")
    if not finite(rec[START]) or not finite(rec[STOP]):
        raise _field("start/stop are not numbers")
    for i in OPTIONAL_AMOUNTS:
        v = rec[i]
        if v is not None and (not finite(v) or v < 0):
            raise _field(f"field {RECORD_FIELDS[i]} is not a number >= 0")
    if not isinstance(rec[OUTCOME], str) or rec[OUTCOME] not in OUTCOMES:
        raise _field("outcome is not one of " + ", ".join(sorted(OUTCOMES)))
    return rec


def check_records(recs: list) -> tuple[list, int]:
    """(the valid records of ``recs``, how many were rejected)."""
    good = []
    for rec in recs:
        try:
            good.append(check_record(rec))
        except ProtocolError:
            pass
    return good, len(recs) - len(good)


def encode_nodeid(nodeid: str) -> bytes:
    """A node id as bytes: its undecodable bytes (surrogateescape) as they were; a lone
    surrogate that is no such byte (pytest's id escaping switched off) written \\udXXX."""
    try:
        return nodeid.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return nodeid.encode("utf-8", "backslashreplace")


def _decode(v: Any) -> str:
    return v.decode("utf-8", "backslashreplace") if isinstance(v, bytes) else v


#: A record's node id as text.
decode_nodeid = _decode


# --- the parsed messages -------------------------------------------------------------------------

ROLES = ("local", "controller", "worker")
SESSION_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_WORKER_ID = 200
MAX_SEQ = 10**9


class Hello(NamedTuple):
    role: str
    pid: int
    worker: str  # "main" unless an xdist worker
    session: Optional[str]
    methods: dict  # {"rss": bool, "peak": bool, ["children": True]}
    python: Optional[str]
    system_info: Optional[bool]  # whether the session's report carries a system block
    profile: Optional[dict] = None  # --perf-profile: {"mode": "slow"|"all", "over": float}
    host: Optional[str] = None  # a remote worker's host (monitor/host.py label); None: local


class Batch(NamedTuple):
    seq: int
    records: list  # the valid records, node ids decoded
    rejected: int  # records of the wrong shape, left out


class Crash(NamedTuple):
    nodeid: str
    worker: Optional[str]
    time: Optional[float]
    start: Optional[float]
    recent: list  # valid records
    rejected: int
    outcome: str = "crashed"  # or "interrupted": the run ended while the test ran
    setup: Optional[float] = None  # pytest's setup duration, when its report came
    rerun: bool = False  # pytest-rerunfailures runs the test again

    def entry(self, now: float) -> dict:
        """The test as the report builder takes it (``RunData.crashed``)."""
        return {
            "nodeid": self.nodeid,
            "worker": self.worker,
            "time": self.time if self.time is not None else now,
            "start": self.start,
            "outcome": self.outcome,
            "setup": self.setup,
            "rerun": self.rerun,
        }


class Bye(NamedTuple):
    sent: int


class Finish(NamedTuple):
    session: Optional[str]
    start: Optional[float]
    stop: Optional[float]
    exit_status: Optional[int]
    pytest_version: Optional[str]
    warnings: list
    output: Optional[str]
    system_info: Optional[bool]
    records_dropped: int
    history: Optional[str] = None
    labels: Optional[dict] = None
    rootdir: Optional[str] = None
    html: Optional[str] = None
    shard: Optional[dict] = None
    monitor_restarts: Optional[list] = None

    def as_session(self) -> dict:
        """The fields :func:`pytest_perfmon.monitor.report.build` reads, without the Nones."""
        return {
            k: v
            for k, v in self._asdict().items()
            if v is not None and k not in ("history", "labels", "rootdir", "html")
        }


def _dict(body: Any, kind: str) -> dict:
    if not isinstance(body, dict):
        raise _field(f"{kind} body is not a map")
    return body


def _opt(body: dict, key: str, types: Any, what: str) -> Any:
    v = body.get(key)
    if v is None:
        return None
    if not isinstance(v, types) or (isinstance(v, bool) and types is not bool):
        raise _field(f"{key} is not {what}")
    return v


def _opt_time(body: dict, key: str) -> Optional[float]:
    v = body.get(key)
    if v is None:
        return None
    if not finite(v):
        raise _field(f"{key} is not a finite number")
    return float(v)


def _int(v: Any, lo: int, hi: int, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise _field(f"{what} is not an int in [{lo}, {hi}]")
    return v


def _children(methods: dict) -> dict:
    """The optional ``children`` method, present only when on (hellos without it are as old)."""
    return {"children": True} if methods.get("children") is True else {}


def parse_hello(body: Any) -> Hello:
    body = _dict(body, "hello")
    pid = _int(body.get("pid"), -(2**63), 2**64, "pid")
    role = body.get("role", "local")
    if role not in ROLES:
        raise _field("role is not local, controller or worker")
    worker = _opt(body, "worker", str, "a string") or "main"
    if len(worker) > MAX_WORKER_ID:
        raise _field("worker is not a short string")
    session = _opt(body, "session", str, "a session id")
    if session is not None and not SESSION_ID.match(session):
        raise _field("session is not a session id ([A-Za-z0-9_.-]{1,64})")
    methods = _opt(body, "methods", dict, "a map") or {}
    python = _opt(body, "python", str, "a string")
    return Hello(
        role,
        pid,
        worker,
        session,
        {"rss": bool(methods.get("rss")), "peak": bool(methods.get("peak")), **_children(methods)},
        python[:50] if python is not None else None,
        _opt(body, "system_info", bool, "a bool"),
        _profile(body),
        host=_host(body),
    )


def _profile(body: dict) -> Optional[dict]:
    """A hello's optional ``profile`` request, checked."""
    p = _opt(body, "profile", dict, "a map")
    if p is None:
        return None
    if p.get("mode") not in ("slow", "all"):
        raise _field("profile mode is not slow or all")
    over = p.get("over", 1.0)
    if not finite(over) or over < 0:
        raise _field("profile over is not a finite number >= 0")
    return {"mode": p["mode"], "over": float(over)}


def _host(body: dict) -> Optional[str]:
    host = _opt(body, "host", str, "a string")
    if host is not None and not 0 < len(host) <= MAX_WORKER_ID:
        raise _field("host is not a short string")
    return host


def parse_batch(body: Any) -> Batch:
    if not isinstance(body, list) or len(body) != 2 or not isinstance(body[1], list):
        raise _field("batch body is not [seq, records]")
    seq = _int(body[0], 0, MAX_SEQ, "batch seq")
    good, bad = check_records(body[1])
    return Batch(seq, good, bad)


def parse_crash(body: Any) -> Crash:
    body = _dict(body, "crash")
    nodeid = body.get("nodeid")
    if not isinstance(nodeid, (str, bytes)):
        raise _field("crash needs a nodeid")
    worker = _opt(body, "worker", str, "a string")
    if worker is not None and len(worker) > MAX_WORKER_ID:
        raise _field("worker is not a short string")
    recent = _opt(body, "recent", list, "a list of records") or []
    outcome = _opt(body, "outcome", str, "a string") or "crashed"
    if outcome not in CRASH_OUTCOMES:
        raise _field("crash outcome is not " + " or ".join(CRASH_OUTCOMES))
    setup = _opt_time(body, "setup")
    if setup is not None and setup < 0:
        raise _field("setup is not a number >= 0")
    good, bad = check_records(recent)
    return Crash(
        _decode(nodeid),
        worker,
        _opt_time(body, "time"),
        _opt_time(body, "start"),
        good,
        bad,
        outcome,
        setup,
        bool(_opt(body, "rerun", bool, "a bool")),
    )


def parse_bye(body: Any) -> Bye:
    body = _dict(body, "bye")
    return Bye(_int(body.get("sent"), 0, MAX_SEQ, "bye's 'sent'"))


MAX_WARNINGS = 100
MAX_WARNING_LEN = 1000
MAX_LABELS = argtypes.MAX_LABELS
MAX_LABEL_KEY = argtypes.MAX_LABEL_KEY
MAX_LABEL_VALUE = argtypes.MAX_LABEL_VALUE
MAX_URL_LEN = 4096


def _labels(body: dict) -> Optional[dict]:
    labels = _opt(body, "labels", dict, "a map")
    if labels is None:
        return None
    if len(labels) > MAX_LABELS:
        raise _field(f"labels has more than {MAX_LABELS} entries")
    for k, v in labels.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise _field("labels is not a map of strings to strings")
        if not k or len(k) > MAX_LABEL_KEY or len(v) > MAX_LABEL_VALUE:
            raise _field("a label key is empty or a label too long")
    return dict(labels)


def _path_like(body: dict, key: str, what: str) -> Optional[str]:
    v = _opt(body, key, str, what)
    if v is not None and ("\0" in v or len(v) > MAX_URL_LEN or not v):
        raise _field(f"{key} is not {what}")
    return v


MAX_SHARDS = argtypes.MAX_SHARDS
MAX_SHARD_TESTS = 1000  # not_run node ids at most


def _shard(body: dict) -> Optional[dict]:
    """``shard``: a map with K and N (1 <= K <= N), its source and test count; its other
    fields are numbers, strings, booleans or short lists of them (the report's schema)."""
    shard = _opt(body, "shard", dict, "a map")
    if shard is None:
        return None
    n = _int(shard.get("n"), 1, MAX_SHARDS, "shard n")
    _int(shard.get("k"), 1, n, "shard k")
    _int(shard.get("tests"), 0, 2**53, "shard tests")
    if not isinstance(shard.get("source"), str) or len(shard["source"]) > MAX_WARNING_LEN:
        raise _field("shard source is not a short string")
    for key, v in shard.items():
        if not isinstance(key, str) or len(key) > MAX_LABEL_KEY:
            raise _field("shard has a key that is not a short string")
        if isinstance(v, list):
            if len(v) > max(MAX_SHARDS, MAX_SHARD_TESTS) or not all(
                isinstance(x, (str, int, float, list)) for x in v
            ):
                raise _field(f"shard {key} is not a short list")
        elif v is not None and not isinstance(v, (str, int, float, bool)):
            raise _field(f"shard {key} is not a number, string or list")
        if isinstance(v, float) and not finite(v):
            raise _field(f"shard {key} is not a finite number")
    return dict(shard)


def parse_finish(body: Any) -> Finish:
    body = _dict(body, "finish")
    session = _opt(body, "session", str, "a session id")
    output = _opt(body, "output", str, "a path")
    if output is not None and "\0" in output:
        raise _field("output is not a path")
    warnings = _opt(body, "warnings", list, "a list") or []
    dropped = body.get("records_dropped")
    return Finish(
        session,
        _opt_time(body, "start"),
        _opt_time(body, "stop"),
        _opt(body, "exit_status", int, "an int"),
        _opt(body, "pytest_version", str, "a string"),
        [str(_decode(w))[:MAX_WARNING_LEN] for w in warnings[:MAX_WARNINGS]],
        output,
        _opt(body, "system_info", bool, "a bool"),
        0 if dropped is None else _int(dropped, 0, 2**53, "records_dropped"),
        _path_like(body, "history", "a history URL"),
        _labels(body),
        _path_like(body, "rootdir", "a path"),
        _path_like(body, "html", "a path"),
        _shard(body),
        _restarts(body),
    )


#: How many of a worker's latest finished tests the xdist controller keeps, to tell them in
#: a ``crash`` (two batches and what a sender's half second adds): a full copy may have lost
#: older ones.
CRASH_RECENT = 2 * 128 + 64
MAX_RESTART_ENTRIES = 100
#: The most node ids a monitor_restarts entry names.
NAMED_MAX = 100


def _restarts(body: dict) -> Optional[list]:
    """``monitor_restarts``: each monitor that died mid-run, as the plugin saw it: ``at`` (a
    time), ``how`` (words), ``died_during`` (node ids), ``gap_seconds`` (None: not replaced)."""
    entries = _opt(body, "monitor_restarts", list, "a list")
    if entries is None:
        return None
    out = []
    for e in entries[:MAX_RESTART_ENTRIES]:
        e = _dict(e, "monitor_restarts entry")
        at = _opt_time(e, "at")
        if at is None:
            raise _field("a monitor_restarts entry needs its time")
        how = e.get("how")
        if not isinstance(how, str):
            raise _field("a monitor_restarts entry's how is not a string")
        during = _opt(e, "died_during", list, "a list") or []
        gap = _opt_time(e, "gap_seconds")
        out.append(
            {
                "at": at,
                "how": how[:MAX_WARNING_LEN],
                "died_during": [str(_decode(n))[:MAX_WARNING_LEN] for n in during[:NAMED_MAX]],
                "gap_seconds": None if gap is None else max(0.0, gap),
            }
        )
    return out


def _no_body(body: Any, kind: str) -> None:
    if body is not None and body != {}:
        raise _field(f"{kind} takes no body")


def parse_status(body: Any) -> None:
    _no_body(body, STATUS)


def parse_stop(body: Any) -> None:
    _no_body(body, STOP_KIND)


#: kind -> its parser, for every kind a client sends.
class Handback(NamedTuple):
    worker: str
    pid: int
    host: str
    methods: Optional[dict]
    records: list  # the valid records, node ids decoded
    rejected: int


def parse_samples(body: Any) -> dict:
    """A relay's samples of one worker: ``t``/``rss`` (times, RSS bytes), ``ct``/``c`` (its
    descendants'), ``nt``/``n``/``how`` (its noise counters'), optional ``system`` (the host's
    block) and ``peak`` (the host's concurrent peak ``[time, total, {wid: rss}]``)."""
    body = _dict(body, "samples")
    for times, values in (("t", "rss"), ("ct", "c"), ("nt", "n")):
        ts, vs = body.get(times) or [], body.get(values) or []
        if not isinstance(ts, list) or not isinstance(vs, list) or len(ts) != len(vs):
            raise _field(f"{times} and {values} are not lists of one length")
        if not all(finite(t) for t in ts):
            raise _field(f"{times} holds a time that is not a finite number")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in body.get("rss") or []):
        raise _field("rss holds a value that is not an int")
    _opt(body, "system", dict, "a map")
    _opt(body, "how", dict, "a map")
    peak = body.get("peak")
    if peak is not None and not (
        isinstance(peak, list) and len(peak) == 3 and finite(peak[0]) and isinstance(peak[2], dict)
    ):
        raise _field("peak is not [time, total, {worker: rss}]")
    return body


def parse_handback(body: Any) -> Handback:
    body = _dict(body, "handback")
    worker = _opt(body, "worker", str, "a string")
    host = _host(body)
    records = body.get("records")
    if worker is None or host is None or not isinstance(records, list):
        raise _field("handback is not {worker, host, records}")
    good, bad = check_records(records)
    pid = _int(body.get("pid", 0), 0, 2**64, "pid")
    return Handback(
        worker[:MAX_WORKER_ID], pid, host, _opt(body, "methods", dict, "a map"), good, bad
    )


PARSERS = {
    HELLO: parse_hello,
    BATCH: parse_batch,
    CRASH: parse_crash,
    BYE: parse_bye,
    FINISH: parse_finish,
    STATUS: parse_status,
    STOP_KIND: parse_stop,
}
