"""The wire between the pytest plugin and the monitor: every message, packing, error codes.

Each ZeroMQ message is one msgpack frame holding an array ``[VERSION, KIND, BODY]``.
Clients (the plugin in pytest or in an xdist worker) hold a DEALER socket and connect;
the monitor holds a ROUTER socket and binds, so a client may send before the monitor is up.

Kinds sent by clients:

``hello``   BODY = {"role": "local"|"controller"|"worker", "pid": int, "worker": str|None}
            reply: ``ready`` {"monitor_pid": int} or ``error``.
``batch``   BODY = [record, ...]; no reply (fire and forget, the hot path).
            A record is the list described by :data:`RECORD_FIELDS`.
``crash``   BODY = {"nodeid": str, "worker": str, "time": float}; no reply.  Sent by the xdist
            controller when a worker died while running a test.
``bye``     BODY = {"sent": int}; reply ``ack`` {"received": int}.  A client's last message.
``finish``  BODY = {session fields}; reply ``done`` {"ok": bool, "path": str, "error": str|None,
            "saved_to": str|None}.  Sent by the owner of the monitor: write the report and exit.
            Session fields: "session", "start", "stop", "exit_status", "pytest_version",
            "warnings", "output" (absolute path of the session's own report), "system_info".

With a standalone ``perfmon-daemon`` (pytest_perfmon.monitor.daemon), ``hello`` must carry
``"session": str`` (the pytest session's id, shared by the xdist controller and its workers:
one session, several DEALER peers), and ``finish`` closes that session, not the daemon.
Two more kinds, which need no ``hello`` first:

``status``  BODY = None; reply ``status-reply`` {daemon, sessions, workers, counters} (see
            perfmon.daemon.Daemon.status).
``stop``    BODY = None; reply ``stopping`` {"pid": int}: close every open session as aborted,
            write the combined report, exit 0.

Node ids travel as bytes (``surrogateescape`` on the sender) so that ids that are not valid
UTF-8 survive the trip; the report decodes them with ``backslashreplace``.
"""

from __future__ import annotations

from typing import Any

import msgpack

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
STOP = "stop"
STOPPING = "stopping"

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

ERROR_NAMES = {
    E_MALFORMED: "malformed",
    E_VERSION: "version",
    E_KIND: "kind",
    E_FIELD: "field",
    E_TOO_LARGE: "too-large",
    E_PID: "pid",
    E_UNKNOWN_PEER: "unknown-peer",
    E_SESSION: "session-closed",
}

#: Positions of one test record, as the plugin builds it on the measured path.
RECORD_FIELDS = (
    "nodeid",  # bytes
    "start",  # wall-clock time.time() when the test protocol began
    "stop",  # wall-clock time.time() when it ended
    "setup",  # pytest's report.duration of the setup phase, seconds (None if not run)
    "call",  # ... of the call phase
    "teardown",  # ... of the teardown phase
    "outcome",  # passed | failed | skipped | error | xfailed | xpassed
    "rss_start",  # bytes, or None where no boundary counter is readable
    "rss_peak",  # bytes: the kernel's peak RSS between the test's boundaries, or None
    "rss_end",  # bytes, or None
    "cpu",  # process CPU seconds used by the test
    "wall",  # wall seconds over the same interval as cpu
)
N_FIELDS = len(RECORD_FIELDS)

# Named positions of RECORD_FIELDS: plain ints, so reading ``rec[RSS_PEAK]`` costs what ``rec[8]``
# does. Every reader and writer of a record uses these, never a bare index.
(
    NODEID,
    START,
    STOP,
    SETUP,
    CALL,
    TEARDOWN,
    OUTCOME,
    RSS_START,
    RSS_PEAK,
    RSS_END,
    CPU,
    WALL,
) = range(N_FIELDS)

_packer = msgpack.Packer(use_bin_type=True)


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
        msg = msgpack.unpackb(frame, raw=False, strict_map_key=True, max_bin_len=MAX_FRAME)
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise ProtocolError(E_MALFORMED, f"not msgpack: {type(exc).__name__}") from None
    if not isinstance(msg, list) or len(msg) != 3:
        raise ProtocolError(E_MALFORMED, "frame is not [version, kind, body]")
    version, kind, body = msg
    if version != VERSION:
        raise ProtocolError(E_VERSION, f"protocol version {version!r}, expected {VERSION}")
    if not isinstance(kind, str):
        raise ProtocolError(E_MALFORMED, "kind is not a string")
    return kind, body


def error_reply(code: int, message: str) -> bytes:
    return pack(ERROR, {"code": code, "name": ERROR_NAMES.get(code, "?"), "message": message})


_NUM = (int, float)

#: The outcomes a record may carry (the report's "crashed" is the monitor's, never a record's).
OUTCOMES = frozenset(("passed", "failed", "skipped", "error", "xfailed", "xpassed"))
_INF = float("inf")


def _finite(v: Any) -> bool:
    return isinstance(v, _NUM) and not isinstance(v, bool) and -_INF < v < _INF


def check_record(rec: Any) -> list:
    """Validate one record from a batch; return it with the node id decoded to str."""
    if not isinstance(rec, list) or len(rec) != N_FIELDS:
        raise ProtocolError(E_FIELD, f"record is not a list of {N_FIELDS} fields")
    nodeid = rec[0]
    if isinstance(nodeid, bytes):
        rec[0] = nodeid.decode("utf-8", "backslashreplace")
    elif not isinstance(nodeid, str):
        raise ProtocolError(E_FIELD, "node id is not bytes or str")
    if not _finite(rec[1]) or not _finite(rec[2]):
        raise ProtocolError(E_FIELD, "start/stop are not numbers")
    for i in (3, 4, 5, 7, 8, 9, 10, 11):
        v = rec[i]
        if v is not None and (not _finite(v) or v < 0):
            raise ProtocolError(E_FIELD, f"field {RECORD_FIELDS[i]} is not a number >= 0")
    if not isinstance(rec[6], str) or rec[6] not in OUTCOMES:
        raise ProtocolError(E_FIELD, "outcome is not one of " + ", ".join(sorted(OUTCOMES)))
    return rec


def encode_nodeid(nodeid: str) -> bytes:
    return nodeid.encode("utf-8", "surrogateescape")
