"""Inner pytest runs forked from a Python that has pytest already imported.

Most tests start real pytest processes (``python -m pytest ...``); each of them spent most of
its CPU importing pytest (about 0.2 s of a 0.3 s one-test run), which made that import most of
this suite's cost. Here one server process per test process (each xdist worker of ours has its
own) imports pytest, its built-in plugins, psutil, pyzmq and (in an editable install) this
plugin once; every run is a fork of it that takes the directory, environment (``TMPDIR`` and
``TZ`` read again), ``sys.path`` and ``sys.argv`` that ``python -m pytest`` would have and runs
pytest's ``__main__`` as ``-m`` does, to the interpreter's normal end (threads joined, atexit,
finalisation). Its output goes through pipes read to their end, as ``subprocess.run`` reads
them. The run is a process of its own with its own pid and exit status: the plugin, the monitor
it starts, xdist workers and every child are as real as before; only the interpreter's start
and those imports are shared. One difference stays: every run has the server's hash seed
(``PYTHONHASHSEED`` set for a run gives it a real start).

A run's xdist workers are forks of the server too (:func:`_fork_workers`): the run sends the
pipes execnet would give ``python -u -c BOOTSTRAP`` (and its stderr) with the request, and the
server's fork takes them as its 0, 1 and 2 and runs the bootstrap as that interpreter would
(:func:`_as_worker`: the run's directory, environment, process group, CPU affinity and
niceness). Each worker is a process of its own that ends as a real one does (its stdin's end,
a crash, a kill); what differs is its parent (the server's waiter, not the controller), the
hash seed (the server's) and ``sys.flags``/``sys.orig_argv`` (the server's). A run
whose tests look at their worker's parent sets ``PERFMON_TESTS_EXEC=workers``
(``helpers.REAL_WORKERS``): the run is still a fork, its workers real starts.

A run a test holds (signals, reads as it goes, puts in a session of its own or on a CPU) is
started by :func:`popen`, ``subprocess.Popen``'s interface for the same fork (:class:`Popen`):
its stdin, stdout and stderr are sent with the request, as a worker's are, and the server's
waiter holds its pid and exit status the same way (:func:`_wait_for_held`); the run takes the
asker's process group, or a session of its own (``setsid``: pid = group = session, as
``start_new_session`` gives), and the CPUs asked for. A run in a session of its own gets real
workers (its children, in its group, which a fork of the server cannot join).

Not preloaded: the pytest plugins installed from wheels (xdist...), whose modules pytest marks
for assertion rewriting and warns about when they were imported before it.

What a fork cannot copy gets a real ``exec`` instead (``run`` falls back to
:func:`subprocess.run`): interpreter options (``-I``, ``-X``, ``-W``), another interpreter,
environment variables that only Python's start reads (``PYTHONHASHSEED``, ``PYTHONWARNINGS``...)
when they differ from the server's, a platform without ``fork``, and ``PERFMON_TESTS_EXEC=1``.
So does a worker that is not ``<this Python> -u -c`` (``-B``, another Python, ssh, ``via``).

The server's imports are frozen out of the garbage collector (``gc.freeze``): pytest collects
at the end of every run and worker, and walking them (and copying the pages it writes to) was
nearly half of what a forked `-n 2` run still cost (docs/benchmarks.md).

The server: ``python tests/preloaded.py`` forks at once (out of the test process's family, which
tests count) and reads requests (JSON lines) on a Unix socket whose path it prints; each is
served by a fork (the *waiter*) that forks the run, writes its pid, copies its output, waits for
it and writes its exit status, so the server never holds a run and never runs a thread. It
exits when its stdin (a pipe from the test process) closes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Optional

#: Environment variables Python reads only as it starts: a run whose environment differs from
#: the server's in one of them is exec'd instead.
STARTUP_ONLY = (
    "PYTHONHASHSEED",
    "PYTHONWARNINGS",
    "PYTHONOPTIMIZE",
    "PYTHONDEVMODE",
    "PYTHONUTF8",
    "PYTHONIOENCODING",
    "PYTHONNOUSERSITE",
    "PYTHONUSERBASE",
    "PYTHONHOME",
    "PYTHONSAFEPATH",
    "PYTHONFAULTHANDLER",
    "PYTHONTRACEMALLOC",
    "PYTHONMALLOC",
    "PYTHONPLATLIBDIR",
    "PYTHONINSPECT",
    "PYTHONVERBOSE",
    "PYTHONUNBUFFERED",
    "PYTHONNODEBUGRANGES",
    "PYTHONINTMAXSTRDIGITS",
    "PYTHONSTARTUP",
)


# ---------------------------------------------------------------------------------------------
# The server side (run as a script)


class _Become(Exception):
    """Raised in a fresh fork to unwind the server's stack: the top of the script then runs
    the request as ``python -m pytest``, and the interpreter ends it as it ends any program."""

    def __init__(self, req: dict, base_path: list, fds: tuple) -> None:
        self.req, self.base_path, self.fds = req, base_path, fds  # fds: its 0, 1 and 2


def _serve(listener: socket.socket) -> None:
    base_path = sys.path[1:]  # this script's directory first: not a run's
    waiters: set = set()
    alive = True
    while alive:
        import select

        ready, _, _ = select.select([listener, sys.stdin], [], [], 1.0)
        for pid in list(waiters):  # reap the waiters that are done
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                waiters.discard(pid)
        if sys.stdin in ready and not os.read(sys.stdin.fileno(), 4096):
            alive = False
        if listener in ready:
            conn, _ = listener.accept()
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                listener.close()
                _wait_for_run(conn, base_path)  # returns only in the run (_Become)
            conn.close()
            waiters.add(pid)
    # Runs still going (their test process died): their waiters end with them, as a child of
    # subprocess.run outlives a killed parent. Nothing here waits for them.


def _read_request(conn: socket.socket) -> tuple:
    """A request (a JSON line) and the descriptors sent with it (a worker's, see _Worker)."""
    data, fds, _, _ = socket.recv_fds(conn, 65536, 3)
    while data and not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return json.loads(data), fds


def _wait_for_run(conn: socket.socket, base_path: list) -> None:
    """The waiter: fork the run, say its pid, copy its output until every process that holds
    it has closed it (as subprocess.run reads pipes to their end), wait for it, say its status.
    A request sent with descriptors (an xdist worker of a run, ``req["worker"]``, or a run
    started by :class:`Popen`) gets them instead: see :func:`_wait_for_held`."""
    code = 1
    try:
        req, fds = _read_request(conn)
        if fds or req.get("worker"):
            _wait_for_held(conn, req, base_path, fds)
            os._exit(0)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            conn.close()
            os.close(out_r)
            os.close(err_r)
            raise _Become(req, base_path, (os.open(os.devnull, os.O_RDONLY), out_w, err_w))
        os.close(out_w)
        os.close(err_w)
        conn.sendall(f"{pid}\n".encode())
        _copy({out_r: req["stdout"], err_r: req["stderr"]})
        _, status = os.waitpid(pid, 0)
        conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
        code = 0
    except _Become:
        raise
    except BaseException:
        pass
    os._exit(code)


def _wait_for_held(conn: socket.socket, req: dict, base_path: list, fds: list) -> None:
    """Fork the worker (or Popen's run) on the descriptors its asker sent, say its pid, then
    its exit status once it has ended; reap it only when the asker has closed the connection
    (it read the status, or it died): until then the pid is still the process's, as a child's
    is until its parent waits, and the asker's kill() cannot reach another process."""
    if len(fds) != 3:
        raise ValueError("a held process needs its stdin, stdout and stderr")
    pid = os.fork()
    if pid == 0:
        conn.close()
        raise _Become(req, base_path, tuple(fds))
    for fd in fds:
        os.close(fd)
    try:
        conn.sendall(f"{pid}\n".encode())
        if hasattr(os, "waitid"):
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
            code = info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
        else:  # pragma: no cover - macOS: reaped at once (its pid may be reused sooner)
            _, status = os.waitpid(pid, 0)
            code = os.waitstatus_to_exitcode(status)
        conn.sendall(f"{code}\n".encode())
        while conn.recv(4096):  # until the run closes it
            pass
    finally:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def _copy(pipes: dict) -> None:
    """Each pipe's bytes into its file, until the end of every pipe."""
    import select

    files = {fd: open(path, "ab") for fd, path in pipes.items()}  # noqa: SIM115
    try:
        while files:
            ready, _, _ = select.select(list(files), [], [])
            for fd in ready:
                data = os.read(fd, 65536)
                if data:
                    files[fd].write(data)
                else:
                    files.pop(fd).close()
                    os.close(fd)
    finally:
        for f in files.values():
            f.close()


def _run(become: _Become) -> None:
    """The run: what ``python -m pytest`` would be, from here on; pytest's ``SystemExit`` ends
    the interpreter as usual (threads joined, atexit, finalisation, flushed files). A worker:
    what ``python -u -c CODE`` (execnet's popen gateway) would be."""
    req = become.req
    worker = req.get("worker")
    os.chdir(req["cwd"])
    env = req["env"]
    os.environ.clear()
    os.environ.update(env)
    tempfile.tempdir = None  # from TMPDIR and the others again, as a new process would
    if hasattr(time, "tzset"):
        time.tzset()
    extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = ["" if worker else req["cwd"], *extra, *become.base_path]
    sys.pycache_prefix = env.get("PYTHONPYCACHEPREFIX") or None
    sys.dont_write_bytecode = bool(env.get("PYTHONDONTWRITEBYTECODE"))
    for fd, src in enumerate(become.fds):
        os.dup2(src, fd)
        os.close(src)
    if worker:
        _as_worker(req)
        return
    if "nice" in req:  # started by Popen: placed as its asker's child would be
        _place(req)
    _fork_workers()
    import runpy

    sys.argv[:] = ["-m", *req["args"]]  # run_module puts pytest's __main__.py first
    runpy.run_module("pytest", run_name="__main__", alter_sys=True)


def _as_worker(req: dict) -> None:
    """The rest of a worker's start, as its run's ``subprocess.Popen`` would have it: the run's
    process group, CPU affinity and niceness, unbuffered ``sys.stdout``/``stderr`` (``-u``),
    then the ``-c`` code in a fresh ``__main__``."""
    import io
    import types

    _place(req)
    for name, fd in (("stdout", 1), ("stderr", 2)):
        old = getattr(sys, name)
        raw = io.FileIO(fd, "w", closefd=False)
        raw.name = f"<{name}>"  # type: ignore[misc]
        new = io.TextIOWrapper(raw, encoding=old.encoding, errors=old.errors, write_through=True)
        new.mode = "w"  # type: ignore[misc]
        setattr(sys, name, new)
        setattr(sys, f"__{name}__", new)
    import importlib.machinery

    main = types.ModuleType("__main__")
    main.__dict__.update(
        __builtins__=__builtins__,
        __loader__=importlib.machinery.BuiltinImporter,
        __annotations__={},
    )
    sys.modules["__main__"] = main
    sys.argv[:] = ["-c"]
    exec(compile(req["code"], "<string>", "exec"), main.__dict__)


def _place(req: dict) -> None:
    """Where its asker's ``subprocess.Popen`` would have put the process: a session of its own
    (``start_new_session``: pid, process group and session id the same) or the asker's process
    group, the asker's CPU affinity (or the one asked for) and niceness."""
    try:
        if req.get("session"):
            os.setsid()
        elif os.getpgrp() != req["pgid"]:
            os.setpgid(0, req["pgid"])
        if req.get("affinity") is not None and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, req["affinity"])
        if os.getpriority(os.PRIO_PROCESS, 0) != req["nice"]:
            os.setpriority(os.PRIO_PROCESS, 0, req["nice"])
    except OSError:
        pass


