"""The monitor process: collects the plugin's records, samples the pytest processes, writes JSON.

Spawned by the plugin (``python -m pytest_perfmon.monitor.collector``, or the ``perfmon-monitor``
script). It binds a ROUTER socket, samples every process that introduced itself with ``hello``
every ``--interval`` seconds, and on ``finish`` delivers the report (:mod:`.deliver`: the JSON to
``--output``, the one path it writes to; then the HTML page and the history the finish asks for),
answers ``done`` and exits. It exits on its own when its parent (the pytest process that spawned
it) goes away, writing what it has as an aborted session, and then removes the plugin's private
temporary directory it was started in (nobody else is left to do it).
"""

from __future__ import annotations

import argparse
import os
import select
import shutil
import signal
import sys
import time
from typing import Any, Optional

import zmq

from . import deliver as delivery
from . import protocol, remote, sampler, server, slots
from . import report as report_model

#: How often the parent is checked, seconds.
PARENT_CHECK = 0.25
#: The prefix of the plugin's private temporary directory (tempfile.mkdtemp(prefix=...)).
TMPDIR_PREFIX = "perfmon-"
#: After the parent is gone: the frames already queued are handled for at most this long.
DRAIN_SECONDS = 0.2
#: How many running tests an abort warning names.
NAMED = 4


#: At the end: how long queued replies may still be sent, milliseconds.
CLOSE_LINGER_MS = 2000


