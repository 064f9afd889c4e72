"""The ZeroMQ client of the monitor or daemon, and the thread that sends batches while tests run.

ZeroMQ sockets are not thread-safe, so the DEALER socket has one owner at a time: the main
thread until the monitor answered ``ready``, then the :class:`Sender` thread until the last test
has run (it is joined before ``bye``), then the main thread again. The measuring hooks never
touch the socket: they append records to a ``collections.deque`` (append and popleft are
atomic), and the sender takes them out every ``BATCH_SECONDS`` or as soon as ``BATCH_RECORDS``
are waiting, whichever comes first. So a finished test reaches the collector within about half
a second even while the next test runs for minutes.

Whether the peer went away is read from the socket's own connection events (a ZeroMQ socket
monitor, an inproc PAIR socket read by whoever owns the socket): a daemon that was killed or
stopped closes its end, and every wait on it ends at once instead of at its timeout. A monitor
we started that dies while tests run is noticed by the sender thread (or the xdist controller)
and replaced: :meth:`Client.reconnect` opens a new socket and hands the new monitor everything.
"""

from __future__ import annotations

import os
import struct
import threading
from collections import deque
from typing import Any, Callable, Optional

import zmq
from pytest_perfmon.monitor import protocol

from . import _clock
from ._settings import is_ipv6

_OPT_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)

_perf = _clock.perf  # the real clock (._clock)

BATCH_RECORDS = 128
#: The sender wakes at least this often: a finished test is on the wire within about this long.
BATCH_SECONDS = 0.4
BYE_TIMEOUT = 10.0
#: After the peer went: how long a reply it sent before going may still take to arrive.
LAST_LOOK = 0.2
#: ``Client._take``: the frame was not the awaited reply.
_NOTHING = object()
#: A daemon that never accepted our connection within this long is taken as absent.
CONNECT_GRACE = 2.0
SENDER_JOIN_TIMEOUT = 5.0

_EVENTS = (
    zmq.EVENT_CONNECTED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)


