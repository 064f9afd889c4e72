"""The end of a session, for the process that owns it (plain pytest, or the xdist controller).

The session ends in two steps, so that the collector writes the report while pytest does its own
end-of-session work (other plugins' sessionfinish, the terminal summary): ``begin_finish`` (from
pytest_sessionfinish, tryfirst) sends ``finish``; ``complete`` waits for ``done`` just before our
terminal summary (trylast), or in pytest_unconfigure without a terminal. Whenever the collector
cannot write the report, the plugin writes it from its own measurements (``fallback``), through
the collector's own delivery path (:mod:`pytest_perfmon.monitor.deliver`) without the history.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from typing import Any, Callable, Optional

import pytest
from pytest_perfmon.monitor import deliver as delivery
from pytest_perfmon.monitor import files, protocol
from pytest_perfmon.monitor import report as report_model

from . import _clock, _endings
from ._client import BYE_TIMEOUT, Client
from ._handle import JoinedDaemon, SpawnedMonitor
from ._settings import Settings

_time = _clock.now  # the real clock (._clock)

DONE_TIMEOUT = 120.0  # the collector writing the report (100k tests take a few seconds)
#: A session replaces a monitor that died at most this many times (then: the fallback report).
MAX_RESTARTS = 3
#: How long a monitor whose connection closed may take to be gone (an aborted report first).
GONE_TIMEOUT = 5.0


#: How many tests a warning names.
NAMED = 4


def _named(nodeids: list) -> str:
    """``X``, ``one of X, Y``, ``one of X, Y, Z, W and 3 more``, or ``no test``."""
    if not nodeids:
        return "no test (between tests)"
    if len(nodeids) == 1:
        return nodeids[0]
    more = f" and {len(nodeids) - NAMED} more" if len(nodeids) > NAMED else ""
    return "one of " + ", ".join(nodeids[:NAMED]) + more


class SessionOwner:
    """Finishes the session through the collector, or writes the report itself; warns."""

    def __init__(
        self, settings: Settings, handle: SpawnedMonitor | JoinedDaemon, client: Optional[Client]
    ) -> None:
        self.settings = settings
        self.handle = handle
        self.client = client
        self.session_id = uuid.uuid4().hex
        self.start = _time()
        self.warnings: list = []
        if handle.problem:
            self.warnings.append(handle.problem)
        self.info: dict = {}
        self.finishing = False
        self.completed = False
        self.report: Optional[dict] = None
        self.report_path: Optional[str] = None
        self.html_path: Optional[str] = None  # the --perf-html page, once written
        self.warned = 0  # warnings already shown in the terminal summary
        #: Builds the fallback report's data from the role's own measurements.
        self.collect: Callable[[], report_model.RunData] = report_model.RunData
        self.possibly_incomplete = False
        #: The collector took our connection at the start: its loss later is worth a warning.
        self.joined = False
        #: What ended the run early, in words (KeyboardInterrupt, pytest.exit()), or None.
        self.ended_by: Optional[str] = None
        #: --perf-shard: the report's session.shard, set by plugin/_shard before the end.
        self.shard: Optional[dict] = None
        #: Each monitor that died during the run: {"at", "how", "died_during", "gap_seconds"}
        #: (the report's session.monitor_restarts; "at" a time here, ISO 8601 there).
        self.restarts: list = []
        #: The tests (node ids) that ran at some moment between two times, from the role's
        #: own records (set by a role that measures; a restart's "died_during" is filled at
        #: the end, when every record is in).
        self.running_at: Callable[[float, float], list] = lambda since, until: []
        #: The session reached its collection (set by the role): it may have measured tests.
        self.began = False
        #: The collector answered the session's end (it wrote the report, or said why not).
        self.answered = False
        # Until the new report is complete, nothing at the output path is the previous run's.
        self.previous, problem = _endings.move_aside(settings.output)
        if problem:
            self.warnings.append(problem)

    def note_ending(self, running: list, seen: bool = False, after: Optional[tuple] = None) -> None:
        """Warn, naming the cause, when the run ended early; ``running``: (node id, cause or
        None) of each test that was running then (``seen``: as the xdist controller saw);
        ``after``: (node id, outcome) of the test whose failure's interaction ended it."""
        words = _endings.ending_words(self.ended_by, running, seen, after)
        if words:
            self.warnings.append(words)

    def _previous_note(self) -> str:
        return f" (the previous report is at {self.previous})" if self.previous else ""

    def problem(self) -> str:
        client = self.client
        return (client.problem if client is not None else None) or self.handle.describe()

    def usable(self) -> bool:
        """Can the collector still take our data? (main thread only)"""
        client = self.client
        if client is None or not client.alive or not self.handle.alive():
            return False
        if client.gone():
            client.problem = client.problem or "it closed the connection"
            return False
        return True

    def replace_collector(
        self, noticed: float, since: float, running: Optional[list] = None
    ) -> bool:
        """The collector closed our connection while tests ran (noticed at ``noticed``, not
        yet at ``since``): if it was a monitor we started and it is gone, start another at the
        same address and hand it everything again (the caller owns the client's socket).
        Recorded either way; True when replaced."""
        handle, client = self.handle, self.client
        if client is None or not handle.spawned:
            return False
        proc = getattr(handle, "proc", None)
        if proc is not None and not proc.wait(GONE_TIMEOUT):
            return False  # alive but not talking to us: nothing to replace (the fallback)
        client.close_socket()  # before the new monitor binds: it must hear our hello first
        entry = self.note_lost(noticed, since, running)
        if len(self.restarts) > MAX_RESTARTS or not handle.relaunch() or not client.reconnect():
            client.alive = False
            client.problem = f"{handle.name} died ({entry['how']})"
            return False
        entry["gap_seconds"] = round(max(0.0, _time() - entry["at"]), 3)
        return True

    def note_lost(self, noticed: float, since: float, running: Optional[list] = None) -> dict:
        """Record that our monitor died (noticed at ``noticed``, not yet at ``since``; the
        tests then running, or None to find them at the end): a report's
        session.monitor_restarts entry, not replaced until its ``gap_seconds`` is set."""
        how, at = self.handle.note()  # a SIGTERM says when; else it died between the checks
        entry = {
            "at": at or noticed,
            "how": how,
            "died_during": running,
            "gap_seconds": None,
            "window": (at, at) if at else (since, noticed),
        }
        self.restarts.append(entry)
        return entry

    def _restart_fields(self) -> list:
        """The report's session.monitor_restarts, and one warning per monitor that died."""
        out = []
        for r in self.restarts:
            r = dict(r)
            window = r.pop("window")
            if r["died_during"] is None:
                r["died_during"] = self.running_at(*window)
            out.append(r)
        return out

    def _restart_warnings(self, restarts: list) -> list:
        words = []
        for r in restarts:
            where = _named(r["died_during"])
            if r["gap_seconds"] is None:
                after = "not replaced: nothing sampled from then on"
            else:
                after = (
                    f"a new one took over {r['gap_seconds']:.1f} s later (descendants not "
                    "sampled in between)"
                )
            words.append(f"{self.handle.name} died during {where} ({r['how']}); {after}")
        return words

    def _add_restarts(self, info: dict) -> None:
        """The monitors that died, into the finish (and the warnings): after the last records
        were handed over, since a death noticed then is replaced then."""
        if self.restarts and "monitor_restarts" not in info:
            restarts = self._restart_fields()
            info["monitor_restarts"] = restarts
            words = self._restart_warnings(restarts)
            self.warnings.extend(words)
            info["warnings"].extend(words)

    def session_info(self, exitstatus: Any) -> dict:
        info: dict[str, Any] = {
            "session": self.session_id,
            "start": self.start,
            "stop": _time(),
            "exit_status": int(exitstatus),
            "pytest_version": pytest.__version__,
            "warnings": list(self.warnings),
            "system_info": self.settings.system_info,
        }
        s = self.settings
        if s.daemon:  # a spawned monitor writes where its command line says; a daemon, here
            info["output"] = s.output
        if s.html:
            info["html"] = s.html
        if s.history:
            info["history"] = s.history
            info["labels"] = dict(s.labels)
            info["rootdir"] = s.rootdir
        if s.profile:  # the profiles name the files under it relative to it
            info["rootdir"] = s.rootdir
        if self.shard is not None:
            from ._shard import finish_fields

            finish_fields(info, self.shard, info.get("labels"))
        return info

    def begin_finish(self, exitstatus: Any, deliver: Callable[[], bool], **extra: Any) -> None:
        """``deliver()`` hands over the role's last data (True when the collector has it all);
        then, if the collector can take it, ask it to write the report."""
        try:
            self.info = self.session_info(exitstatus)
            self.info.update(extra)
            delivered = deliver()
            self._add_restarts(self.info)
            if delivered and self.usable() and self.client is not None:  # usable(): a client
                self.finishing = self.client.send(protocol.pack(protocol.FINISH, self.info))
        except Exception as exc:  # never let our failure become the session's
            self.finishing = False
            self.info = self.info or self.session_info(exitstatus)
            self.warnings.append(f"internal error while finishing: {exc!r}")

    def _await_done(self) -> bool:
        """Wait (bounded) for the collector's answer to finish. True when it wrote the report."""
        client = self.client
        assert client is not None
        done = client.wait(protocol.DONE, DONE_TIMEOUT, self.handle.alive)
        if not isinstance(done, dict):
            return False
        self.answered = True
        # False: no report anywhere, the plugin writes its own
        return self._delivered(delivery.Delivered.from_done(done))

    def _delivered(self, done: delivery.Delivered) -> bool:
        """Take what the delivery did (the collector's, or the fallback's): the report's path,
        the page's, and one warning per problem. True when the report is somewhere."""
        if not done.ok:  # it says where the report went instead, if anywhere
            self.warnings.append(str(done.error) + self._previous_note())
        for problem in (done.html_warning, done.history_warning):
            if problem:
                self.warnings.append(problem)
        if self.settings.html and not done.html_warning:
            self.html_path = self.settings.html
        self.report_path = done.where
        return self.report_path is not None

    def complete(self) -> None:
        if self.completed:
            return
        self.completed = True
        client = self.client
        try:
            ok = self.finishing and self._await_done()
            if not ok:
                # How it was lost, before we stop it: a monitor still running did not answer
                # (stopping it is ours, not a crash of its own).
                answered = self.answered  # its delivery's own problem is said already
                # (a daemon is not ours to stop: it did not answer, its connection open)
                spawned = self.handle.spawned
                unanswered = (
                    self.finishing
                    and self.handle.alive()
                    and (spawned or (client is not None and client.problem is None))
                )
                how = self._lost_how()
                # A collector that is alive but not answering must not write (its aborted
                # report) over ours: stop it first, without letting it write.
                self.handle.silence()
                if self.joined and not self.restarts and not answered:
                    # (a restart that failed said it already)
                    what = f"stopped during the run ({how})"
                    if unanswered:
                        what = "did not answer the session's end" + (
                            ", and was stopped" if spawned else f" within {DONE_TIMEOUT:g} s"
                        )
                    elif not spawned and client is not None and client.unanswered:
                        what = f"did not answer the session's end within {BYE_TIMEOUT:g} s"
                    self.warnings.append(
                        f"{self.handle.name} {what}; "
                        "report written by the plugin from its own measurements"
                    )
                elif self.joined:
                    self.warnings.append("report written by the plugin from its own measurements")
                self.fallback(self.collect())
        except Exception as exc:  # never let our failure become the session's
            self.warnings.append(f"internal error while writing the report: {exc!r}")
        finally:
            if client is not None:
                client.close()
            # A spawned monitor exits by itself after "done": reaped in pytest_unconfigure,
            # after the terminal summary, so that its exit overlaps our own output.

    def _lost_how(self) -> str:
        """How the collector was lost: how a dead monitor ended (never "exit code 0" for a
        signal), else what the connection said."""
        if self.handle.spawned and not self.handle.alive():
            return self.handle.describe()
        return self.problem()

    def fallback(self, data: report_model.RunData) -> None:
        """Write the report from the plugin's own measurements (the collector is gone)."""
        data.collector = "plugin-fallback"
        info = dict(self.info)
        info["warnings"] = list(self.warnings)
        data.warnings = list(self.warnings)
        system = report_model.system_info() if self.settings.system_info else None
        report = report_model.build(data, info, system)
        if self.possibly_incomplete:
            report["session"]["possibly_incomplete"] = True
        self.report = report
        self._delivered(
            # over what a monitor that died may have written (its aborted report): the
            # plugin's own measurements of the whole session
            delivery.deliver(report, self.settings.output, html=self.settings.html)
        )
        if self.settings.history:  # the pytest process never writes the store
            self.warnings.append(
                "history not recorded: the collector was lost (the pytest process never writes "
                f"the store); import the report with: perfmon history import {self.report_path} "
                "--db URL"
            )

    # -- hooks' bodies, called by the roles ---------------------------------------------------
    def unconfigure(self) -> None:
        if self.info:  # the session ran; without a terminal summary, complete it here
            self.complete()
            for w in self.warnings[self.warned :]:
                print(f"perfmon: warning: {w}", file=sys.stderr)
        else:
            if self.client is not None:
                self.client.close()
            if not self.began:  # it never reached collection: an error or pytest.exit() in
                # pytest_sessionstart. No report of a session that measured nothing (the
                # monitor wrote "aborted by SIGTERM" over nothing), the previous one back.
                self.handle.silence()
                self._put_previous_back()
            # (Else its end was cut short before our pytest_sessionfinish, by another hook:
            # the monitor, stopped, writes the aborted session's report.)
        self.handle.reap(wrote_report=self.report_path is not None)

    def _put_previous_back(self) -> None:
        previous = self.previous
        if not previous or not previous.endswith(files.PREVIOUS):
            return
        path = previous[: -len(files.PREVIOUS)]
        try:
            files.place_new(previous, path)  # never over a file that came meanwhile
            self.previous = None
        except OSError:
            pass  # it stays at PATH.previous

    def terminal_summary(self, tr: Any) -> None:
        if self.info:
            self.complete()
        for w in self.warnings:
            tr.write_line(f"perfmon: warning: {w}", yellow=True)
        self.warned = len(self.warnings)
        if self.report_path is None:
            return
        if self.settings.print_summary:
            report = self.report
            if report is None:
                try:
                    with open(self.report_path, encoding="utf-8") as f:
                        report = json.load(f)
                except (OSError, ValueError) as exc:
                    tr.write_line(f"perfmon: warning: cannot read the report back: {exc}")
                    return
            from ._summary import write_summary

            write_summary(tr, report)
            self._step_summary(tr, report)
        if tr.config.option.verbose >= 0:
            tr.write_line(f"perfmon: report written to {self.report_path}")
            if self.html_path:
                tr.write_line(f"perfmon: HTML report written to {self.html_path}")
        if self.settings.profile:
            from ._profile import write_terminal

            write_terminal(tr, self.report, self.report_path)

    def _step_summary(self, tr: Any, report: dict) -> None:
        """On GitHub Actions, the summary also goes to the job's step summary, as Markdown."""
        path = os.environ.get("GITHUB_STEP_SUMMARY")
        if not path:
            return
        from pytest_perfmon.monitor.render import step_summary_markdown

        try:
            text = step_summary_markdown(report, self.report_path or "")
            with open(path, "a", encoding="utf-8") as f:
                f.write(text + "\n")
        except Exception as exc:
            tr.write_line(
                f"perfmon: warning: cannot append to GITHUB_STEP_SUMMARY {path}: "
                f"{getattr(exc, 'strerror', None) or exc}",
                yellow=True,
            )
