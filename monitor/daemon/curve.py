"""CURVE for a daemon bound off loopback: the server side (an authenticator over a directory of
client certificates) and the client side (``status``/``stop`` with keys)."""

from __future__ import annotations

import os
from typing import Any, Optional

from .common import DaemonError


def serve(ctx: Any, sock: Any, secret_file: str, clients_dir: str) -> Any:
    """Make ``sock`` a CURVE server admitting the certificates in ``clients_dir``; return the
    started authenticator (stop it before the context is terminated)."""
    import zmq.auth
    from zmq.auth.thread import ThreadAuthenticator

    if not zmq.has("curve"):
        raise DaemonError("this libzmq has no CURVE support")
    if not os.path.isdir(clients_dir):
        raise DaemonError(f"--curve-client-keys: {clients_dir} is not a directory")
    try:
        public, secret = zmq.auth.load_certificate(secret_file)
    except (OSError, ValueError) as exc:
        raise DaemonError(f"--curve-secret-key: cannot load {secret_file}: {exc}") from None
    if not secret:
        raise DaemonError(f"--curve-secret-key: {secret_file} holds no secret key")
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=clients_dir)
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_server = True
    return auth


def connect(sock: Any, secret: Optional[str], server: Optional[str]) -> None:
    """Give a client socket its CURVE keys (nothing when neither is given)."""
    if not secret and not server:
        return
    import zmq.auth

    if not (secret and server):
        raise DaemonError("CURVE needs both --curve-secret-key and --curve-server-key")
    try:
        public, secret_key = zmq.auth.load_certificate(secret)
        server_key, _ = zmq.auth.load_certificate(server)
    except (OSError, ValueError) as exc:
        raise DaemonError(f"cannot load CURVE keys: {exc}") from None
    if not secret_key:
        raise DaemonError(f"{secret} holds no secret key")
    sock.curve_secretkey = secret_key
    sock.curve_publickey = public
    sock.curve_serverkey = server_key
