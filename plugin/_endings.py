"""Every way a run ends: what the process leaves behind so that the report says how it ended.

* A :class:`~pytest_perfmon.monitor.slots.Slot` per process (the spawned monitor's private
  directory): the test running now and the records not yet sent, for the monitor to read after a
  hard exit (SIGKILL, SIGTERM, ``os._exit``).
* SIGTERM and SIGHUP, when nobody handles them (``SIG_DFL``): :func:`faulthandler.register`
  with ``chain=True`` writes the traceback to ``term-PID`` from its C signal handler and then
  lets the default action end the process, so pytest still dies of the same signal, at once,
  whatever the main thread is doing (no Python-level handler that a C loop could delay).
* ``os._exit`` in this process (pytest-timeout's thread method, a test's own call): a wrapper
  notes ``os._exit(N)`` in the slot and calls the real function. In any other process (a forked
  child) it only calls the real one.
* The previous report is moved aside (``PATH.previous``) when the session starts, so that until
  the new report is complete nothing at the output path can be taken for it.

Nothing here runs per test except :meth:`Slot.begin` (from the measured path).
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any, NoReturn, Optional

from pytest_perfmon.monitor import files, slots

from . import _clock

_time = _clock.now  # the real clock (._clock)

_real_exit = os._exit


def open_slot(directory: Optional[str], wid: str, role: str, queue: Any = None) -> Any:
    """This process's slot in ``directory``, or None (no private directory: a daemon, or a
    worker on another machine; or the file could not be made)."""
    if not directory or not os.path.isdir(directory):
        return None
    try:
        return slots.Slot(directory, wid, role, queue)
    except (OSError, ValueError, OverflowError):
        return None


def _signals() -> list:
    return [
        (getattr(signal, name), prefix)
        for prefix, name in slots.SIGNAL_FILES.items()
        if hasattr(signal, name)
    ]


class Endings:
    """The marks of this process's end: the slot, the signal marks, the ``os._exit`` wrapper."""

    #: The one installed in this process (the at-fork hook reads it).
    current: Optional[Endings] = None

    def __init__(self, slot: Any, directory: str) -> None:
        self.slot = slot
        self.directory = directory
        self.pid = os.getpid()
        self.files: dict = {}  # signum -> the open file faulthandler writes into
        self.wrapper: Any = None  # our os._exit, while installed
        self.real_exit: Any = None  # the os._exit it wraps

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal dispositions are the main thread's to change
        self._register_signals()
        self._wrap_exit()
        Endings.current = self

    def _register_signals(self) -> None:
        try:
            import faulthandler
        except ImportError:  # pragma: no cover - part of the standard library
            return
        if not hasattr(faulthandler, "register"):  # Windows
            return
        for signum, prefix in _signals():
            try:
                if signal.getsignal(signum) != signal.SIG_DFL:
                    continue  # someone handles (or ignores) it: theirs to decide
                f = open(os.path.join(self.directory, f"{prefix}{self.pid}"), "wb")  # noqa: SIM115
            except (OSError, ValueError):
                continue
            try:
                faulthandler.register(signum, file=f, all_threads=True, chain=True)
            except (OSError, ValueError, RuntimeError):
                f.close()
                continue
            self.files[signum] = f

    def _wrap_exit(self) -> None:
        slot = self.slot
        if slot is None:
            return
        owner = self.pid
        real = os._exit

        def _exit(status: int) -> NoReturn:
            if os.getpid() == owner:
                slot.ending(f"os._exit({status!r})", _time())
            real(status)

        _exit.__doc__ = real.__doc__
        # a function attribute (functools.wraps' convention), which mypy's function types lack
        _exit.__wrapped__ = real  # type: ignore[attr-defined]
        self.wrapper, self.real_exit = _exit, real
        os._exit = _exit

    def uninstall(self) -> None:
        """End of session: everything as it was (what a test changed since is left alone)."""
        if self.wrapper is not None and os._exit is self.wrapper:
            os._exit = self.real_exit
        self.wrapper = self.real_exit = None
        self._unregister_signals()
        if Endings.current is self:
            Endings.current = None

    def _unregister_signals(self) -> None:
        import faulthandler

        for signum, f in self.files.items():
            try:
                # A test that installed its own handler replaced ours: leave its handler.
                if signal.getsignal(signum) == signal.SIG_DFL:
                    faulthandler.unregister(signum)
            except (OSError, ValueError, RuntimeError):
                pass
            f.close()
        self.files = {}

    def after_fork_in_child(self) -> None:
        """A forked child (multiprocessing): its signals are its own, as without us; the slot
        (shared memory) is the parent's: the child never writes it."""
        try:
            import faulthandler

            for signum in self.files:
                if signal.getsignal(signum) == signal.SIG_DFL:
                    faulthandler.unregister(signum)
        except Exception:
            pass
        slot = self.slot
        if slot is not None:
            # instance attributes over the methods: nothing more for the parent's hot path
            slot.begin = slot.idle = slot.ending = _ignore
        Endings.current = None


