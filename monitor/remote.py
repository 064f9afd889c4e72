"""The collector's side of remote xdist workers (monitor/relay.py is the other side): the
session's CURVE keys, the TCP listener, and what a relay sends (a remote worker's hello, its
samples, the records the controller hands back when no relay could deliver them).

The listener is bound on the monitor's one ROUTER socket after its ``ipc://`` endpoint, with
the CURVE options set in between: libzmq copies a socket's options into each listener when it
binds, so local workers keep the plain ``ipc://`` connection and only the TCP port demands the
session's keys (a ZAP authenticator admits the one client key of the session, nothing else).
"""

from __future__ import annotations

import os
from typing import Any, Optional

from . import protocol, sampler
from . import report as report_model

SERVER_SECRET = "server.key_secret"
CLIENTS = "clients"
LISTEN_FILE = "listen"


def _cert(path: str, public: bytes, secret: Optional[bytes]) -> None:
    """A certificate file as ``zmq.auth.load_certificate`` reads it, private (0600)."""
    lines = ["metadata", "curve", f'    public-key = "{public.decode()}"']
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode()}"')
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")


def make_keys(directory: str) -> dict:
    """The session's keys: the collector's pair and one client pair, written into the private
    ``directory`` for the monitor; returns what a relay needs (Z85 text): ``server`` (public),
    ``public`` and ``secret`` (the client's)."""
    import zmq

    server_public, server_secret = zmq.curve_keypair()
    client_public, client_secret = zmq.curve_keypair()
    _cert(os.path.join(directory, SERVER_SECRET), server_public, server_secret)
    clients = os.path.join(directory, CLIENTS)
    os.mkdir(clients, 0o700)
    _cert(os.path.join(clients, "session.key"), client_public, None)
    return {
        "server": server_public.decode(),
        "public": client_public.decode(),
        "secret": client_secret.decode(),
    }


def listen(ctx: Any, sock: Any, spec: str) -> Any:
    """``--listen DIR,tcp://HOST:PORT``: bind the CURVE TCP listener; the bound endpoint goes to
    ``DIR/listen`` (or ``error: WHY``: the monitor goes on for the local workers). Returns the
    authenticator (stopped at close), or None."""
    import zmq

    from .daemon.common import DaemonError
    from .daemon.curve import serve
    from .server import bind

    directory, _, endpoint = spec.partition(",")
    auth = None
    try:
        auth = serve(
            ctx, sock, os.path.join(directory, SERVER_SECRET), os.path.join(directory, CLIENTS)
        )
        said = bind(sock, endpoint)
    except (DaemonError, zmq.ZMQError, OSError) as exc:
        if auth is not None:
            auth.stop()
            auth = None
        said = f"error: cannot listen at {endpoint}: {exc}"
    tmp = os.path.join(directory, LISTEN_FILE + ".tmp")
    with open(tmp, "w") as f:
        f.write(said)
    os.replace(tmp, os.path.join(directory, LISTEN_FILE))
    return auth


def worker(data: report_model.RunData, h: protocol.Hello) -> report_model.Worker:
    """A remote worker's hello: its report entry (never sampled here: its relay samples it)."""
    import time

    w = report_model.Worker(wid=h.worker, pid=h.pid, joined=time.time(), boundary_methods=h.methods)
    w.host = h.host
    data.workers[h.worker] = w
    data.hosts.setdefault(h.host, {"system": None, "peak": None})
    return w


def adopt(peers: dict, h: protocol.Hello) -> Any:
    """The peer of a remote worker that says hello again (its relay was replaced): taken over
    with its records and batch numbers, so that its resent batches are not counted twice."""
    for ident, peer in list(peers.items()):
        w = peer.worker
        if w.wid == h.worker and w.host == h.host and w.pid == h.pid:
            del peers[ident]
            w.left = None
            peer.acked = False
            return peer
    return None


def samples(data: report_model.RunData, w: report_model.Worker, body: Any) -> None:
    """A relay's samples of one remote worker: its timelines, its host's system and peak."""
    if w.host is None:
        raise protocol.ProtocolError(protocol.E_FIELD, "samples from a worker that is not remote")
    b = protocol.parse_samples(body)
    sampler.add_samples(w, list(b.get("t") or ()), list(b.get("rss") or ()))
    if b.get("ct"):
        sampler.add_child_samples(w, list(b["ct"]), list(b.get("c") or ()))
    if b.get("nt"):
        sampler.add_noise_samples(w, list(b["nt"]), list(b.get("n") or ()), b.get("how"))
    host = data.hosts.setdefault(w.host, {"system": None, "peak": None})
    if b.get("system") is not None:
        host["system"] = b["system"]
    peak = b.get("peak")
    if peak is not None and (host["peak"] is None or peak[1] > host["peak"][1]):
        host["peak"] = (peak[0], peak[1], peak[2])


def handback(data: report_model.RunData, body: Any) -> None:
    """The controller's copy of a remote worker's records (its relay could not deliver them:
    they came back through xdist's workeroutput)."""
    h = protocol.parse_handback(body)
    w = data.workers.get(h.worker)
    if w is None:
        joined = min((r[protocol.START] for r in h.records), default=0.0)
        w = data.workers[h.worker] = report_model.Worker(h.worker, h.pid, joined)
        w.boundary_methods = h.methods
    w.host = h.host
    data.hosts.setdefault(h.host, {"system": None, "peak": None})
    w.add_told(h.records)
    if w.left is None and h.records:
        w.left = max(r[protocol.STOP] for r in h.records)
    if h.rejected:
        data.counters["records-rejected"] = data.counters.get("records-rejected", 0) + h.rejected