def _die_with_parent() -> None:
    """Linux: ask the kernel to send SIGTERM when the parent dies (polling covers the rest)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Peer:
    """One connected client (pytest, an xdist worker or controller)."""

    __slots__ = ("worker", "seqs", "role", "acked", "covered")

    def __init__(self, worker: report_model.Worker, role: str) -> None:
        self.worker = worker
        self.role = role
        self.seqs: set = set()
        self.acked = False  # its bye was answered with nothing missing
        #: It died (an xdist worker), and the controller's copies of its last tests reach back
        #: to what it had sent us: no test it finished is missing.
        self.covered = False


class Monitor(server.RouterServer):
    def __init__(
        self,
        endpoint: str,
        output: str,
        interval: float,
        parent: Optional[int],
        system_info: bool,
        endpoint_file: Optional[str] = None,
        parent_fd: Optional[int] = None,
        detached: bool = False,
    ) -> None:
        self.endpoint = endpoint
        self.output = output
        self.interval = interval
        self.parent = parent
        self.system_info = system_info
        self.endpoint_file = endpoint_file
        #: Started detached (monitor/launch.py): the parent is not our parent any more; it is
        #: watched through a pidfd (Linux), else by pid and create time.
        self.detached = detached
        self.parent_fd = parent_fd
        self.parent_ctime = (
            sampler.create_time(parent) if parent is not None and parent_fd is None else None
        )
        self.data = report_model.RunData(sample_interval=interval)
        self.counters = self.data.counters  # protocol errors and drops, into the report
        self.peers: dict[bytes, Peer] = {}
        self.finisher: Optional[bytes] = None  # the peer that sent finish
        #: Started in place of one that died (--replacing), or wrote its report already: what
        #: is at the output is this session's own (write_session).
        self.replacing = False
        self.sampler = sampler.Sampler()
        self.stop_reason: Optional[str] = None
        self.python_version: Optional[str] = None
        self.started = time.time()
        self.ctx = zmq.Context()
        self.sock = server.router_socket(self.ctx, protocol.MAX_FRAME, 0)
        self.profiler: Any = None  # --perf-profile: a profile.Profiler from the first hello asking

    # -- set-up ---------------------------------------------------------------------------
    def bind(self) -> None:
        if self.endpoint.startswith("ipc://") and not zmq.has("ipc"):
            # the plugin asks the same libzmq after starting us, and reads ENDPOINT_FILE
            self.endpoint = "tcp://127.0.0.1:0"
        self.endpoint = server.bind(self.sock, self.endpoint)
        if self.listen:  # remote workers' relays: TCP with CURVE (bound after the ipc endpoint)
            self.auth = remote.listen(self.ctx, self.sock, self.listen)
        if self.endpoint_file:
            tmp = self.endpoint_file + ".tmp"
            with open(tmp, "w") as f:
                f.write(self.endpoint)
            os.replace(tmp, self.endpoint_file)

    listen: Optional[str] = None  # --listen: the CURVE directory and TCP address, or None
    auth: Any = None

    def close(self) -> None:
        # The last replies (``done``) may still be queued in ZeroMQ's I/O thread: closing with
        # no linger dropped them on a busy machine (pytest then wrote its own report and said
        # the monitor was lost, 1 run in a few hundred at load 9). Peers are local and waiting;
        # one to a peer that is gone is dropped at once: the wait is bounded and short.
        self.sock.close(CLOSE_LINGER_MS)
        if self.auth is not None:
            self.auth.stop()
        self.ctx.term()

    # -- sampling -------------------------------------------------------------------------
    def sample(self) -> None:
        if self.profiler is not None:  # the answers held until the process's py-spy samples
            for ident, ready in self.profiler.due():
                self.reply(ident, ready)
        now = time.time()
        workers = (p.worker for p in self.peers.values() if p.worker.host is None)
        total, per = self.sampler.sample_group(workers, now)
        self.data.concurrent_peak = sampler.higher_peak(self.data.concurrent_peak, now, total, per)

    # -- messages -------------------------------------------------------------------------
    def _peer(self, ident: bytes, what: str) -> Peer:
        peer = self.peers.get(ident)
        if peer is None:
            raise protocol.ProtocolError(protocol.E_UNKNOWN_PEER, f"{what} before hello")
        return peer

    def on_hello(self, ident: bytes, body: Any) -> None:
        h = protocol.parse_hello(body)
        if h.host is not None:  # an xdist worker on another host, through its relay
            again = remote.adopt(self.peers, h)  # its relay was replaced
            self.peers[ident] = again or Peer(remote.worker(self.data, h), h.role)
            self.reply(ident, protocol.pack(protocol.READY, {"monitor_pid": os.getpid()}))
            return
        if not 0 < h.pid < 2**31 or not sampler.own_process(h.pid):
            raise protocol.ProtocolError(
                protocol.E_PID, f"pid {h.pid} is not a process of this user"
            )
        if h.python is not None:
            self.python_version = h.python
        w = report_model.Worker(
            wid=h.worker, pid=h.pid, joined=time.time(), boundary_methods=h.methods
        )
        if h.role == "controller":
            w.pid = -h.pid  # the controller runs no tests: never sampled, not in the report
        else:
            self.data.workers[h.worker] = w
        self.peers[ident] = Peer(w, h.role)
        ready = protocol.pack(protocol.READY, {"monitor_pid": os.getpid()})
        if h.profile is None or w.pid <= 0 or not self.start_profile(h.profile, w, ident, ready):
            self.reply(ident, ready)  # the first test waits (with --perf-profile: for py-spy)
        if w.pid > 0:
            self.sampler.sample(w, time.time())  # a first sample, as its first test begins

    def on_batch(self, ident: bytes, body: Any) -> None:
        peer = self._peer(ident, "batch")
        b = protocol.parse_batch(body)
        if b.seq in peer.seqs:
            self.count("duplicate-batch")
            return
        peer.seqs.add(b.seq)
        peer.worker.records.extend(b.records)
        if b.rejected:
            self.count("records-rejected", b.rejected)

    def on_crash(self, ident: bytes, body: Any) -> None:
        self._peer(ident, "crash")
        c = protocol.parse_crash(body)
        self.data.crashed.append(c.entry(time.time()))
        if c.rejected:
            self.count("records-rejected", c.rejected)
        w = self.data.workers.get(c.worker) if c.worker is not None else None
        if w is None:
            return
        if w.left is None:
            w.left = time.time()
        covered = _told_reaches_back(w.records, c.recent)
        w.add_told(c.recent)  # tests the worker finished but never sent, as the controller saw
        if covered:
            for peer in self.peers.values():
                if peer.worker is w:
                    peer.covered = True

    def on_bye(self, ident: bytes, body: Any) -> None:
        peer = self._peer(ident, "bye")
        sent = protocol.parse_bye(body).sent
        missing = server.missing(peer.seqs, sent)
        if not missing:
            if peer.worker.pid > 0 and peer.worker.left is None:
                self.sampler.sample(peer.worker, time.time())  # its counters at its last test's end
            peer.worker.left = time.time()
            peer.acked = True
        self.reply(ident, protocol.pack(protocol.ACK, {"missing": missing}))

    def on_finish(self, ident: bytes, body: Any) -> None:
        f = protocol.parse_finish(body)
        self.finisher = ident
        self.data.records_dropped += f.records_dropped
        self.data.warnings.extend(f.warnings)
        done = self.write_session(f.as_session(), f)
        self.reply(ident, protocol.pack(protocol.DONE, done.done()))
        self.stop_reason = "finished"

    def on_samples(self, ident: bytes, body: Any) -> None:
        remote.samples(self.data, self._peer(ident, "samples").worker, body)

    def on_handback(self, ident: bytes, body: Any) -> None:
        self._peer(ident, "handback")
        remote.handback(self.data, body)

    KINDS = frozenset(
        (
            protocol.HELLO,
            protocol.BATCH,
            protocol.CRASH,
            protocol.BYE,
            protocol.FINISH,
            protocol.SAMPLES,
            protocol.HANDBACK,
        )
    )

    # -- --perf-profile (monitor/profile.py) ----------------------------------------------
    def start_profile(
        self, request: dict, w: report_model.Worker, ident: bytes, ready: Any
    ) -> bool:
        """Start its sampler; True when its ``ready`` waits for it (see ``sample``)."""
        if self.profiler is None:
            from . import profile

            self.profiler = profile.Profiler(request["mode"], request["over"])
        return bool(self.profiler.start(w.wid, w.pid, ident, ready))

    def finish_profiles(self, f: Optional[protocol.Finish]) -> Optional[dict]:
        """Stop the samplers, write the profiles; the report's ``session.profile`` block."""
        if self.profiler is None:
            return None
        rootdir, history = (f.rootdir, f.history) if f is not None else (None, None)
        block = self.profiler.finish(self.data.workers.values(), self.output, rootdir, history)
        self.data.warnings.extend(self.profiler.problems)
        self.profiler = None
        return block

    # -- the report -----------------------------------------------------------------------
    def possibly_incomplete(self) -> bool:
        """A process that measured tests left without an acknowledged goodbye, and nobody
        told us its last tests: its last batch (at most 0.5 s of tests) may never have reached
        us. (An xdist worker that crashed is covered by the controller's copies of its last
        tests when they reach back to what it had sent.)"""
        return any(
            not p.acked and not p.covered and p.role != "controller" and ident != self.finisher
            for ident, p in self.peers.items()
        )

    def write_session(
        self, session: dict, f: Optional[protocol.Finish] = None
    ) -> delivery.Delivered:
        """Build the report and deliver it: the JSON to ``--output``; the HTML page and the
        history only as a ``finish`` asks (an aborted session writes its JSON only)."""
        slots.drop_duplicate_interruptions(self.data)
        profile = self.finish_profiles(f)
        system = report_model.system_info(self.python_version) if self.system_info else None
        try:
            rep = report_model.build(self.data, session, system)
        except Exception as exc:  # a report must never take the monitor down silently
            return delivery.unbuilt(self.output, exc)
        if profile is not None:
            rep["session"]["profile"] = profile
        if self.possibly_incomplete():
            rep["session"]["possibly_incomplete"] = True
        # Over nothing but this session's own report: the one this monitor wrote already (a
        # finish after its aborted report), or the one of the monitor it replaced (killed by
        # SIGTERM, that one wrote its aborted report). The session moved any previous report
        # aside as it began: anything else there is another session's.
        replace = self.replacing
        if f is None:
            done = delivery.deliver(rep, self.output, replace=replace)
        else:
            done = delivery.deliver(
                rep,
                self.output,
                html=f.html,
                history=f.history,
                labels=f.labels,
                rootdir=f.rootdir,
                replace=replace,
            )
        if done.ok:
            self.replacing = True
        return done

    # -- main loop ------------------------------------------------------------------------
    def parent_alive(self) -> bool:
        if self.parent is None:
            return True
        if self.parent_fd is not None:  # readable once the process has exited
            return not select.select([self.parent_fd], [], [], 0)[0]
        if os.name == "posix" and not self.detached:
            return os.getppid() == self.parent
        return sampler.alive(self.parent, self.parent_ctime)

    def check_parent(self) -> None:
        if not self.parent_alive():
            self.stop_reason = "parent-gone"

    def on_signal(self, signum: int, frame: Any) -> None:
        self.stop_reason = "signal"
        self.signal_name = _signal_name(signum)
        self.signalled_at = time.time()

    signal_name: Optional[str] = None
    signalled_at: Optional[float] = None

    def run(self) -> int:
        self.loop(
            [[0.0, self.interval, self.sample], [PARENT_CHECK, PARENT_CHECK, self.check_parent]]
        )
        if self.stop_reason != "finished":
            reason = self.stop_reason
            self.stop_reason = None
            if self.drain() == "finished":  # its finish was waiting in the queue
                return 0
            # Linux sends the parent-death signal (SIGTERM) as pytest dies, a moment before
            # getppid() tells: that is not someone stopping the monitor.
            if reason == "signal" and self.parent is not None and self.parent_gone_soon(0.2):
                reason = "parent-gone"
            self.stop_reason = reason
            stop = time.time()
            if reason == "parent-gone":
                what, ended = self.read_slots()
                stop = ended or stop
            else:
                what = (
                    f"the monitor was stopped by {self.signal_name or 'a signal'} while pytest ran"
                )
            self.data.warnings.append(f"session aborted: {what}")
            self.write_session({"start": self.started, "stop": stop, "aborted": True})
            if self.parent_gone_soon():
                self.remove_private_dir()
        return 0

    def drain(self) -> Optional[str]:
        """Handle the frames that came before the parent died (its last batches), bounded;
        return the stop reason one of them set (its finish), else None."""
        deadline = time.monotonic() + DRAIN_SECONDS
        while time.monotonic() < deadline and self.stop_reason is None:
            try:
                parts = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.ZMQError:
                break
            self.handle(parts)
        return self.stop_reason

    # -- after a hard exit: the slots -----------------------------------------------------
    def read_slots(self) -> tuple[str, Optional[float]]:
        """Take from the slots the tests finished but never sent and the tests running; say
        what ended the run: (the warning's words, when pytest ended if it said so)."""
        directory = self.private_dir()
        states = slots.read_all(directory) if directory else []
        now = time.time()
        owner = next((st for st in states if st.pid == self.parent), None)
        running = []
        for st in states:
            w = self._slot_worker(st)
            if w is not None and st.records:
                recs, bad = protocol.check_records(st.records)
                w.add_told(recs)
                if bad:
                    self.count("records-rejected", bad)
            if w is not None and st.running is not None:
                nodeid, t0 = st.running
                if isinstance(nodeid, bytes):
                    nodeid = nodeid.decode("utf-8", "backslashreplace")
                if self._reported(nodeid, t0):
                    continue
                when = st.ended if st.ended is not None else now
                self.data.crashed.append(
                    {
                        "nodeid": nodeid,
                        "worker": w.wid,
                        "time": max(when, t0),
                        "start": t0,
                        "outcome": "interrupted",
                    }
                )
                if w.left is None:
                    w.left = when
                running.append((nodeid, w.wid))
        return _abort_words(owner, running), (owner.ended if owner is not None else None)

    def _slot_worker(self, st: slots.State) -> Optional[report_model.Worker]:
        """The report's worker of a slot (made when its hello never came); None: a controller."""
        if st.role == "controller":
            return None
        for w in self.data.workers.values():
            if w.pid == st.pid:
                return w
        wid = st.wid or str(st.pid)
        w = self.data.workers.get(wid)
        if w is None:
            starts = [r[protocol.START] for r in st.records if isinstance(r, list) and len(r) > 1]
            if st.running is not None:
                starts.append(st.running[1])
            joined = min((t for t in starts if isinstance(t, (int, float))), default=self.started)
            w = self.data.workers[wid] = report_model.Worker(wid=wid, pid=st.pid, joined=joined)
        return w

    def _reported(self, nodeid: str, t0: float) -> bool:
        """Is this execution in the data already (finished after all, or reported crashed)?"""
        for c in self.data.crashed:
            s = c.get("start")
            if c["nodeid"] == nodeid and (s is None or abs(s - t0) < slots.SAME_START):
                return True
        for w in self.data.workers.values():
            for r in w.records:
                if r[protocol.NODEID] == nodeid and abs(r[protocol.START] - t0) < slots.SAME_START:
                    return True
        return False

    def parent_gone_soon(self, timeout: float = 1.0) -> bool:
        """Is the parent gone, or going within ``timeout``? The kernel's parent-death signal
        comes when the thread that spawned us exits, which can be a moment before the rest of
        its process (the sender thread, ZeroMQ's threads): meanwhile getppid() still names it."""
        deadline = time.monotonic() + timeout
        while self.parent_alive():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def private_dir(self) -> Optional[str]:
        """The plugin's private temp dir this monitor was started for, if it is really one:
        named ``perfmon-*``, owned by this user, holding our socket (or endpoint file)."""
        ours = server.ipc_path(self.endpoint) or self.endpoint_file
        if not ours or not os.path.exists(ours):
            return None
        directory = os.path.dirname(os.path.abspath(ours))
        if not os.path.basename(directory).startswith(TMPDIR_PREFIX):
            return None
        try:
            st = os.lstat(directory)
        except OSError:
            return None
        if hasattr(os, "getuid") and st.st_uid != os.getuid():
            return None
        return directory

    def remove_private_dir(self) -> None:
        """After an abort with the parent gone: nobody else will remove the temp dir."""
        directory = self.private_dir()
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


