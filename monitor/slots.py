"""Slots: what a measuring process leaves for the monitor to read after a hard exit.

Each process that runs tests (plain pytest, an xdist worker) and the xdist controller keep one
small file, ``slot-PID``, in the spawned monitor's private directory, mapped into memory
(``mmap``, shared with the page cache: what is written there survives a SIGKILL of the writer,
and writing it costs no system call):

``[0, HEAD)``       who wrote it: ``{"pid", "wid", "role"}`` (msgpack), written once
``[HEAD, DATA)``    how the process ended, when it knew: ``[reason, time]`` (``os._exit(1)``)
``[DATA, SIZE)``    a ring of msgpack objects: the records of finished tests (13-field lists,
                    exactly as in a batch), then one ``[nodeid, t0]`` pair: the test running
                    now (``nodeid`` None: none)

At each test's start the measured path writes the previous test's record and the new pair in
place of the old pair (two slice assignments to the mapping). Reading from ``DATA``, the first
pair ends the journal; whatever follows it is stale. When the ring is full the writer starts
again at ``DATA``: the records dropped then are thousands of tests old, long since sent.

Beside it, ``term-PID`` (``hup-PID``): empty unless the process received SIGTERM (SIGHUP);
:mod:`faulthandler` writes the thread's traceback there from its C signal handler, then lets
the default action end the process, so the reason is known however the process was busy.

The monitor reads the slots only when its parent is gone (:func:`read_all`), to report the test
each process was running as interrupted, the tests finished but not yet sent, and what ended
the run.
"""

from __future__ import annotations

import mmap
import os
from typing import Any, NamedTuple, Optional

import msgpack

from . import protocol
from .record import SAME_START

HEAD = 256
DATA = 512
SIZE = DATA + (1 << 20)
#: A record larger than this is left out of the ring (a journal of huge fixtures lists).
MAX_RECORD = 64 * 1024
PREFIX = "slot-"
#: The signals whose arrival leaves a mark (file prefix -> name).
SIGNAL_FILES = {"term-": "SIGTERM", "hup-": "SIGHUP"}


_pack = msgpack.Packer(use_bin_type=True).pack


class Slot:
    """The writer: one per process, in the monitor's private directory."""

    def __init__(self, directory: str, wid: str, role: str, queue: Any = None) -> None:
        self.path = os.path.join(directory, f"{PREFIX}{os.getpid()}")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            # Real zeros, not a sparse file: a page the file system could not allocate later
            # would be a SIGBUS in the measured process (a full disk).
            zeros = bytes(SIZE)
            done = 0
            while done < SIZE:
                done += os.write(fd, zeros[done:])
            self.mm = mmap.mmap(fd, SIZE)
        except BaseException:
            # A full disk: the part written would take the last free space from the session
            # (xdist's base temporary directory then failed: INTERNALERROR).
            try:
                os.unlink(self.path)
            except OSError:
                pass
            raise
        finally:
            os.close(fd)
        head = _pack({"pid": os.getpid(), "wid": wid, "role": role})
        self.mm[0 : len(head)] = head
        #: The measurer's deque of finished records, or None (the controller runs no test).
        self.queue = queue
        self.pos = DATA
        self.last: Any = None

    def _put(self, rec: Any, pair: bytes) -> None:
        mm = self.mm
        pos = self.pos
        if rec is not None and rec is not self.last:
            self.last = rec
            body = _pack(rec)
            n = len(body)
            if n <= MAX_RECORD:
                if pos + n + len(pair) > SIZE:
                    pos = DATA
                mm[pos : pos + n] = body
                self.pos = pos = pos + n
        if pos + len(pair) > SIZE:
            self.pos = pos = DATA
        mm[pos : pos + len(pair)] = pair

    def begin(self, nodeid: bytes, t0: float) -> None:
        """A test starts: the previous test's record, then this one as running. (The hot path:
        about a microsecond; never raises.)"""
        try:
            q = self.queue
            self._put(q[-1] if q else None, _pack((nodeid, t0)))
        except Exception:
            pass

    def idle(self, now: float) -> None:
        """No test runs any more (the test loop ended): the last record, and no running test."""
        try:
            q = self.queue
            self._put(q[-1] if q else None, _pack((None, now)))
        except Exception:
            pass

    def ending(self, reason: str, now: float) -> None:
        """The process knows it is ending now, and why (``os._exit(1)``)."""
        try:
            data = _pack([reason[:200], now])
            self.mm[HEAD : HEAD + len(data)] = data
        except Exception:
            pass

    def close(self) -> None:
        try:
            self.mm.close()
        except Exception:
            pass


class State(NamedTuple):
    """One slot, as read by the monitor."""

    pid: int
    wid: Optional[str]
    role: Optional[str]
    reason: Optional[str]  # "os._exit(1)", "SIGTERM", or None: not known
    ended: Optional[float]  # when the reason was noted (epoch s)
    records: list  # raw records, as in a batch
    running: Optional[tuple]  # (nodeid bytes or str, t0) of the test running, else None