class Client:
    """A DEALER socket to the monitor. Batches are fire-and-forget; hello/bye/finish wait (bounded).

    Every batch frame sent is kept until the end (``frames``), so that nothing measured is lost
    if the monitor dies: the owner of the session then writes the report from these frames.
    """

    def __init__(self, endpoint: str, daemon: bool = False) -> None:
        self.endpoint = endpoint
        self.ctx = zmq.Context(io_threads=1)
        self.sock, self.events = self._socket()
        self.frames: list = []
        #: What a new collector must hear before our batches, in order (the hello; the
        #: controller's crash messages): sent again after :meth:`reconnect`.
        self.kept: list = []
        self.ready = False
        self.alive = True  # False once we know the monitor cannot take our data
        self.problem: Optional[str] = None
        self.connected = False
        self.ever_connected = False
        #: Connections the peer closed so far (a monitor that died; its replacement may be
        #: connected again by the time anyone looks, but it never heard our hello).
        self.disconnects = 0
        #: The sender thread did not stop in time and may still use the socket: the main thread
        #: never touches it again (not even to close it; the process's exit does).
        self.abandoned = False
        self.acked = False  # the collector acknowledged our goodbye
        self.unanswered = False  # it did not answer the goodbye in BYE_TIMEOUT, still there
        self.missing: list = []  # seqs the collector still lacked at its last acknowledgement
        self.born = _perf()
        # A perfmon-daemon bound to a non-loopback address speaks CURVE only; a monitor we
        # spawned never does.
        secret = os.environ.get("PERFMON_CURVE_SECRET_KEY") if daemon else None
        server = os.environ.get("PERFMON_CURVE_SERVER_KEY") if daemon else None
        if secret and server:
            try:
                from zmq.auth import load_certificate

                public, secret_key = load_certificate(secret)
                self.sock.curve_secretkey = secret_key
                self.sock.curve_publickey = public
                self.sock.curve_serverkey = load_certificate(server)[0]
            except (OSError, ValueError, zmq.ZMQError) as exc:
                self.alive = False
                self.problem = f"cannot use the CURVE keys in PERFMON_CURVE_*: {exc}"
        try:
            self.sock.connect(endpoint)
        except zmq.ZMQError as exc:  # a malformed endpoint, a path too long for ipc://
            self.alive = False
            self.problem = f"cannot connect to {endpoint}: {exc}"

    def _socket(self) -> tuple:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 100000)
        # We usually connect before the monitor has bound: retry every 10 ms at first, and
        # back off to 100 ms once the peer is gone.
        sock.setsockopt(zmq.RECONNECT_IVL, 10)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 100)
        if is_ipv6(self.endpoint):
            sock.setsockopt(zmq.IPV6, 1)
        return sock, sock.get_monitor_socket(_EVENTS)

    def reconnect(self) -> bool:
        """A new monitor replaced the one that died, at the same endpoint: a fresh socket (no
        reply of the old one left in it; the old one, reconnecting by itself, would send our
        batches to a monitor that never heard our hello), then everything it must know, in
        order: what was kept (the hello), then every batch sent so far. Called by the socket's
        owner."""
        self.close_socket()
        self.sock, self.events = self._socket()
        self.connected = self.ever_connected = False
        self.born = _perf()
        try:
            self.sock.connect(self.endpoint)
        except zmq.ZMQError as exc:
            self.alive = False
            self.problem = f"cannot connect to {self.endpoint}: {exc}"
            return False
        # A connecting DEALER queues these until the new monitor has bound.
        return all(self.send(f) for f in self.kept) and all(self.send(f) for f in self.frames)

    def close_socket(self) -> None:
        """Close the socket (and its events), to open another (:meth:`reconnect`)."""
        if self.sock.closed:
            return
        try:
            self.sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self.events.close(0)
        self.sock.close(0)

    def send_kept(self, frame: bytes) -> bool:
        """Send a frame a replacing collector must be sent again (see :meth:`reconnect`)."""
        self.kept.append(frame)
        return self.send(frame)

    # -- connection state (the socket's owner only) -----------------------------------------
    def read_events(self) -> None:
        events = self.events
        # ZMQ_EVENTS (a getsockopt, with ints: zmq's flags are enums, slow to combine) rather
        # than a poll, which builds a Poller each time
        while events.getsockopt(_OPT_EVENTS) & _POLLIN:
            # A socket monitor's message: [uint16 event, uint32 value] (native order), endpoint.
            # Read here rather than with zmq.utils.monitor, which imports asyncio (10 ms of
            # start-up in every measured process).
            try:
                event = struct.unpack("=HI", events.recv_multipart(zmq.NOBLOCK)[0][:6])[0]
            except (zmq.ZMQError, IndexError, struct.error):
                return
            if event & (zmq.EVENT_CONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED):
                self.connected = self.ever_connected = True
            elif event & zmq.EVENT_DISCONNECTED:
                self.connected = False
                self.disconnects += 1
            elif event & _FAILED:
                self.connected = False
                self.problem = "the connection was refused in its handshake (CURVE keys?)"

    def gone(self) -> bool:
        """Did the peer close a connection we had, without a new one since?"""
        self.read_events()
        return self.ever_connected and not self.connected

    # -- messages ----------------------------------------------------------------------------
    def send(self, frame: bytes) -> bool:
        try:
            self.sock.send(frame, zmq.NOBLOCK)
            return True
        except zmq.ZMQError:
            return False

    def batch(self, records: list) -> None:
        """Pack, keep and send one batch (the socket's current owner calls this)."""
        frame = protocol.pack(protocol.BATCH, [len(self.frames), records])
        self.frames.append(frame)
        if self.alive:
            self.send(frame)  # a frame that could not go now is resent after "bye" reports it

    def wait(
        self,
        kind: str,
        timeout: float,
        alive: Optional[Callable[[], bool]] = None,
        connect_grace: Optional[float] = None,
    ) -> Optional[Any]:
        """Wait at most ``timeout`` seconds for a reply of ``kind``; None on timeout or death.

        It ends early when ``alive()`` says the peer is dead, when the peer closed our
        connection, or (with ``connect_grace``) when no connection was made within that long.
        """
        deadline = _perf() + timeout
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self.events, zmq.POLLIN)
        while True:
            left = deadline - _perf()
            if left <= 0:
                return None
            ready = dict(poller.poll(int(min(left, 0.1) * 1000)))
            if self.sock in ready:
                answer = self._take(kind)
                if answer is not _NOTHING:
                    return answer
                continue
            if self.gone():
                self.problem = self.problem or "it closed the connection"
                return self._last_look(kind)
            if alive is not None and not alive():
                return self._last_look(kind)
            if (
                connect_grace is not None
                and not self.ever_connected
                and _perf() - self.born > connect_grace
            ):
                self.problem = self.problem or (
                    f"nothing accepted a connection in {connect_grace:.0f} s"
                )
                return None

    def _take(self, kind: str) -> Any:
        """One frame off the socket: the body of a ``kind`` reply, None for a refusal (said in
        ``problem``), else ``_NOTHING``."""
        try:
            got, body = protocol.unpack(self.sock.recv(zmq.NOBLOCK))
        except (protocol.ProtocolError, zmq.ZMQError):
            return _NOTHING
        if got == kind:
            return body
        if got == protocol.ERROR and isinstance(body, dict):
            self.problem = f"refused: {body.get('message')}"
            return None
        return _NOTHING

    def _last_look(self, kind: str) -> Optional[Any]:
        """The peer is gone: a reply it sent just before it went (a monitor answers ``done`` and
        exits at once) may still be on its way through ZeroMQ's I/O thread. Read what arrives
        within LAST_LOOK seconds, then give up."""
        deadline = _perf() + LAST_LOOK
        while True:
            if self.sock.poll(max(0, int((deadline - _perf()) * 1000))):
                answer = self._take(kind)
                if answer is not _NOTHING:
                    return answer
            elif _perf() >= deadline:
                return None

    def bye(self, alive: Optional[Callable[[], bool]] = None) -> bool:
        """Say goodbye; resend whatever the collector reports missing. True once all arrived."""
        for _ in range(3):
            if not self.send(protocol.pack(protocol.BYE, {"sent": len(self.frames)})):
                return False
            ack = self.wait(protocol.ACK, BYE_TIMEOUT, alive)
            if not isinstance(ack, dict):
                # nothing said it went away: it is there and did not answer (hung, stopped)
                self.unanswered = self.problem is None and ack is None
                return False
            self.acked = True
            missing = ack.get("missing") or []
            self.missing = [s for s in missing if isinstance(s, int) and 0 <= s < len(self.frames)]
            if not self.missing:
                return True
            for seq in self.missing:
                self.send(self.frames[seq])
        return False

    def records_known_lost(self) -> int:
        """Records in frames the collector said it lacked, after our last resend."""
        return len(frames_to_records([self.frames[s] for s in self.missing])) if self.acked else 0

    def close(self) -> None:
        if self.abandoned:  # a sender thread that did not stop still holds the socket
            return
        self.close_socket()
        self.ctx.term()