PLUGIN_MODULES = (
    "pytest_perfmon.plugin",
    "pytest_perfmon._roles",
    "pytest_perfmon._fixtures",
    "pytest_perfmon._limits",
    "pytest_perfmon._handle",
    "pytest_perfmon._summary",
)


def _rewritten(package: str) -> bool:
    """Whether pytest marks ``package`` for assertion rewriting as a plugin's (a regular install
    lists its files; an editable one lists only its import hook)."""
    import importlib.metadata

    for dist in importlib.metadata.distributions():
        if any(ep.group == "pytest11" for ep in dist.entry_points):
            if any(str(f).replace("\\", "/").split("/")[0] == package for f in dist.files or ()):
                return True
    return False


def main() -> None:
    # Not pytest plugins (xdist...): pytest rewrites their asserts as it loads them, and warns
    # about a plugin already imported.
    import importlib

    import _pytest.config

    for name in (
        *(f"_pytest.{p}" for p in _pytest.config.default_plugins),
        "_pytest.pytester",
        "execnet",  # xdist's, not a plugin
        "msgpack",
        "psutil",
        "zmq",
        "unittest",
        "pdb",
        "xml.etree.ElementTree",
        "difflib",
        "queue",
        "mmap",
        # This package's plugin and what it imports at a run's start (not _rootdir, which a
        # test checks is imported only when needed), where pytest does not rewrite it. Its
        # modules register fork handlers that act only once a session has started here.
        *(() if _rewritten("pytest_perfmon") else PLUGIN_MODULES),
    ):
        try:
            importlib.import_module(name)
        except ImportError:  # pytest's list changes between versions
            pass

    # What is imported now lives as long as every fork: out of the collector's sight, so that
    # pytest's gc.collect() in each run and worker neither walks it nor copies its pages.
    import gc

    gc.collect()
    gc.freeze()

    path = os.path.join(tempfile.mkdtemp(prefix="preloaded-"), "s")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)
    except OSError:
        listener.close()
        os.rmdir(os.path.dirname(path))
        raise
    listener.listen(64)
    global _LISTENING, _SID
    _LISTENING = path  # for the runs' workers (_fork_workers)
    sys.stdout.flush()
    if os.fork():  # out of the test process's family (tests count its descendants)
        print(path, flush=True)
        os._exit(0)
    server = os.getpid()
    _SID = os.getsid(0)
    try:
        _serve(listener)
    finally:
        if os.getpid() == server:  # not in a run unwinding to the top (_Become)
            listener.close()
            try:
                os.unlink(path)
                os.rmdir(os.path.dirname(path))
            except OSError:
                pass


