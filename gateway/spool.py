"""A bounded spool file: messages Kafka could not take, one JSON line each, read back in order.

The file never grows past ``max_bytes``: an append that would not fit is refused (the caller
counts it as dropped). Lines are read back from the start; once every line has been read the
file is emptied. A file left by an earlier process is read back too, and a torn last line (a
crash mid-write) is skipped. Compaction (dropping the lines already read, to make room) writes
the unread lines to a temporary file next to the spool, syncs it and renames it over the spool
(:func:`os.replace`), so a crash at any point leaves either the old file or the new one whole.

>>> import tempfile, pathlib
>>> spool = Spool(pathlib.Path(tempfile.mkdtemp()) / "spool.jsonl", max_bytes=16)
>>> spool.append(b'{"a":1}'), spool.append(b'{"b":2}'), spool.append(b'{"c":3}')
(True, True, False)
>>> spool.peek(), spool.pending_bytes
(b'{"a":1}', 16)
>>> spool.advance(); spool.peek()
b'{"b":2}'
>>> spool.append(b'{"c":3}'), spool.pending_bytes  # the read line made room
(True, 16)
>>> spool.advance(); spool.peek()
b'{"c":3}'
>>> spool.advance(); spool.peek(), spool.pending_bytes
(None, 0)
>>> spool.close()
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import BinaryIO

from shardshape.core.settings import ENV_PREFIX, SettingsError

log = logging.getLogger("shardshape.gateway.spool")

_READ_CHUNK = 1 << 20


class Spool:
    """Append-only JSON-lines file with a read position, bounded to ``max_bytes``.

    Not thread-safe: one thread (the reporter's) appends and reads.
    """

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._compacting = self.path.with_name(self.path.name + ".compacting")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._compacting.unlink(missing_ok=True)  # a compaction cut short: the spool is whole
            self._file = self._open()
        except OSError as exc:
            raise SettingsError(
                f"{ENV_PREFIX}REPORTER_SPOOL_PATH={self.path} cannot be opened for writing "
                f"({exc.strerror}): point it at a writable file, or unset it to drop batches "
                "Kafka cannot take"
            ) from None
        self._size = self._file.seek(0, os.SEEK_END)
        self._offset = 0
        self._next: bytes | None = None
        if self._size:
            log.info("spool %s holds %d bytes from before; replaying them", self.path, self._size)

    @property
    def pending_bytes(self) -> int:
        """Bytes written and not yet read back."""
        return self._size - self._offset

    def append(self, line: bytes) -> bool:
        """Write one message (without newlines); False when it would not fit the bound."""
        if b"\n" in line:
            raise ValueError("a spooled message must not contain a newline")
        needed = len(line) + 1
        if self.pending_bytes + needed > self.max_bytes:
            return False
        if self._size + needed > self.max_bytes:
            self._compact()
        self._file.seek(0, os.SEEK_END)
        self._file.write(line + b"\n")
        self._size += needed
        return True

    def peek(self) -> bytes | None:
        """The next unread message, or None when all have been read."""
        while self._next is None and self._offset < self._size:
            self._file.seek(self._offset)
            chunk = self._file.read(min(_READ_CHUNK, self._size - self._offset))
            end = chunk.find(b"\n")
            while end < 0 and self._offset + len(chunk) < self._size:
                more = self._file.read(min(_READ_CHUNK, self._size - self._offset - len(chunk)))
                if not more:
                    break
                chunk += more
                end = chunk.find(b"\n")
            if end < 0:
                log.warning(
                    "spool %s: skipping a torn last line of %d bytes", self.path, len(chunk)
                )
                self._offset = self._size
            elif end == 0:
                self._offset += 1  # an empty line
            else:
                self._next = chunk[:end]
        if self._offset >= self._size:
            self._reset()
        return self._next

    def advance(self) -> None:
        """Mark the message :meth:`peek` returned as read."""
        if self._next is None:
            return
        self._offset += len(self._next) + 1
        self._next = None
        if self._offset >= self._size:
            self._reset()

    def close(self) -> None:
        self._file.close()

    def _open(self) -> BinaryIO:
        return open(self.path, "a+b", buffering=0)

    def _reset(self) -> None:
        self._file.truncate(0)
        self._size = self._offset = 0

    def _compact(self) -> None:
        """Drop the lines already read, so the unread ones start the file.

        Never empties the spool in place: the unread lines go to a synced temporary file that
        then replaces the spool in one rename (the directory synced after it), so a crash
        leaves the old spool (its read lines are sent again: at least once) or the new one.
        """
        self._file.seek(self._offset)
        unread = self._file.read(self._size - self._offset)
        with open(self._compacting, "wb") as temporary:
            temporary.write(unread)
            temporary.flush()
            os.fsync(temporary.fileno())
        os.replace(self._compacting, self.path)
        _sync_directory(self.path.parent)
        self._file.close()
        self._file = self._open()
        self._size, self._offset = len(unread), 0


def _sync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (where the platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
