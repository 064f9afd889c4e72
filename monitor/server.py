"""The server core the spawned monitor and perfmon-daemon share: one ROUTER socket, its binding,
the dispatch of frames by message kind, and the timer loop.

The dispatch never lets a handler take the process down: a :class:`ProtocolError` is counted
under its error name and answered; any other exception is a bug, counted as ``internal``,
answered with ``E_INTERNAL`` and passed to :meth:`RouterServer.on_internal`.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Optional

import zmq

from . import protocol
from .argtypes import interval, positive  # noqa: F401 (the monitor's and daemon's options)
from .endpoints import is_ipv6
from .units import MAX_INTERVAL, MIN_INTERVAL  # noqa: F401 (named in the options' help)


def ipc_path(endpoint: str) -> Optional[str]:
    """The socket file of an ``ipc://`` endpoint, else None."""
    return endpoint[len("ipc://") :] if endpoint.startswith("ipc://") else None


def router_socket(ctx: Any, max_frame: int, rcvhwm: int) -> Any:
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, rcvhwm)
    sock.setsockopt(zmq.MAXMSGSIZE, max_frame)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
    return sock


def bind(sock: Any, endpoint: str) -> str:
    """Bind ``sock``; return the endpoint bound (``tcp://HOST:0`` resolved to its port).

    An ipc socket file is created private (0600: only this user may connect); an IPv6 literal
    host gets the socket's IPV6 option first.
    """
    if is_ipv6(endpoint):
        sock.setsockopt(zmq.IPV6, 1)
    if endpoint.startswith("tcp://") and endpoint.endswith(":0"):
        host = endpoint.rsplit(":", 1)[0]
        return f"{host}:{sock.bind_to_random_port(host)}"
    path = ipc_path(endpoint)
    old_umask = os.umask(0o077)  # the socket file is born private ...
    try:
        sock.bind(endpoint)
    finally:
        os.umask(old_umask)
    if path:
        os.chmod(path, 0o600)  # ... and stays so
    return endpoint


#: The method that handles each kind: ``on_hello``, ..., ``on_stop``.
METHODS = {kind: "on_" + kind for kind in protocol.CLIENT_KINDS + protocol.REMOTE_KINDS}
#: The most missing batches one ``ack`` lists (the client says bye again after resending).
MAX_MISSING = 10000


def missing(seqs: set, sent: int) -> list:
    """The batch numbers below ``sent`` that never arrived (at most MAX_MISSING of them)."""
    out = []
    for seq in range(sent):
        if seq not in seqs:
            out.append(seq)
            if len(out) == MAX_MISSING:
                break
    return out


def wait_ms(seconds: float) -> int:
    """A poll's timeout in whole milliseconds, rounded up. zmq's poll takes whole ms (pyzmq
    truncates a float): rounded down, a loop woke up to a millisecond before its timer was due
    and spun in zero-timeout polls until it was, about a hundred a pass at 0.1 s, 6 ms of the
    monitor's CPU a second at rest (docs/benchmarks.md, "The monitor at rest")."""
    return math.ceil(seconds * 1000)


class RouterServer:
    """A ROUTER socket whose frames are dispatched by message kind to ``HANDLERS``.

    Subclasses set ``KINDS`` (the kinds they take), define ``on_<kind>(ident, body)`` for each,
    and set ``sock`` and ``counters``; :meth:`loop` serves until ``stop_reason`` is set.
    """

    KINDS: frozenset = frozenset()
    sock: Any
    counters: dict
    stop_reason: Optional[str] = None

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def reply(self, ident: bytes, frame: bytes) -> None:
        try:
            self.sock.send_multipart([ident, frame], zmq.NOBLOCK)
        except zmq.ZMQError:
            self.count("reply-failed")

    def on_internal(self, kind: str, exc: BaseException) -> None:
        """A handler failed (a bug): the dispatch has counted and answered it already."""

    def handle(self, parts: list) -> None:
        """Dispatch one multipart message ``[identity, frame]``; never raises."""
        if len(parts) != 2:
            self.count(protocol.ERROR_NAMES[protocol.E_MALFORMED])
            return
        ident, frame = parts
        kind = "?"
        try:
            kind, body = protocol.unpack(frame)
            if kind not in self.KINDS:
                raise protocol.ProtocolError(protocol.E_KIND, f"unknown message kind {kind[:50]!r}")
            getattr(self, METHODS[kind])(ident, body)
        except protocol.ProtocolError as exc:
            self.count(protocol.ERROR_NAMES.get(exc.code, "?"))
            self.reply(ident, protocol.error_reply(exc.code, str(exc)))
        except Exception as exc:
            self.count(protocol.ERROR_NAMES[protocol.E_INTERNAL])
            self.reply(
                ident,
                protocol.error_reply(protocol.E_INTERNAL, f"{type(exc).__name__} on {kind[:50]}"),
            )
            self.on_internal(kind, exc)

    def serve(self, poller: Any, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for frames; handle what came, at most 1000 at once
        (the caller's timers are never starved)."""
        if poller.poll(wait_ms(timeout)):
            self.handle_queued()

    def handle_queued(self, until_stop: bool = True) -> None:
        """Handle the frames already queued, at most 1000; with ``until_stop``, none after one
        that set a stop reason."""
        for _ in range(1000):
            try:
                parts = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.handle(parts)
            if until_stop and self.stop_reason is not None:
                return

    def loop(self, timers: list) -> None:
        """Serve frames until ``stop_reason`` is set, and run each timer when it is due.

        ``timers``: ``[first, period, fn]`` lists; ``fn`` runs ``first`` seconds from now, then
        every ``period`` seconds (a late run is not repeated to catch up).
        """
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        now = time.monotonic()
        due = [now + first for first, _, _ in timers]
        while self.stop_reason is None:
            self.serve(poller, max(0.0, min(due) - time.monotonic()))
            now = time.monotonic()
            for i, (_, period, fn) in enumerate(timers):
                if now >= due[i]:
                    due[i] = max(due[i] + period, now)
                    try:
                        fn()
                    except Exception as exc:  # a bug in a timer: counted, the loop goes on
                        self.count(protocol.ERROR_NAMES[protocol.E_INTERNAL])
                        self.on_internal(getattr(fn, "__name__", "timer"), exc)