# ---------------------------------------------------------------------------------------------
# The client side (imported by tests/helpers.py)


#: This process's environment as the test session set it up (conftest.py imports this module
#: after its own changes, before any test changes it): the server starts with it, whichever
#: test asks first.
_BASE_ENV = dict(os.environ)

#: Bound on the server's start (its imports).
START_TIMEOUT = 60.0


class _Server:
    stdin = None  # the pipe whose end ends the server
    path: Optional[str] = None
    lock = threading.Lock()


def _server(stale: Optional[str] = None) -> Optional[str]:
    """The path of this process's server, started at first use, or again when ``stale`` (a path
    a run could not reach) is still the current one; None if it cannot start."""
    with _Server.lock:
        if _Server.path is None or _Server.path == stale:
            _stop()
            proc = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=_BASE_ENV,
            )
            assert proc.stdin is not None and proc.stdout is not None
            import select

            ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
            line = proc.stdout.readline().decode().strip() if ready else ""
            proc.stdout.close()
            if not line:
                proc.kill()
            proc.wait(START_TIMEOUT)  # the server is its child, gone from our family
            if not line:
                proc.stdin.close()
                return None
            import atexit

            atexit.register(_stop)
            _Server.stdin, _Server.path = proc.stdin, line
        return _Server.path


def _stop() -> None:
    """The server ends when it reads the end of its stdin (within a second); so it does when
    this process ends, however it ends."""
    if _Server.stdin is not None:
        _Server.stdin.close()
        _Server.stdin = _Server.path = None


