"""Where a finished report goes: the one path every end of a session takes.

:func:`deliver` writes the JSON atomically where it was asked for (else saves it in the temporary
directory, and says where), then the ``--perf-html`` page, then the run in the history store, and
returns what happened (:class:`Delivered`). Its callers:

* the spawned monitor, at ``finish`` and when its pytest is gone (an aborted session: JSON only);
* the daemon, as it closes a session (finished: all three; aborted: JSON only), and its rebuild;
* the plugin's fallback, when the collector is gone: it passes no store (the pytest process never
  writes the history).

The HTML and the database layers are imported only when asked for: the monitor imports this
module at start-up.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

from . import files


class Delivered(NamedTuple):
    """What became of a finished report: ``path`` was asked for; ``error`` (None when the JSON
    is there) says why not and where it went instead, ``saved_to`` (None: nowhere); the page's
    and the store's one-line problems, None when written (or not asked for)."""

    path: Optional[str]
    error: Optional[str] = None
    saved_to: Optional[str] = None
    html_warning: Optional[str] = None
    history_warning: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def where(self) -> Optional[str]:
        """Where the JSON is: the path asked for, the place it was saved instead, or None."""
        return self.path if self.ok else self.saved_to

    def done(self) -> dict:
        """The body of the collector's ``done`` answer (see protocol)."""
        return {
            "ok": self.ok,
            "path": self.path,
            "error": self.error,
            "saved_to": self.saved_to,
            "html_warning": self.html_warning,
            "history_warning": self.history_warning,
        }

    @classmethod
    def from_done(cls, done: dict) -> Delivered:
        """The collector's ``done`` answer read back (by the plugin)."""

        def text(key: str) -> Optional[str]:
            v = done.get(key)
            return None if v is None else str(v)

        error = None if done.get("ok") else (text("error") or "the collector wrote no report")
        return cls(
            text("path"), error, text("saved_to"), text("html_warning"), text("history_warning")
        )


def unbuilt(path: Optional[str], exc: BaseException) -> Delivered:
    """The report could not be built: nothing was written."""
    return Delivered(path, f"cannot build the report: {type(exc).__name__}: {exc}")


def deliver(
    report: dict,
    path: Optional[str],
    *,
    html: Optional[str] = None,
    history: Optional[str] = None,
    labels: Optional[dict] = None,
    rootdir: Optional[str] = None,
    source: str = "monitor",
    check: Optional[Callable[[Any], str]] = None,
    replace: bool = True,
) -> Delivered:
    """Write ``report`` to ``path`` (``check``, if given, vets the path first: a daemon's
    client-supplied one), then the HTML page to ``html``, then the run to the history store
    ``history`` (labelled ``labels``, its commit asked of git in ``rootdir``, ``source`` the
    writer's name in the store). Never raises for a file or store it cannot write.

    ``replace=False`` for a session's own report: its start moved any previous report aside,
    so a file at ``path`` now is another session's (two runs in one directory at once): it is
    kept, and this one is saved beside it, said in ``error``."""
    error, saved, clashed = _write_json(report, path, check, replace)
    html_warning = history_warning = None
    if html:
        html_warning = _write_page(report, html, clashed, check)
    if history:
        history_warning = _record_history(report, history, labels, rootdir, source)
    return Delivered(path, error, saved, html_warning, history_warning)


def _write_json(
    report: dict, path: Optional[str], check: Optional[Callable[[Any], str]], replace: bool
) -> tuple[Optional[str], Optional[str], bool]:
    """(None, None, False) when written at ``path``; else (the problem, naming where it went,
    that place or None, whether another session's report was found at ``path``)."""
    if not path:
        problem = "no output path given"
    else:
        target = path
        try:
            target = check(path) if check else path
            files.write_atomic(report, target, replace)
            return None, None, False
        except FileExistsError:
            saved = files.save_beside(report, target)
            where = f"; saved to {saved} instead" if saved else "; not saved anywhere else"
            problem = (
                f"{path} holds another report, left as it is (another session's, written while "
                "this one ran, or a previous one that could not be moved aside)"
            )
            return problem + where, saved, True
        except (OSError, ValueError) as exc:
            msg = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            problem = f"cannot write {path}: {msg}"
    saved = files.save_elsewhere(report)
    where = f"; saved to {saved} instead" if saved else "; not saved anywhere else either"
    return problem + where, saved, False


def _write_page(
    report: dict, html: str, clashed: bool, check: Optional[Callable[[Any], str]] = None
) -> Optional[str]:
    """The --perf-html page at ``html``: None when written there, else the one-line problem.
    When another session's report was at the JSON's path (``clashed``), a page at ``html`` is
    that session's too: it is left as it is, and this one written beside it. ``check`` vets
    the path first, as the JSON's (a daemon's client-supplied one)."""
    import os

    from .html import write_html_quietly  # only for --perf-html

    if check is not None:
        try:
            html = check(html)
        except (OSError, ValueError) as exc:
            return f"cannot write the HTML report {html}: {exc}"
    if not (clashed and os.path.lexists(html)):
        return write_html_quietly(report, html)
    kept = f"{html} holds another session's page, left as it is"
    try:
        fresh = files.fresh_beside(html, ".html")
    except OSError as exc:
        return f"{kept}; cannot write this run's beside it: {exc.strerror or exc}"
    problem = write_html_quietly(report, fresh)
    return problem if problem is not None else f"{kept}; this run's is {fresh}"


def _record_history(
    report: dict, url: str, labels: Optional[dict], rootdir: Optional[str], source: str
) -> Optional[str]:
    """Append the run to the store (after its JSON is written): None, or the one-line problem.
    The database layer is imported only here."""
    try:
        from .history import record_run
    except Exception as exc:  # pragma: no cover - the package is stdlib-only at import
        return f"history not recorded: {exc}"
    return record_run(url, report, labels or {}, rootdir, source=source)