def frames_to_records(frames: list) -> list:
    out: list = []
    for frame in frames:
        _, (_, recs) = protocol.unpack(frame)
        out.extend(recs)
    return out


class Sender:
    """The thread that owns the client's socket while tests run and sends the queued records.

    ``queue`` and ``wake`` are shared with the measuring hooks, which append one record per
    test and set ``wake`` when ``BATCH_RECORDS`` are waiting.
    """

    def __init__(
        self,
        client: Client,
        queue: deque,
        wake: threading.Event,
        on_lost: Optional[Callable[[float, float], Any]] = None,
    ) -> None:
        self.client = client
        self.queue = queue
        self.wake = wake
        #: Called in this thread when the collector closed our connection (the monitor died),
        #: with the time it was noticed and the time of the check before: the role starts a
        #: new one, or waits for one.
        self.on_lost = on_lost
        self.checked = _clock.now()
        self.stopping = False
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, name="perfmon-sender", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        try:
            while True:
                self.wake.wait(BATCH_SECONDS)
                self.wake.clear()
                stop = self.stopping
                client = self.client
                if self.on_lost is not None and client.alive:
                    now = _clock.now()
                    seen = client.disconnects
                    client.read_events()
                    if client.disconnects != seen:
                        self.on_lost(now, self.checked)
                    self.checked = now
                self.drain()
                if stop:
                    return
        except BaseException as exc:  # never let our thread's failure reach pytest
            self.error = exc

    def drain(self) -> None:
        queue = self.queue
        popleft = queue.popleft
        while queue:
            batch: list = []
            try:
                while len(batch) < BATCH_RECORDS:
                    batch.append(popleft())
            except IndexError:
                pass
            try:
                self.client.batch(batch)
            except BaseException:
                queue.extendleft(reversed(batch))  # kept for the report, in their order
                raise

    def stop(self) -> bool:
        """Send what is queued, end the thread; True when the socket is the main thread's again."""
        self.stopping = True
        self.wake.set()
        self.thread.join(SENDER_JOIN_TIMEOUT)
        return not self.thread.is_alive()