def _told_reaches_back(mine: list, told: list) -> bool:
    """Do the controller's copies of a crashed worker's last tests (``told``, the latest few
    hundred) leave no gap after the records the worker sent itself (``mine``)?"""
    if not told:
        return not mine  # it finished no test (the controller saw none)
    if not mine:
        return len(told) < protocol.CRASH_RECENT  # the controller kept every test it finished
    return min(r[protocol.START] for r in told) <= max(r[protocol.STOP] for r in mine)


def _abort_words(owner: Optional[slots.State], running: list) -> str:
    """``pytest was killed (SIGKILL or a crash) during tests/x.py::test_y``, and the like."""
    who = "pytest"
    if owner is not None and owner.role == "controller":
        who = "pytest (the xdist controller)"
    reason = owner.reason if owner is not None else None
    if owner is None:
        how = "ended before its session finished"
    elif reason is None:
        how = "was killed (SIGKILL or a crash)"
    elif reason.startswith("os._exit"):
        how = f"exited through {reason}"
    elif reason.startswith("SIG"):
        how = f"was ended by {reason}"
    else:
        how = f"ended: {reason}"
    if not running:
        return f"{who} {how} while no test was running"
    several = len({wid for _, wid in running}) > 1
    names = [f"{nodeid} ({wid})" if several else nodeid for nodeid, wid in running[:NAMED]]
    more = f" and {len(running) - NAMED} more" if len(running) > NAMED else ""
    return f"{who} {how} during {', '.join(names)}{more}"


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="perfmon-monitor",
        description="The pytest-perfmon monitor process (spawned by pytest --perf-monitor).",
    )
    ap.add_argument("--endpoint", required=True, help="ZeroMQ endpoint to bind (ipc:// or tcp://)")
    ap.add_argument(
        "--output",
        required=True,
        type=os.path.abspath,
        help="where to write the JSON report (a finish's 'output' is for a daemon: ignored)",
    )
    ap.add_argument(
        "--interval",
        type=server.interval,
        default=0.1,
        help=f"sampling interval, seconds (at least {server.MIN_INTERVAL}, "
        f"below {server.MAX_INTERVAL:.0f})",
    )
    ap.add_argument("--parent", type=int, help="exit when this parent process is gone")
    ap.add_argument("--endpoint-file", help="write the bound endpoint here once bound")
    ap.add_argument(
        "--listen",
        help="also listen for remote workers' relays: DIR,tcp://HOST:PORT (DIR holds the "
        "session's CURVE keys; the bound endpoint is written to DIR/listen)",
    )
    ap.add_argument("--no-system-info", action="store_true", help="leave the system block out")
    ap.add_argument(
        "--replacing",
        action="store_true",
        help="started in place of a monitor that died: the report replaces what that one wrote",
    )
    ap.add_argument(
        "--exit-note", help="write how this process ended here (for a parent that is not ours)"
    )
    return ap


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def note_exit(path: Optional[str], how: str) -> None:
    """Say how this monitor ended (``exit code N``, or ``killed by SIGTERM`` and the time on a
    second line) where the plugin reads it: the plugin is not our parent and cannot learn it
    from the kernel. No note: killed (SIGKILL, the OOM killer) or crashed."""
    if not path:
        return
    try:
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            f.write(how)
        os.replace(tmp, path)
    except OSError:
        pass


