"""History store URLs, without the database layer (the pytest process may import this module).

A plain path means SQLite (``perf-history.db``). Otherwise an SQLAlchemy URL:
``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``, or
``postgresql://user:pass@host:port/db`` (also ``postgres://``, ``postgresql+psycopg://``; always
the psycopg 3 driver). For PostgreSQL over a Unix socket: ``postgresql://user@/db?host=/run/pg``.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Optional
from urllib.parse import parse_qs, urlsplit

INSTALL_HINT = 'pip install "pytest-perfmon[history]"'

_PG_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")


class URLError(ValueError):
    """A history URL that cannot name a store (one line)."""


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):
        return True


def kind(url: object) -> str:
    """'sqlite' or 'postgresql'; raises :class:`URLError` for anything else."""
    if not isinstance(url, str) or not url.strip():
        raise URLError("the history URL is empty")
    if "\0" in url:
        raise URLError("the history URL contains a NUL character")
    if "://" not in url:
        return "sqlite"
    scheme = url.split("://", 1)[0].lower()
    if scheme == "sqlite" or scheme == "sqlite+pysqlite":
        return "sqlite"
    if scheme in _PG_SCHEMES:
        return "postgresql"
    raise URLError(
        f"unsupported history URL scheme {scheme!r}: use a file path, sqlite:///PATH or "
        "postgresql://user:pass@host:port/db"
    )


def normalize(url: str) -> str:
    """The SQLAlchemy URL for ``url``: SQLite paths made absolute (against the current
    directory), PostgreSQL given the psycopg 3 driver. Raises :class:`URLError`."""
    k = kind(url)
    if k == "sqlite":
        if "://" in url:
            rest = url.split("://", 1)[1]
            if not rest.startswith("/") or rest in ("/", ""):
                raise URLError(
                    f"{url!r}: an SQLite URL needs a file: sqlite:///relative.db or "
                    "sqlite:////absolute.db"
                )
            path = rest[1:]
            if "?" in path:
                raise URLError(f"{url!r}: SQLite URL options are not supported")
        else:
            path = url
        if path in ("", ":memory:") or path.endswith(("/", os.sep)):
            raise URLError(f"{url!r}: the history store must be a file")
        path = os.path.abspath(os.path.expanduser(path))
        if os.path.isdir(path):
            raise URLError(f"history store {path} is a directory")
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            raise URLError(f"history store {path}: directory {parent} does not exist")
        return "sqlite:///" + path
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise URLError(f"malformed PostgreSQL URL: {exc}") from None
    db = parts.path.lstrip("/")
    if not db or "/" in db:
        raise URLError("a PostgreSQL URL needs a database name: postgresql://user@host:port/db")
    if not parts.hostname and "host" not in parse_qs(parts.query):
        raise URLError("a PostgreSQL URL needs a host (or ?host=/socket/dir)")
    return "postgresql+psycopg://" + url.split("://", 1)[1]


def check_url(url: str) -> Optional[str]:
    """None when ``url`` names a store this install can write; else the one-line problem.

    Does not connect (an unreachable store is a warning at the end of the run, not an error at
    its start) and does not import SQLAlchemy: safe to call from the pytest process."""
    try:
        k = kind(url)
        normalize(url)
    except URLError as exc:
        return f"--perf-history: {exc}"
    if _missing("sqlalchemy"):
        return f"--perf-history needs SQLAlchemy: {INSTALL_HINT}"
    if k == "postgresql" and _missing("psycopg"):
        return f"--perf-history with PostgreSQL needs psycopg 3: {INSTALL_HINT}"
    return None


def redact(url: str) -> str:
    """``url`` without its password, for messages."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, _, host = rest.rpartition("@")
    if ":" in creds:
        creds = creds.split(":", 1)[0] + ":***"
    return f"{scheme}://{creds}@{host}"
