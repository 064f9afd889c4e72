"""Talking to a running daemon: one request, one reply, a bounded wait."""

from __future__ import annotations

import os
import time
from typing import Any, Optional

import zmq

from .. import protocol
from ..server import ipc_path, is_ipv6
from .common import DaemonError, NoDaemon
from .curve import connect as curve_client

REQUEST_TIMEOUT = 5.0


def request(
    endpoint: str,
    kind: str,
    timeout: float = REQUEST_TIMEOUT,
    curve_secret: Optional[str] = None,
    curve_server: Optional[str] = None,
) -> Any:
    """Send one request to a daemon; its reply body.

    NoDaemon at once when an ipc:// socket file does not exist, or when nobody answers within
    ``timeout`` seconds, or when the daemon answers with an error.
    """
    path = ipc_path(endpoint)
    if path is not None and not os.path.exists(path):
        raise NoDaemon(f"no perfmon-daemon at {endpoint}")
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        curve_client(sock, curve_secret, curve_server)
        if is_ipv6(endpoint):
            sock.setsockopt(zmq.IPV6, 1)
        sock.connect(endpoint)
        sock.send(protocol.pack(kind))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sock.poll(int(left * 1000), zmq.POLLIN):
                raise NoDaemon(f"no perfmon-daemon at {endpoint} (no answer within {timeout:g} s)")
            try:
                got, body = protocol.unpack(sock.recv(zmq.NOBLOCK))
            except protocol.ProtocolError:
                continue
            if got == protocol.ERROR:
                msg = body.get("message") if isinstance(body, dict) else body
                raise NoDaemon(f"the daemon refused: {msg}")
            return body
    except zmq.ZMQError as exc:
        raise DaemonError(f"cannot connect to {endpoint}: {exc}") from None
    finally:
        sock.close(0)
        ctx.term()


def answers(endpoint: str, timeout: float = 1.0) -> bool:
    """Whether a daemon answers ``status`` at ``endpoint``."""
    try:
        request(endpoint, protocol.STATUS, timeout=timeout)
        return True
    except DaemonError:
        return False