def _read(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as f:
            return f.read(SIZE)
    except OSError:
        return None


def _first(data: bytes) -> Any:
    """The first msgpack object in ``data`` (zeros read as 0), or None."""
    u = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=len(data) or 1)
    u.feed(data)
    try:
        return next(u)
    except Exception:
        return None


def read(directory: str, name: str) -> Optional[State]:
    data = _read(os.path.join(directory, name))
    if data is None or len(data) < DATA:
        return None
    try:
        pid = int(name[len(PREFIX) :])
    except ValueError:
        return None
    head = _first(data[:HEAD])
    head = head if isinstance(head, dict) else {}
    reason = ended = None
    end = _first(data[HEAD:DATA])
    if isinstance(end, list) and len(end) == 2 and isinstance(end[0], str):
        reason = end[0]
        ended = end[1] if isinstance(end[1], (int, float)) else None
    records: list = []
    running = None
    u = msgpack.Unpacker(raw=False, max_buffer_size=SIZE)
    u.feed(data[DATA:])
    try:
        for obj in u:
            if not isinstance(obj, list):
                break  # zeros: never written this far
            if len(obj) == 2:  # the pair that ends the journal
                if obj[0] is not None and isinstance(obj[1], (int, float)):
                    running = (obj[0], float(obj[1]))
                break
            records.append(obj)
    except Exception:
        pass  # a torn write of a process still running: what came before stands
    wid = head.get("wid")
    role = head.get("role")
    return State(
        pid,
        wid if isinstance(wid, str) else None,
        role if isinstance(role, str) else None,
        reason,
        ended,
        records,
        running,
    )


def signal_mark(directory: str, pid: int) -> Optional[tuple]:
    """(signal name, when) if the process left a signal mark, else None."""
    for prefix, name in SIGNAL_FILES.items():
        try:
            st = os.stat(os.path.join(directory, f"{prefix}{pid}"))
        except OSError:
            continue
        if st.st_size > 0:
            return name, st.st_mtime
    return None


def read_all(directory: str) -> list:
    """Every slot in ``directory`` (the monitor's private directory), with signal marks."""
    try:
        names = sorted(n for n in os.listdir(directory) if n.startswith(PREFIX))
    except OSError:
        return []
    out = []
    for name in names:
        st = read(directory, name)
        if st is None:
            continue
        if st.reason is None:
            mark = signal_mark(directory, st.pid)
            if mark is not None:
                st = st._replace(reason=mark[0], ended=mark[1])
        out.append(st)
    return out


#: How long before the xdist controller heard of a test its worker may have begun it (the
#: worker's record and the controller's crash entry of one execution; a worker's clock).
HEARD_LATE = 5.0


def drop_duplicate_interruptions(data: Any) -> None:
    """A test the run ended in can be told twice: by its own process (a record, outcome
    ``interrupted``: Ctrl-C, pytest.exit()) and by the xdist controller or a slot (an entry in
    ``crashed``). The process's record stands, with the controller's outcome where xdist
    reported the test crashed (a KeyboardInterrupt raised in a worker's test: pytest counts
    it failed, "worker crashed"): one execution, not two."""
    _crashes_over_interruptions(data)
    if not any(c.get("outcome") == "interrupted" for c in data.crashed):
        return
    starts: dict = {}
    for w in data.workers.values():
        for r in w.records:
            starts.setdefault(r[protocol.NODEID], []).append(r[protocol.START])
    keep = []
    for c in data.crashed:
        if c.get("outcome") == "interrupted":
            mine = starts.get(c["nodeid"], ())
            s = c.get("start")
            if any(s is None or abs(x - s) < SAME_START for x in mine):
                continue
        keep.append(c)
    data.crashed = keep


def _crashes_over_interruptions(data: Any) -> None:
    """xdist's crash of a test (``pytest_handlecrashitem``: outcome ``crashed``, or none in
    the plugin's own copy) whose worker's own record of the same execution says
    ``interrupted``: the record takes the crash's outcome and the entry goes."""
    keep = []
    for c in data.crashed:
        crashed = c.get("outcome", "crashed") in ("crashed", None) and not c.get("rerun")
        w = data.workers.get(c.get("worker")) if crashed else None
        same = None
        if w is not None:
            heard = c.get("start")
            for r in w.records:
                if (
                    r[protocol.NODEID] == c["nodeid"]
                    and r[protocol.OUTCOME] == "interrupted"
                    and r[protocol.START] <= c["time"]
                    and (heard is None or r[protocol.START] >= heard - HEARD_LATE)
                ):
                    same = r
        if same is not None:
            same[protocol.OUTCOME] = "crashed"
            continue
        keep.append(c)
    data.crashed = keep
