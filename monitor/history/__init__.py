"""Run history: a store of past runs (SQLite or PostgreSQL) and regression detection.

Needs the ``history`` extra (``pip install "pytest-perfmon[history]"``: SQLAlchemy 2, psycopg 3,
numpy). This module imports none of them at import time: :func:`check_url` is safe in the
pytest process; :func:`record_run` (called by the collector, never by pytest) imports the
database layer when called.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Optional

from .url import INSTALL_HINT, URLError, check_url, normalize, redact

__all__ = ["INSTALL_HINT", "URLError", "check_url", "normalize", "record_run", "redact"]


#: The database drivers whose own errors can reach record_run unwrapped.
DRIVERS = ("psycopg", "psycopg2", "sqlite3")


def record_run(
    url: str,
    report: dict,
    labels: Optional[Mapping] = None,
    rootdir: Optional[str] = None,
    *,
    source: str = "monitor",
    timeout: Optional[float] = None,
    env: Optional[Mapping[str, str]] = None,
) -> Optional[str]:
    """Append ``report`` to the history store at ``url`` in one transaction.

    Commit and branch: the labels ``commit`` and ``branch`` when given, else the CI variables
    (GITHUB_SHA/GITHUB_REF_NAME, ...), else ``git`` in ``rootdir``. The machine fingerprint
    comes from the report's system block (completed from this machine). Returns None when
    stored (or stored already: the same report is stored once), else one warning line naming
    the problem. Never raises."""
    try:
        from . import context, store
    except ImportError as exc:
        return f"history not recorded: {exc.name or exc} is missing ({INSTALL_HINT})"
    labels = {str(k): str(v) for k, v in (labels or {}).items()}
    eng = None
    try:
        commit, branch = context.commit_branch(rootdir, env)
        commit = labels.get("commit", commit)
        branch = labels.get("branch", branch)
        desc = context.machine(report.get("system"))
        eng = store.open_store(url, store.DEFAULT_TIMEOUT if timeout is None else timeout)
        store.insert_run(
            eng,
            report,
            commit=commit,
            branch=branch,
            labels=labels,
            machine_fp=context.fingerprint(desc),
            machine_desc=desc,
            source=source,
        )
        return None
    except URLError as exc:
        return f"history not recorded: {' '.join(str(exc).split())}"
    except store.HistoryError as exc:
        return f"history not recorded: {exc}"
    except store.sa.exc.SQLAlchemyError as exc:
        return f"history not recorded: {store.describe_error(exc, url)}"
    except Exception as exc:  # the report is written; the store must never break the run
        if type(exc).__module__.partition(".")[0] in DRIVERS:
            # a driver's own error, not wrapped by SQLAlchemy (psycopg's "connection is bad"):
            # named with the store, its URL redacted, on one line
            return f"history not recorded: {store.describe_error(exc, url)}"
        return f"history not recorded: {type(exc).__name__}: {' '.join(str(exc).split())}"
    finally:
        if eng is not None:
            eng.dispose()