def _ignore(*args: Any) -> None:
    return None


def _after_fork_in_child() -> None:
    e = Endings.current
    if e is not None:
        e.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def install(directory: Optional[str], wid: str, role: str, queue: Any = None) -> Optional[Endings]:
    """Open this process's slot and install the marks of its end; None where there is no
    private directory (a perfmon-daemon collects: nothing reads a slot)."""
    slot = open_slot(directory, wid, role, queue)
    if slot is None or directory is None:
        return None
    e = Endings(slot, directory)
    e.install()
    return e


def what_ended(exc: BaseException) -> Optional[str]:
    """What a session-ending exception says ended the run, in words; None: pytest's own stop
    (pytest's ``Interrupted`` after collection errors or ``--sw``, xdist's after -x or
    --maxfail: KeyboardInterrupts that nobody pressed)."""
    kind = type(exc)
    if kind.__name__ == "Interrupted" and kind.__module__.startswith("xdist"):
        return None
    import pytest  # (loaded: this runs in a pytest hook)

    pytest_stop = getattr(pytest.Session, "Interrupted", None)  # its __module__ is "builtins"
    if pytest_stop is not None and isinstance(exc, pytest_stop):
        return None
    if isinstance(exc, KeyboardInterrupt):
        return "KeyboardInterrupt (Ctrl-C, SIGINT)"
    if type(exc).__name__ == "Exit":  # pytest.exit()
        msg = str(getattr(exc, "msg", "") or exc)
        return f"pytest.exit({msg[:200]!r})"
    return type(exc).__name__


def ending_words(
    ended_by: Optional[str], running: list, seen: bool = False, after: Optional[tuple] = None
) -> Optional[str]:
    """The warning for a run that ended early but finished its session (Ctrl-C,
    pytest.exit(), an internal error): ``running`` lists (node id, what ended it or None) for
    each test that was running. ``seen``: "running" as the xdist controller last saw it from
    the workers' reports; a worker may have finished such a test after the controller stopped
    reading them, and the report then has the worker's record (so the words say "unless").
    ``after``: (node id, outcome) of a test whose failure's interaction ended the run (quit in
    --pdb): reported as pytest reported it."""
    if not running and after is not None and ended_by:
        nodeid, outcome = after
        return f"the run was ended by {ended_by} after {nodeid} (reported as {outcome})"
    if not running:
        return f"the run was ended by {ended_by} while no test was running" if ended_by else None
    causes = {why for _, why in running if why} or {ended_by or "the end of the session"}
    names = ", ".join(nodeid for nodeid, _ in running[:4])
    more = f" and {len(running) - 4} more" if len(running) > 4 else ""
    how = "reported as interrupted"
    if seen:
        how = (
            "each reported as interrupted unless its worker finished it or xdist reported it "
            "crashed"
        )
    return f"the run was ended by {' and '.join(sorted(causes))} during {names}{more} ({how})"


def internal_error(excinfo: Any) -> Optional[str]:
    """What ended a run that pytest ended with INTERNALERROR, in words; None for xdist's
    relay of a worker's internal error (``DSession.worker_internal_error`` raises an
    AssertionError of its own to call the hook; the session goes on with the other workers)."""
    exc = getattr(excinfo, "value", None)
    tb = getattr(exc, "__traceback__", None)
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None and tb.tb_frame.f_code.co_name == "worker_internal_error":
        return None
    return f"an internal error ({type(exc).__name__ if exc is not None else 'INTERNALERROR'})"


#: real path of a report this process moved aside -> where it is now (``moved_to``).
_moved: dict = {}


def move_aside(path: str) -> tuple:
    """Move a previous report at ``path`` to ``path.previous`` (``files.move_aside``), noting
    where for :func:`moved_to`; (new place or None, problem or None)."""
    real = os.path.realpath(path)  # before the move (a link then points nowhere)
    target, problem = files.move_aside(path)
    if target is not None:
        _moved[real] = target
    return target, problem


def moved_to(path: str) -> str:
    """Where to read the report at ``path`` from: its ``.previous`` when this process moved it
    aside (``--perf-schedule=REPORT`` or ``--perf-shard-from`` naming the run's own output,
    as after ``pytest --perf-monitor`` with the default path), else ``path``."""
    real = os.path.realpath(path)
    target = _moved.get(real)
    return target if target is not None and not os.path.exists(real) else path
