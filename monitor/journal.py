"""The daemon's on-disk journal: an append-only file of length-prefixed msgpack entries.

Every entry is written with one ``os.write`` as soon as the daemon accepted what it records (a
batch of tests, a hello, a crash, a session's end), so that a daemon killed with SIGKILL, or a
machine that dies, loses nothing that was acknowledged by the kernel's page cache (no fsync per
entry; ``fsync=True`` adds one per entry for the paranoid).

Layout of one entry: a 4-byte little-endian length, then that many bytes of msgpack, which decode
to a dict with at least ``"k"`` (the entry kind) and ``"s"`` (the session id). A truncated last
entry (the writer died mid-write) is ignored by :func:`scan`.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import Any

import msgpack

_LEN = struct.Struct("<I")
#: An entry larger than this is taken for garbage (a corrupt length) when reading.
MAX_ENTRY = 64 * 1024 * 1024


class JournalError(Exception):
    pass


class Journal:
    """Append entries; read one back by the offset :meth:`append` returned."""

    def __init__(self, path: str, fsync: bool = False, readonly: bool = False) -> None:
        self.path = path
        self.fsync = fsync
        self.fd = self.rfd = -1
        if readonly:
            self.rfd = os.open(path, os.O_RDONLY)
            self.offset = os.fstat(self.rfd).st_size
        else:
            # read back through the same file (read_at): a journal renamed while in use (the
            # path given to something else) is still the one written
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            self.offset = os.fstat(self.fd).st_size
        self._packer = msgpack.Packer(use_bin_type=True, unicode_errors="surrogateescape")

    def append(self, entry: dict) -> int:
        data = self._packer.pack(entry)
        frame = _LEN.pack(len(data)) + data
        view = memoryview(frame)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        if self.fsync:
            os.fsync(self.fd)
        offset = self.offset
        self.offset += len(frame)
        return offset

    def read_at(self, offset: int) -> Any:
        fd = self.rfd if self.rfd >= 0 else self.fd
        head = os.pread(fd, _LEN.size, offset)
        (n,) = _LEN.unpack(head)
        return msgpack.unpackb(
            os.pread(fd, n, offset + _LEN.size), raw=False, unicode_errors="surrogateescape"
        )

    def close(self) -> None:
        for fd in (self.fd, self.rfd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.rfd = -1


def scan(path: str) -> Iterator[tuple[int, Any]]:
    """Every complete entry of the journal at ``path`` as (offset, entry), in order.

    Stops quietly at a truncated or undecodable tail: what a crash mid-write leaves.
    """
    with open(path, "rb") as f:
        offset = 0
        while True:
            head = f.read(_LEN.size)
            if len(head) < _LEN.size:
                return
            (n,) = _LEN.unpack(head)
            if n > MAX_ENTRY:
                return
            data = f.read(n)
            if len(data) < n:
                return
            try:
                entry = msgpack.unpackb(data, raw=False, unicode_errors="surrogateescape")
            except Exception:
                return
            if isinstance(entry, dict):
                yield offset, entry
            offset += _LEN.size + n