def forkable(cmd: list, env: dict) -> bool:
    """Whether ``cmd`` (with ``env``) can be a fork of the server: ``<this Python> -m pytest
    ...`` with no interpreter options and no start-only variable of its own, and
    ``PERFMON_TESTS_EXEC`` not set in ``env`` (a test of what a run imports sets it; so can a
    contributor who suspects the forks), or set to ``workers``."""
    if len(cmd) < 3 or cmd[0] != sys.executable or cmd[1:3] != ["-m", "pytest"]:
        return False
    return _forkable_env(env)


def _forkable_env(env: dict, worker: bool = False) -> bool:
    """``PERFMON_TESTS_EXEC=workers``: the run a fork, its xdist workers real starts (its
    children, for a test that finds its controller as its worker's parent)."""
    if not hasattr(os, "fork") or not hasattr(socket, "AF_UNIX"):
        return False
    if env.get("PERFMON_TESTS_EXEC") and (worker or env["PERFMON_TESTS_EXEC"] != "workers"):
        return False
    return all(env.get(k) == _BASE_ENV.get(k) for k in STARTUP_ONLY)


def run(cmd: list, cwd, env: dict, timeout: float) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, cwd=cwd, env=env, stdin=DEVNULL, capture_output=True, text=True,
    errors="replace", timeout=timeout)``, forked from the server where it can be."""
    path = _server() if forkable(cmd, env) else None
    if path is None:
        return subprocess.run(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
        )
    with tempfile.TemporaryDirectory(prefix="preloaded-run-") as tmp:
        out, err = os.path.join(tmp, "out"), os.path.join(tmp, "err")
        req = {"cwd": str(cwd), "env": env, "args": cmd[3:], "stdout": out, "stderr": err}
        code = _ask(path, req, cmd, time.monotonic() + timeout, timeout)
        texts = []
        for name in (out, err):
            if os.path.exists(name):
                with open(name, encoding="utf-8", errors="replace") as f:
                    texts.append(f.read())
            else:
                texts.append("")
        return subprocess.CompletedProcess(cmd, code, texts[0], texts[1])


def _connect(path: str, timeout: float, restart: bool = True) -> socket.socket:
    """A connection to the server at ``path``; with ``restart``, to a new server if that one is
    gone (a test that ends processes?), once."""
    for attempt in range(2):
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(timeout)
        try:
            conn.connect(path)
            return conn
        except (FileNotFoundError, ConnectionRefusedError):
            conn.close()
            new = _server(stale=path) if restart and not attempt else None
            if new is None:
                raise
            path = new
    raise AssertionError("unreachable")


def _ask(path: str, req: dict, cmd: list, deadline: float, timeout: float) -> int:
    """Have the server run ``req``; its exit status (as subprocess's returncode)."""
    conn = _connect(path, max(0.1, deadline - time.monotonic()))
    try:
        conn.sendall(json.dumps(req).encode() + b"\n")
        pid = None
        with conn.makefile("rb") as f:
            try:
                first = f.readline()
                if not first:
                    raise RuntimeError("the preloaded server did not start the run")
                pid = int(first)
                conn.settimeout(max(0.1, deadline - time.monotonic()))
                line = f.readline()
            except socket.timeout:
                if pid is not None:
                    try:
                        os.kill(pid, signal.SIGKILL)  # as subprocess.run does: the run only
                    except ProcessLookupError:
                        pass
                raise subprocess.TimeoutExpired(cmd, timeout) from None
        if not line:
            raise RuntimeError(f"the preloaded server lost the run {pid}")
        return int(line)
    finally:
        conn.close()


#: In the server and its forks: the server's socket (a run asks it for its xdist workers).
_LISTENING: Optional[str] = None
#: In the server and its forks: the server's session. A run in a session of its own (Popen's
#: ``start_new_session``) gets real workers: a fork of the server cannot join its process group,
#: which a Ctrl-C to the group must reach.
_SID: Optional[int] = None


def _fork_workers() -> None:
    """In a run: xdist's workers forked from the server too. xdist starts each with execnet's
    popen gateway: ``subprocess.Popen([python, "-u", "-c", BOOTSTRAP], stdin=PIPE,
    stdout=PIPE)``, which then reads the gateway's code from its stdin. Here the run makes the
    two pipes and sends the worker's ends (and its stderr) to the server, whose fork takes them
    as 0, 1 and 2 and runs the bootstrap (:func:`_as_worker`); execnet gets a :class:`_Worker`
    as its Popen. Any other gateway (another Python, ``-B``, ``via``, ssh), an environment a
    fork cannot copy (see :func:`forkable`) or a server that does not answer: a real start."""
    try:
        from execnet import gateway_io
    except ImportError:
        return
    real = gateway_io.create_io

    def create_io(spec, execmodel):
        args = gateway_io.popen_args(spec) if spec.popen and not spec.via else None
        if args == [sys.executable, "-u", "-c", gateway_io.popen_bootstrapline] and (
            _LISTENING is not None
            and os.getsid(0) == _SID
            and _forkable_env(dict(os.environ), worker=True)
        ):
            try:
                popen = _Worker(_LISTENING, args)
            except OSError:  # the server is gone: a real start
                pass
            else:
                io = gateway_io.Popen2IOMaster.__new__(gateway_io.Popen2IOMaster)
                io.popen = popen
                gateway_io.Popen2IO.__init__(io, popen.stdin, popen.stdout, execmodel=execmodel)
                return io
        return real(spec, execmodel)

    gateway_io.create_io = create_io


class _Held:
    """The part of ``subprocess.Popen`` that waits for and signals a process the server forked
    on descriptors sent with the request (:func:`_wait_for_held`): ``args``, ``pid``,
    ``returncode``, ``poll``, ``wait``, ``send_signal``, ``terminate``, ``kill``. The exit
    status comes through the connection, whose waiter keeps the pid until this side has read it.
    ``fds``: the process's 0, 1 and 2, this side's copies closed once sent."""

    def __init__(self, path: str, args: list, req: dict, fds: list, restart=False) -> None:
        self.args, self.returncode = args, None
        self._buf = b""
        self._lock = threading.Lock()  # one reader of the status at a time
        affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        req = {
            "cwd": os.getcwd(),
            "env": dict(os.environ),
            "pgid": os.getpgrp(),
            "affinity": sorted(affinity) if affinity is not None else None,
            "nice": os.getpriority(os.PRIO_PROCESS, 0),
            **req,
        }
        try:
            self._conn = conn = _connect(path, START_TIMEOUT, restart)
            try:
                socket.send_fds(conn, [json.dumps(req).encode() + b"\n"], fds)
                self.pid = int(self._line())
            except BaseException:
                conn.close()
                raise
        finally:
            for fd in set(fds) - {0, 1, 2}:
                os.close(fd)

    def _line(self) -> bytes:
        while b"\n" not in self._buf:
            chunk = self._conn.recv(64)
            if not chunk:
                raise ChildProcessError(f"the preloaded server lost the process of {self.args}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def wait(self, timeout: Optional[float] = None) -> int:
        if self.returncode is None:
            if not self._lock.acquire(timeout=-1 if timeout is None else timeout):
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            try:
                self._status(timeout)
            finally:
                self._lock.release()
        if self.returncode is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return self.returncode

    def poll(self) -> Optional[int]:
        """As Popen's: None while another thread waits (execnet kills from one thread a
        worker that another waits for)."""
        if self.returncode is None and self._lock.acquire(False):
            try:
                self._status(0)
            finally:
                self._lock.release()
        return self.returncode

    def _status(self, timeout: Optional[float]) -> None:
        if self.returncode is not None:
            return
        self._conn.settimeout(timeout)
        try:
            line = self._line()
        except (socket.timeout, BlockingIOError):
            return
        self.returncode = int(line)
        self._conn.close()  # the waiter reaps the process

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # its pid is still its own
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class _Worker(_Held):
    """For execnet and xdist, a worker forked by the server on two pipes, whose other ends are
    ``stdin`` and ``stdout`` (as Popen's), and the run's stderr."""

    def __init__(self, path: str, args: list) -> None:
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        try:
            super().__init__(path, args, {"worker": True, "code": args[-1]}, [in_r, out_w, 2])
        except BaseException:
            os.close(in_w)
            os.close(out_r)
            raise
        self.stdin = open(in_w, "wb")  # noqa: SIM115 - as Popen's, closed by execnet
        self.stdout = open(out_r, "rb")  # noqa: SIM115


class Popen(_Held):
    """``subprocess.Popen(cmd, cwd=cwd, env=env, stdin=..., stdout=..., stderr=...,
    start_new_session=..., text=...)`` of a ``python -m pytest`` run forked from the server
    (see :func:`popen`, which falls back to a real one). ``stdin``, ``stdout`` and ``stderr``:
    None (this process's), ``subprocess.DEVNULL``, ``PIPE``, a file or a descriptor;
    ``stderr`` also ``STDOUT``; stdin is /dev/null unless asked. ``affinity``: the run's CPUs.
    ``communicate`` reads the pipes to their end, as Popen's does."""

    def __init__(self, path, cmd, cwd, env, stdin, stdout, stderr, session, affinity, text):
        ends: list = []  # this side's ends of the pipes
        fds: list = []
        try:
            for n, how in enumerate((stdin, stdout, stderr)):
                if how == subprocess.STDOUT:
                    fds.append(fds[1])
                elif how == subprocess.PIPE:
                    r, w = os.pipe()
                    ends.append(w if n == 0 else r)
                    fds.append(r if n == 0 else w)
                elif how == subprocess.DEVNULL:
                    fds.append(os.open(os.devnull, os.O_RDWR))
                elif how is None:
                    fds.append(n)
                else:
                    fds.append(os.dup(how if isinstance(how, int) else how.fileno()))
            req = {"cwd": str(cwd), "env": env, "args": cmd[3:], "session": session}
            if affinity is not None:
                req["affinity"] = sorted(affinity)
        except BaseException:
            for fd in {*ends, *fds} - {0, 1, 2}:
                os.close(fd)
            raise
        try:
            super().__init__(path, cmd, req, fds, restart=True)  # closes fds
        except BaseException:
            for fd in ends:
                os.close(fd)
            raise
        mode, self._text = ("w" if text else "wb"), text
        it = iter(ends)
        self.stdin = open(next(it), mode) if stdin == subprocess.PIPE else None  # noqa: SIM115
        self.stdout = open(next(it), "rb") if stdout == subprocess.PIPE else None  # noqa: SIM115
        self.stderr = open(next(it), "rb") if stderr == subprocess.PIPE else None  # noqa: SIM115
        self._read: dict = {}  # what communicate() has read so far, by pipe

    def communicate(self, input=None, timeout: Optional[float] = None) -> tuple:  # noqa: A002
        """Each pipe read to its end (a TimeoutExpired keeps what was read), then the exit."""
        import select

        deadline = None if timeout is None else time.monotonic() + timeout
        if self.stdin is not None:
            if input:
                self.stdin.write(input)
            self.stdin.close()
        pipes = [f for f in (self.stdout, self.stderr) if f is not None and not f.closed]
        for f in pipes:
            self._read.setdefault(f, [])
        while pipes:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            ready, _, _ = select.select(pipes, [], [], left)
            for f in ready:
                data = os.read(f.fileno(), 65536)
                if data:
                    self._read[f].append(data)
                else:
                    pipes.remove(f)
                    f.close()
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        out = [
            None if f is None else b"".join(self._read.get(f, ()))
            for f in (self.stdout, self.stderr)
        ]
        return tuple(b.decode() if self._text and b is not None else b for b in out)


def popen(
    cmd: list,
    cwd,
    env: dict,
    *,
    stdin=subprocess.DEVNULL,
    stdout=None,
    stderr=None,
    start_new_session: bool = False,
    affinity=None,
    text: bool = False,
):
    """``subprocess.Popen(cmd, ...)`` (with ``affinity``: its CPUs, set in the child), forked
    from the server where it can be (:class:`Popen`); else a real one."""
    path = _server() if forkable(cmd, env) else None
    if path is not None:
        try:
            return Popen(
                path, cmd, cwd, env, stdin, stdout, stderr, start_new_session, affinity, text
            )
        except (FileNotFoundError, ConnectionRefusedError):  # the server is gone: a real start
            pass
    pin = None
    if affinity is not None and hasattr(os, "sched_setaffinity"):

        def pin() -> None:
            os.sched_setaffinity(0, affinity)

    return subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        start_new_session=start_new_session,
        preexec_fn=pin,
        text=text,
    )


def runpytest_subprocess(pytester, *args, timeout: Optional[float] = None):
    """``pytester.runpytest_subprocess(*args, timeout=timeout)``, as pytest 9 writes it (a
    numbered ``--basetemp``, its plugins as ``-p``, this directory on ``PYTHONPATH``, stdin
    closed, the output echoed), forked from the server where it can be."""
    import pytest
    from _pytest.pathlib import make_numbered_dir

    temp = make_numbered_dir(root=pytester.path, prefix="runpytest-", mode=0o700)
    argv = [f"--basetemp={temp}", *(os.fspath(a) for a in args)]
    for plugin in pytester.plugins:
        if not isinstance(plugin, str):
            raise ValueError(f"plugins are given by name in a subprocess run: {plugin}")
        argv = ["-p", plugin, *argv]
    cmd = [sys.executable, "-m", "pytest", *argv]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH", "")]))
    print("running:", *cmd)
    print("     in:", os.getcwd())
    start = time.monotonic()
    try:
        proc = run(cmd, os.getcwd(), env, timeout if timeout is not None else 3600.0)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{timeout} second timeout expired running: {cmd}")
    out, err = proc.stdout.splitlines(), proc.stderr.splitlines()
    for lines, stream in ((out, sys.stdout), (err, sys.stderr)):
        for line in lines:
            print(line, file=stream)
    return pytest.RunResult(proc.returncode, out, err, time.monotonic() - start)


if __name__ == "__main__":
    become = None
    try:
        main()
    except _Become as exc:  # a fork that is to be a run (outside the handler: no chained
        become = exc  # exception in what pytest prints)
    if become is not None:
        become.__traceback__ = None
        _run(become)