def main(
    argv: Optional[list] = None,
    parent_fd: Optional[int] = None,
    detached: bool = False,
    start: str = "exec",
    launcher: Optional[int] = None,
) -> int:
    """The monitor's life; ``parent_fd``, ``detached``, ``start`` ("fork": a copy of the
    pytest process; "exec") and ``launcher`` (the pid of the process that forked us and exited,
    pytest's child until pytest reaps it) are given by monitor/launch.py, which started us
    outside pytest's family."""
    args = parser().parse_args(argv)
    if args.parent is not None and not detached:
        _die_with_parent()
        if os.name == "posix" and os.getppid() != args.parent:
            return 0  # parent already gone
    mon = Monitor(
        args.endpoint,
        args.output,
        args.interval,
        args.parent,
        not args.no_system_info,
        args.endpoint_file,
        parent_fd,
        detached,
    )
    mon.listen = args.listen
    mon.replacing = args.replacing
    mon.data.monitor_start = start
    mon.sampler.launcher = launcher  # never one of the tests' descendants
    try:
        mon.bind()
    except (zmq.ZMQError, OSError) as exc:
        print(f"perfmon-monitor: cannot bind {args.endpoint}: {exc}", file=sys.stderr)
        mon.close()
        note_exit(args.exit_note, "exit code 2")
        return 2
    signal.signal(signal.SIGTERM, mon.on_signal)
    if args.parent is not None and hasattr(signal, "SIGINT"):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is pytest's to handle
    else:
        signal.signal(signal.SIGINT, mon.on_signal)
    code = 1
    try:
        code = mon.run()
        return code
    finally:
        mon.close()
        if mon.stop_reason == "signal" and mon.signal_name:
            note_exit(args.exit_note, f"killed by {mon.signal_name}\n{mon.signalled_at!r}")
        else:
            note_exit(args.exit_note, f"exit code {code}")


if __name__ == "__main__":
    code = main()
    # Everything is written and every socket closed: skip the interpreter's teardown (about
    # 10 ms that the pytest process, reaping us at its very end, would wait for).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
