"""The report's files: its JSON text, written whole or not at all, and a place of last resort.

Standard library only, imported by the monitor at start-up and by the plugin's fallback; the
HTML page and the combined report use :func:`atomic_text` too.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any, Optional

from .units import number

#: Suffix of the previous run's report, moved aside when a session (or a daemon) starts.
PREVIOUS = ".previous"


def move_aside(path: str) -> tuple:
    """Move a previous report at ``path`` to ``path.previous``: (where it went or None, the
    problem in words or None). A link is followed, as the report's writer writes through it:
    the file it points to moves, the link stays for the new report."""
    real = os.path.realpath(path)
    if not os.path.isfile(real):
        return None, None
    target = real + PREVIOUS
    try:
        os.replace(real, target)
    except OSError as exc:
        return None, f"cannot move the previous report {path} aside: {exc.strerror or exc}"
    return target, None


class JSONFileError(ValueError):
    """A JSON file that cannot be read: the message is one line, naming the file."""


def _int(text: str) -> int:
    """JSON's integers: one beyond a float's range parses as a Python int but is no figure
    (arithmetic with floats overflows far from where it was read)."""
    v = int(text)  # a ValueError past Python's digit limit too
    if number(v) is not None:
        return v
    raise ValueError(f"a number beyond a float's range ({len(text)} digits)")


def read_json(path: str) -> Any:
    """The JSON value in the file at ``path``; :class:`JSONFileError` (one line) when the file
    cannot be read, is not UTF-8 JSON, nests too deeply or holds a number beyond a float's
    range. Every reader of a user's JSON file goes through here."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise JSONFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise JSONFileError(f"{path}: is a directory, not a file") from None
    except UnicodeDecodeError:
        raise JSONFileError(f"{path}: not JSON (not UTF-8 text)") from None
    except OSError as e:
        raise JSONFileError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        return json.loads(text, parse_int=_int)
    except json.JSONDecodeError as e:
        where = f"line {e.lineno} column {e.colno}"
        raise JSONFileError(f"{path}: not JSON ({e.msg} at {where})") from None
    except RecursionError:
        raise JSONFileError(f"{path}: not JSON (nested too deeply)") from None
    except ValueError as e:  # _int's, or int()'s past Python's digit limit
        raise JSONFileError(f"{path}: {e}") from None


def dumps(report: dict) -> str:
    """The report as JSON text: small sections indented, one line per test.

    Readable and greppable, and fast: json's C encoder does each test, where ``indent`` on the
    whole report would push every test through the pure-Python encoder (4x slower).
    """
    parts = []
    for key, value in report.items():
        if key == "tests" and value:
            encode, key_text = _one_line_encoder()
            body = ",\n".join(f"    {key_text(k)}: {encode(v)}" for k, v in value.items())
            text = "{\n" + body + "\n  }"
        else:
            text = json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n  ")
        parts.append(f"  {json.dumps(key)}: {text}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def _one_line_encoder() -> tuple:
    """(value -> its JSON text on one line, str -> its JSON string), as json.dumps(v,
    ensure_ascii=False) gives them, for the many tests of a report: json's C encoder made once
    and called for each test (JSONEncoder.encode makes one per call: 7.9 -> 6.9 us a test)."""
    encoder = json.JSONEncoder(ensure_ascii=False)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator (PyPy, a stripped build)
        return encoder.encode, encoder.encode
    # The arguments of JSONEncoder.iterencode's own C encoder, without its check for cycles
    # (a report is a tree: it holds no container twice)
    c_encode = make(
        None, encoder.default, json.encoder.encode_basestring, None, ": ", ", ", False, False, True
    )
    return (lambda v: "".join(c_encode(v, 0))), json.encoder.encode_basestring


@contextmanager
def atomic_text(path: str, replace: bool = True) -> Iterator[IO[str]]:
    """A text file that appears at ``path`` only once complete (temporary file + rename).
    ``replace=False``: only where nothing is (FileExistsError otherwise), see :func:`place_new`."""
    import tempfile

    # A link is followed (its target gets the new file); anything but a regular file is refused:
    # os.replace would put our file in the place of a device, a FIFO or a directory.
    path = os.path.realpath(path)
    if os.path.lexists(path) and not os.path.isfile(path):
        raise OSError(errno.EINVAL, "exists and is not a regular file", path)
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".perfmon-", suffix=".tmp", dir=directory)
    try:
        if hasattr(os, "fchmod"):  # mkstemp makes 0600; a report is as readable as any file
            mask = os.umask(0)
            os.umask(mask)
            os.fchmod(fd, 0o666 & ~mask)
        # A path's undecodable bytes (os.fsdecode's lone surrogates, in a warning or a label)
        # are written as JSON's own escape of them ("\\udcff"): the file stays UTF-8.
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as f:
            yield f
        if replace:
            os.replace(tmp, path)
        else:
            place_new(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def place_new(tmp: str, path: str) -> None:
    """The file ``tmp`` becomes ``path`` only if nothing is there (FileExistsError otherwise):
    one step (a hard link) where the file system links, else a look and then the rename."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except (OSError, AttributeError, NotImplementedError):  # FAT, some network file systems
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "exists", path) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def write_atomic(report: dict, path: str, replace: bool = True) -> None:
    """Write ``report`` as JSON to ``path`` through a temporary file and a rename (``replace``
    False: never over a file that is there, FileExistsError)."""
    with atomic_text(path, replace) as f:
        f.write(dumps(report))


def fresh_beside(path: str, default_ext: str) -> str:
    """A new empty file beside ``path``, ``NAME.XXXXXXXX.EXT`` (EXT ``path``'s, else
    ``default_ext``), made exclusively: nobody else's. Raises OSError."""
    import tempfile

    real = os.path.realpath(path)
    stem, ext = os.path.splitext(os.path.basename(real))
    fd, fresh = tempfile.mkstemp(
        prefix=f"{stem}.", suffix=ext or default_ext, dir=os.path.dirname(real)
    )
    os.close(fd)
    return fresh


def save_beside(report: dict, path: str) -> Optional[str]:
    """A fresh file beside ``path`` (``NAME.XXXXXXXX.json``, where a CI job's artifacts and a
    merge's glob find it), else in the temp dir; None when nowhere."""
    try:
        fresh = fresh_beside(path, ".json")
    except OSError:
        return save_elsewhere(report)
    try:
        write_atomic(report, fresh)
        return fresh
    except (OSError, ValueError):
        try:
            os.unlink(fresh)
        except OSError:
            pass
        return save_elsewhere(report)


def save_elsewhere(report: dict) -> Optional[str]:
    """Last resort when the asked-for path cannot be written: a fresh file in the temp dir."""
    import tempfile

    try:
        fd, path = tempfile.mkstemp(prefix="perfmon-report-", suffix=".json")
        os.close(fd)
        write_atomic(report, path)
        return path
    except OSError:
        return None
