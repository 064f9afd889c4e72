"""xdist workers on other hosts (``--tx ssh=``, ``socket=``, proxy gateways): where the
collector listens for them, and a remote worker's relay (monitor/relay.py), started or joined.

Nothing here runs in a session without remote workers but :func:`listen_endpoint` (the
controller, at configure) and one comparison of host identities (each worker, at start).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from typing import Any, Optional

#: A remote worker waits at most this long for its host's relay to publish its endpoint.
RELAY_START_TIMEOUT = 20.0
_REMOTE_KEYS = ("ssh", "socket", "via")


def _spec_host(spec: str) -> Optional[str]:
    """The host of a remote ``--tx`` spec (None: a local popen, or a proxy's via=)."""
    for part in spec.split("//"):
        key, _, value = part.partition("=")
        key = key.split("*")[-1]
        if key == "ssh":
            return value.rsplit("@", 1)[-1].split(":")[0] or None
        if key == "socket":
            return value.rsplit(":", 1)[0].strip("[]") or None
    return None


def _may_be_remote(spec: str) -> bool:
    return any(part.partition("=")[0].split("*")[-1] in _REMOTE_KEYS for part in spec.split("//"))


def _route_to(host: str) -> str:
    """The local address the kernel would use to reach ``host`` (no packet is sent)."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((host, 9))
            return str(s.getsockname()[0])
    except OSError:
        return "127.0.0.1"


def listen_endpoint(given: Optional[str], specs: Any) -> Optional[str]:
    """``tcp://HOST:PORT`` for the collector's CURVE listener, or None (no remote worker).

    ``given``: ``--perf-listen HOST[:PORT]`` (any xdist spec: a ``popen`` worker whose Python
    runs in a container is another host); else a listener only for specs that can be remote."""
    specs = list(specs or ())
    if not specs:  # no xdist workers at all: nobody to listen for
        return None
    if given:
        host, sep, port = (
            given.rpartition(":") if given.count(":") == 1 or "]" in given else (given, "", "")
        )
        if not sep:
            host, port = given, "0"
        host = host.strip("[]")
        if not host or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"{given!r} is not HOST[:PORT]")
    else:
        remote = [s for s in specs if _may_be_remote(s)]
        if not remote:
            return None
        target = next((h for h in map(_spec_host, remote) if h), "127.0.0.1")
        host, port = _route_to(target), "0"
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def join_relay(session: str, endpoint: str, keys: dict, interval: float) -> tuple:
    """This host's relay for ``session`` (started when no worker here started it yet):
    ``(its endpoint, its directory)``, or ``(None, problem)``."""
    from pytest_perfmon.monitor.relay import directory, write_upstream

    where = directory(session)
    try:
        os.mkdir(where, 0o700)
        first = True
    except FileExistsError:
        first = False
        if not _private(where):
            return None, f"{where} is not a private directory of this user"
    except OSError as exc:
        return None, f"cannot create {where}: {exc}"
    if first:
        write_upstream(os.path.join(where, "upstream.json"), endpoint, keys)
        problem = launch_relay(where, interval)
        if problem:
            return None, problem
    return _relay_endpoint(where)


def _private(where: str) -> bool:
    """Is ``where`` a real directory of this user that nobody else may enter?"""
    import stat

    try:
        st = os.lstat(where)
    except OSError:
        return False
    mine = not hasattr(os, "getuid") or st.st_uid == os.getuid()
    return stat.S_ISDIR(st.st_mode) and mine and (os.name != "posix" or st.st_mode & 0o077 == 0)


def launch_relay(where: str, interval: float) -> Optional[str]:
    """Start the relay through the launcher (it forks and exits: the relay is never a child of
    this worker); the launcher is reaped here."""
    cmd = [
        sys.executable,
        "-m",
        "pytest_perfmon.monitor.launch",
        os.path.join(where, "relay.pid"),
        "--relay",
        where,
        "--interval",
        repr(interval),
    ]
    kwargs: dict = {"start_new_session": True} if os.name == "posix" else {}
    try:
        with open(os.path.join(where, "relay.log"), "ab") as log:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                cwd=where,
                **kwargs,
            )
        proc.wait(RELAY_START_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot start the relay: {exc}"
    return None


def _relay_endpoint(where: str) -> tuple:
    deadline = time.monotonic() + RELAY_START_TIMEOUT
    path = os.path.join(where, "endpoint")
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                return f.read().strip(), where
        except OSError:
            time.sleep(0.02)
    return None, f"the relay in {where} did not start within {RELAY_START_TIMEOUT:.0f} s"


def relay_alive(where: str) -> bool:
    try:
        with open(os.path.join(where, "relay.pid")) as f:
            pid = int(f.read())
    except (OSError, ValueError):
        return False
    if os.name != "posix":  # os.kill(pid, 0) would send CTRL_C_EVENT on Windows
        import psutil

        return bool(psutil.pid_exists(pid))
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie of a relay we are not the parent of cannot be: it was reparented
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return True


def replace_relay(where: str, interval: float) -> bool:
    """The relay died mid-run: one worker of this host starts another in the same directory
    (the others find it at the same socket); True when this one started it."""
    try:
        with open(os.path.join(where, "relay.pid")) as f:
            old = f.read().strip()
        fd = os.open(os.path.join(where, f"replaced.{old}"), os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
    except OSError:
        return False
    # relay.pid names the dead relay until the launcher names the new one (atomically)
    from ._counters import not_counted

    with not_counted():  # ours, not a process the running test started
        return launch_relay(where, interval) is None


def forget_dead_relay(where: str) -> None:
    """At a remote worker's end: a relay that died and was not replaced cannot remove its
    directory (the session's client key is in it): remove it. A live relay removes its own."""
    try:
        with open(os.path.join(where, "relay.pid")) as f:
            if os.path.exists(os.path.join(where, f"replaced.{f.read().strip()}")):
                return  # another worker is starting its replacement, which will remove it
    except OSError:
        pass
    if os.path.isdir(where) and not relay_alive(where):
        import shutil

        shutil.rmtree(where, ignore_errors=True)
