"""The command line of perfmon-daemon: run (the default), status, stop, rebuild.

Every usage error is one line on stderr and exit status 2; "no daemon there" (status, stop) is
exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import stat
import sys
import tempfile
from typing import Any, Optional

import zmq

from .. import about, protocol, server
from ..command import printable
from ..files import move_aside
from .client import REQUEST_TIMEOUT, answers, request
from .common import PROG, DaemonError, log, setup_logging

COMMANDS = ("run", "status", "stop", "rebuild")
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, no usage dump
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def default_endpoint(create: bool = False) -> str:
    if os.name != "posix" or not zmq.has("ipc"):
        return "tcp://127.0.0.1:47771"
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    directory = os.path.join(base, f"perfmon-{os.getuid()}")
    if create:
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            st = os.lstat(directory)
        except OSError as exc:
            raise DaemonError(f"cannot create {directory}: {exc.strerror or exc}") from None
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise DaemonError(
                f"{directory} is not a private directory (mode 0700, owned by you): "
                "remove it or pass --endpoint"
            )
    return "ipc://" + os.path.join(directory, "daemon.sock")


def check_endpoint(endpoint: str, curve: bool, binding: bool = True) -> None:
    """A usage error (DaemonError) for an endpoint that cannot be used; ``binding``: for run."""
    if endpoint.startswith("ipc://"):
        path = endpoint[len("ipc://") :]
        if not path or path.startswith("@"):
            raise DaemonError(
                f"--endpoint {endpoint}: give a file path (abstract sockets admit every user)"
            )
        if binding and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise DaemonError(f"--endpoint {endpoint}: directory does not exist")
        return
    if endpoint.startswith("tcp://"):
        host, sep, port = endpoint[len("tcp://") :].rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise DaemonError(f"--endpoint {endpoint}: expected tcp://HOST:PORT")
        if binding and host not in LOOPBACK and not curve:
            raise DaemonError(
                f"--endpoint {endpoint}: binding {host} would admit other machines; "
                "it needs --curve-secret-key FILE and --curve-client-keys DIR "
                "(or bind 127.0.0.1)"
            )
        return
    scheme = endpoint.split("://", 1)[0] if "://" in endpoint else endpoint
    raise DaemonError(f"--endpoint: unknown scheme {scheme!r} (use ipc://PATH or tcp://HOST:PORT)")


def check_output(output: str, journal: str) -> None:
    directory = os.path.dirname(output)
    if os.path.isdir(output):
        raise DaemonError(f"--output {output} is a directory")
    if os.path.exists(output) and not os.path.isfile(output):  # /dev/null, a FIFO, a socket
        raise DaemonError(f"--output {output} is not a regular file")
    if not os.path.isdir(directory):
        raise DaemonError(f"--output: directory {directory} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=".perfmon-probe-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise DaemonError(f"--output: cannot write in {directory}: {exc.strerror or exc}") from None
    if os.path.realpath(journal) == os.path.realpath(output):
        raise DaemonError(f"--journal {journal} is --output: give the journal a path of its own")
    jdir = os.path.dirname(journal)
    if os.path.isdir(journal):
        raise DaemonError(f"--journal {journal} is a directory")
    if os.path.exists(journal) and not os.path.isfile(journal):
        # a clean stop removes the journal: never a device or anything else that is not ours
        raise DaemonError(f"--journal {journal} is not a regular file")
    if not os.path.isdir(jdir):
        what = "is a file, not a directory" if os.path.exists(jdir) else "does not exist"
        raise DaemonError(f"--journal: {jdir} {what}")
    if os.path.exists(journal) and os.path.getsize(journal) > 0:
        raise DaemonError(
            f"--journal {journal} holds an earlier run: rebuild its report with "
            f"`perfmon-daemon rebuild --journal {journal} --output FILE`, then remove it"
        )


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}")
    return int(text)


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoint", help="the daemon's endpoint (default: the default endpoint)")
    p.add_argument(
        "--timeout", type=server.positive, default=REQUEST_TIMEOUT, help="seconds to wait"
    )
    p.add_argument(
        "--curve-secret-key",
        default=os.environ.get("PERFMON_CURVE_SECRET_KEY"),
        help="this client's CURVE certificate with its secret key [env: PERFMON_CURVE_SECRET_KEY]",
    )
    p.add_argument(
        "--curve-server-key",
        default=os.environ.get("PERFMON_CURVE_SERVER_KEY"),
        help="the daemon's public CURVE certificate [env: PERFMON_CURVE_SERVER_KEY]",
    )


def parser() -> argparse.ArgumentParser:
    ap = _Parser(
        prog=PROG,
        description="A long-running pytest-perfmon monitor that many pytest runs report into. "
        "Commands: run (default), status, stop, rebuild.",
    )
    about.add_version_option(ap)
    sub = ap.add_subparsers(dest="command", parser_class=_Parser)
    run = sub.add_parser("run", help="run the daemon in the foreground (the default command)")
    run.add_argument(
        "--endpoint",
        help="ipc://PATH or tcp://HOST:PORT to bind (default: ipc:// "
        "in a private directory of this user)",
    )
    run.add_argument("--output", required=True, help="the combined report (JSON)")
    run.add_argument("--journal", help="the journal (default: OUTPUT.journal)")
    run.add_argument("--keep-journal", action="store_true", help="keep it after a clean stop")
    interval_help = (
        f"sampling interval, s (at least {server.MIN_INTERVAL}, below {server.MAX_INTERVAL:.0f})"
    )
    run.add_argument("--interval", type=server.interval, default=0.1, help=interval_help)
    run.add_argument("--no-system-info", action="store_true", help="leave the system block out")
    run.add_argument("--metrics-port", type=_port, help="serve Prometheus metrics on this port")
    run.add_argument("--metrics-host", default="127.0.0.1", help="... on this address")
    run.add_argument("--curve-secret-key", help="the daemon's CURVE certificate (secret)")
    run.add_argument("--curve-client-keys", help="directory of the clients' public certificates")
    st = sub.add_parser("status", help="print the live state of a running daemon")
    _client_args(st)
    st.add_argument("--json", action="store_true", help="print the status as JSON")
    sp = sub.add_parser("stop", help="stop a running daemon (writes its combined report)")
    _client_args(sp)
    rb = sub.add_parser("rebuild", help="rebuild the reports from a journal (after a crash)")
    rb.add_argument("--journal", required=True, help="the journal a daemon left behind")
    rb.add_argument("--output", required=True, help="where to write the combined report")
    rb.add_argument("--interval", type=server.interval, default=0.1, help="the daemon's interval")
    return ap


def cmd_run(args: argparse.Namespace) -> int:
    from .core import Daemon

    curve = bool(args.curve_secret_key or args.curve_client_keys)
    if curve and not (args.curve_secret_key and args.curve_client_keys):
        raise DaemonError("CURVE needs both --curve-secret-key and --curve-client-keys")
    endpoint = args.endpoint or default_endpoint(create=True)
    check_endpoint(endpoint, curve)
    output = os.path.abspath(args.output)
    journal = os.path.abspath(args.journal or output + ".journal")
    try:
        check_output(output, journal)
    except DaemonError:
        # the same command again while its daemon runs: say so, not how to rebuild its journal
        if answers(endpoint):
            raise DaemonError(f"a perfmon-daemon already runs at {endpoint}") from None
        raise
    try:
        daemon = Daemon(
            endpoint, output, journal, args.interval, not args.no_system_info, args.keep_journal
        )
    except OSError as exc:
        raise DaemonError(f"cannot open the journal {journal}: {exc.strerror or exc}") from None
    try:
        if curve:
            daemon.use_curve(args.curve_secret_key, args.curve_client_keys)
        try:
            daemon.bind()
        except (zmq.ZMQError, OSError) as exc:
            raise DaemonError(f"cannot bind {endpoint}: {exc}") from None
        if args.metrics_port is not None:
            daemon.serve_metrics(args.metrics_host, args.metrics_port)
    except BaseException:
        daemon.close()  # removes the socket file it bound
        try:
            if os.path.getsize(journal) == 0:
                os.unlink(journal)
        except OSError:
            pass
        raise
    for signum in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", signal.SIGTERM)):
        signal.signal(signum, lambda s, f: setattr(daemon, "stop_reason", signal.Signals(s).name))
    moved, problem = move_aside(output)  # as pytest's own report: aside, never overwritten
    if moved is not None:
        log.info("the previous report at %s is now %s", output, moved)
    elif problem is not None:
        log.warning("%s", problem)
    log.info(
        "listening on %s (pid %d); output %s; journal %s",
        daemon.endpoint,
        os.getpid(),
        output,
        journal,
    )
    if daemon.metrics_url:
        log.info("metrics on %s", daemon.metrics_url)
    try:
        return daemon.run()
    finally:
        daemon.close()


def cmd_rebuild(args: argparse.Namespace) -> int:
    from ..journal import JournalError
    from .rebuild import rebuild

    if os.path.isdir(args.journal):
        raise DaemonError(f"--journal {args.journal} is a directory")
    if not os.path.exists(args.journal):
        raise DaemonError(f"--journal {args.journal}: no such file")
    if not os.path.isfile(args.journal):
        raise DaemonError(f"--journal {args.journal} is not a regular file")
    output = os.path.abspath(args.output)
    if not os.path.isdir(os.path.dirname(output)) or os.path.isdir(output):
        raise DaemonError(f"--output {output}: not a writable file path")
    if os.path.realpath(output) == os.path.realpath(args.journal):
        raise DaemonError(f"--output {output} is the journal: give the report a path of its own")
    try:
        done = rebuild(args.journal, output, args.interval)
    except JournalError as exc:  # nothing written
        raise DaemonError(f"--journal {exc}") from None
    except OSError as exc:
        print(f"{PROG}: error: cannot rebuild: {exc}", file=sys.stderr)
        return 1
    print(f"{output}: {done['sessions']} sessions, {done['tests']} tests")
    return 0


def cmd_client(args: argparse.Namespace) -> int:
    from .status import format_status

    endpoint = args.endpoint or default_endpoint()
    check_endpoint(endpoint, curve=True, binding=False)
    kind = protocol.STATUS if args.command == "status" else protocol.STOP_KIND
    body = request(endpoint, kind, args.timeout, args.curve_secret_key, args.curve_server_key)
    if args.command == "stop":
        print(f"perfmon-daemon pid {body.get('pid')} is stopping")
    elif args.json:
        print(printable(json.dumps(body, indent=2, ensure_ascii=False)))
    else:
        width = shutil.get_terminal_size((100, 24)).columns if sys.stdout.isatty() else None
        print(printable(format_status(body, width)))
    return 0


def main(argv: Optional[list] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own = ("-h", "--help", "--version")  # options of perfmon-daemon itself, not of run
    if not argv or argv[0].startswith("-") and argv[0] not in own:
        argv.insert(0, "run")
    elif argv[0] not in COMMANDS and argv[0] not in own:
        print(
            f"{PROG}: error: unknown command {argv[0]!r} (commands: {', '.join(COMMANDS)})",
            file=sys.stderr,
        )
        return 2
    args = parser().parse_args(argv)
    setup_logging()
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "rebuild":
            return cmd_rebuild(args)
        return cmd_client(args)
    except DaemonError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.status


if __name__ == "__main__":
    sys.exit(main())
