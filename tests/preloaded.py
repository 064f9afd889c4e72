"""Inner pytest runs forked from a Python that has pytest already imported.

Most tests start real pytest processes (``python -m pytest ...``); each of them spent most of
its CPU importing pytest, xdist, psutil and pyzmq (about 0.2 s of a 0.3 s one-test run), which
made that import most of this suite's cost. Here one server process per test process (each xdist
worker of ours has its own) imports them once; every run is a fork of it that sets the
directory, environment, ``sys.path`` and ``sys.argv`` that ``python -m pytest`` would have
and runs pytest's ``__main__`` as ``-m`` does. The run is still a process of its own with its own
pid, output and exit status: the plugin, the monitor it starts, xdist workers and every child
are as real as before; only the interpreter start and those imports are shared.

Not preloaded: the pytest plugins installed from wheels (xdist...), whose modules pytest marks
for assertion rewriting and warns about when they were imported before it; this package's
plugin is preloaded (an editable install's modules are not marked).

What a fork cannot copy, the run is told to do by a real ``exec`` instead (``run`` below
falls back to :func:`subprocess.run`): interpreter options (``-I``, ``-X``, ``-W``), an other
interpreter, and environment variables that only Python's start reads (``PYTHONHASHSEED``,
``PYTHONWARNINGS``...), or a platform without ``fork``.

The server: ``python tests/preloaded.py`` reads requests (JSON lines) on a Unix socket whose path
it prints; each request is served by a fork (the *waiter*) that forks the run, writes its pid,
waits for it and writes its exit status, so the server never holds a child and never runs a
thread. It exits when its stdin (a pipe from the test process) closes.
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
                _wait_for_run(conn, base_path)  # never returns
            conn.close()
            waiters.add(pid)
    # Runs still going (their test process died): their waiters end with them, as a child of
    # subprocess.run outlives a killed parent. Nothing here waits for them.


def _read_request(conn: socket.socket) -> dict:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return json.loads(data)


def _wait_for_run(conn: socket.socket, base_path: list) -> None:
    """The waiter: fork the run, say its pid, wait for it, say its status."""
    code = 1
    try:
        req = _read_request(conn)
        pid = os.fork()
        if pid == 0:
            conn.close()
            _run(req, base_path)  # never returns
        conn.sendall(f"{pid}\n".encode())
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        conn.sendall(f"{code}\n".encode())
        code = 0
    except BaseException:
        pass
    finally:
        os._exit(code)


def _run(req: dict, base_path: list) -> None:
    """The run: what ``python -m pytest`` would be, from here on."""
    code = 1
    try:
        os.chdir(req["cwd"])
        env = req["env"]
        os.environ.clear()
        os.environ.update(env)
        extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        sys.path[:] = [req["cwd"], *extra, *base_path]
        sys.pycache_prefix = env.get("PYTHONPYCACHEPREFIX") or None
        sys.dont_write_bytecode = bool(env.get("PYTHONDONTWRITEBYTECODE"))
        for fd, (path, flags) in enumerate(
            [(os.devnull, os.O_RDONLY), (req["stdout"], os.O_WRONLY), (req["stderr"], os.O_WRONLY)]
        ):
            f = os.open(path, flags | (os.O_APPEND if fd else 0))
            os.dup2(f, fd)
            os.close(f)
        import runpy

        sys.argv[:] = ["-m", *req["args"]]  # run_module puts pytest's __main__.py first
        try:
            runpy.run_module("pytest", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            code = _exit_code(exc.code)
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        # What the interpreter does at exit, before it finalises: wait for the threads that
        # are not daemons, run atexit, flush.
        try:
            threading._shutdown()  # type: ignore[attr-defined]
        except BaseException:
            pass
        import atexit

        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
    finally:
        os._exit(code)


def _exit_code(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        print(code, file=sys.stderr)
    except BaseException:
        pass
    return 1


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

    path = os.path.join(tempfile.mkdtemp(prefix="preloaded-"), "s")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    sys.stdout.flush()
    if os.fork():  # out of the test process's family (tests count its descendants)
        print(path, flush=True)
        os._exit(0)
    try:
        _serve(listener)
    finally:
        listener.close()
        try:
            os.unlink(path)
            os.rmdir(os.path.dirname(path))
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------
# The client side (imported by tests/helpers.py)


class _Server:
    stdin = None  # the pipe whose end ends the server
    path: Optional[str] = None
    env: dict = {}
    lock = threading.Lock()


def _server(restart: bool = False) -> Optional[str]:
    """The path of this process's server, started at first use (or again after it was lost);
    None if it cannot start."""
    with _Server.lock:
        if _Server.path is None or restart:
            _stop()
            env = dict(os.environ)
            proc = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
            )
            assert proc.stdout is not None
            line = proc.stdout.readline().decode().strip()
            proc.stdout.close()
            proc.wait(30)  # the server is its child, gone from our family
            if not line:
                assert proc.stdin is not None
                proc.stdin.close()
                return None
            import atexit

            atexit.register(_stop)
            _Server.stdin, _Server.path, _Server.env = proc.stdin, line, env
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
    contributor who suspects the forks)."""
    if not hasattr(os, "fork") or env.get("PERFMON_TESTS_EXEC"):
        return False
    if len(cmd) < 3 or cmd[0] != sys.executable or cmd[1:3] != ["-m", "pytest"]:
        return False
    base = _Server.env if _Server.path is not None else os.environ
    return all(env.get(k) == base.get(k) for k in STARTUP_ONLY)


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
        open(out, "wb").close()
        open(err, "wb").close()
        req = {"cwd": str(cwd), "env": env, "args": cmd[3:], "stdout": out, "stderr": err}
        deadline = time.monotonic() + timeout
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            try:
                conn.connect(path)
            except OSError:  # the server is gone (killed by a test that ends processes?)
                path = _server(restart=True)
                if path is None:
                    raise
                conn.connect(path)
            conn.sendall(json.dumps(req).encode() + b"\n")
            f = conn.makefile("rb")
            pid = int(f.readline())
            conn.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                line = f.readline()
            except socket.timeout:
                os.kill(pid, signal.SIGKILL)  # as subprocess.run does: the run only
                raise subprocess.TimeoutExpired(cmd, timeout) from None
            finally:
                conn.settimeout(None)
            f.close()
            if not line:
                raise RuntimeError(f"the preloaded server lost the run {pid}")
            code = int(line)
        with (
            open(out, encoding="utf-8", errors="replace") as o,
            open(err, encoding="utf-8", errors="replace") as e,
        ):
            return subprocess.CompletedProcess(cmd, code, o.read(), e.read())


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
    main()
