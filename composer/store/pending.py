"""Unsubscribes accepted while the store could not take them, kept until it can.

When another process holds the subscriber database's write lock for longer than a
write waits (:class:`~composer.errors.StoreBusy`), ``newsletter serve`` still owes the
reader the unsubscribe it has answered for. It adds the request to a file
(``SubscriberSettings.unsubscribe_queue``: ``subscribers.db.unsubscribes`` beside a SQLite
file, ``<database>@<host>.unsubscribes`` next to ``config.toml`` for a PostgreSQL
server; one JSON object a line, synced to the disk before the reader is answered)
and applies it once the lock is free. On PostgreSQL a write waits only for the rows
it touches, so this happens only when another session keeps that reader's row locked.
Every opening of the store (:func:`composer.store.open_store`) applies what is
waiting too, so that a send started in the meantime skips those readers, or stops
(:class:`StoreBusy`) when the database is still too busy to take them.

The file is locked (``flock``) while a request is added to it or applied ones are
taken off it, never while the database is waited for; it is removed once everything
in it is applied. Applying again what was applied before a crash changes nothing.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from composer.config import SubscriberSettings
from composer.errors import StoreBusy, StoreError
from composer.store import SubscriberStore
from composer.store.membership import record_unsubscribe

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class QueuedUnsubscribe:
    """One reader's request to leave, as :func:`composer.store.membership.record_unsubscribe`
    takes it."""

    key: str
    email: str
    reason: str


class PendingUnsubscribes:
    """The queue of unsubscribes of the list ``settings`` names."""

    def __init__(self, settings: SubscriberSettings) -> None:
        self.path = settings.unsubscribe_queue

    def waiting(self) -> bool:
        """Whether anything is queued."""
        return self.path.exists()

    def add(self, request: QueuedUnsubscribe) -> None:
        """Queue ``request``; it is on the disk when this returns."""
        line = json.dumps(
            {"key": request.key, "email": request.email, "reason": request.reason},
            ensure_ascii=False,
        )
        data = f"{line}\n".encode()
        try:
            with self._locked(create=True) as fd:
                assert fd is not None
                _write(fd, data)
            _sync_folder(self.path.parent)
        except OSError as exc:
            raise StoreError(
                f"{self.path}: cannot queue an unsubscribe while the database is busy ({exc});"
                " free some disk space, or let newsletter write to that folder"
            ) from exc

    def holds(self, key: str) -> bool:
        """Whether an unsubscribe of ``key`` is queued."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return False
        return any(request.key == key for request in _parse(data, self.path))

    def apply(self, store: SubscriberStore) -> bool:
        """Apply every queued unsubscribe to ``store`` and take them off the queue; False
        when the store is still busy, and the queue is kept whole."""
        try:
            with self._locked(create=False) as fd:
                if fd is None:
                    return True
                taken = _read(fd)
            # Applied without the file's lock, so that a reader queued meanwhile is
            # answered at once rather than after this waits out the database's lock.
            requests = _parse(taken, self.path)
            try:
                for request in requests:
                    record_unsubscribe(store, request.key, request.email, request.reason)
            except StoreBusy:
                return False
            self._remove(taken)
        except OSError as exc:
            raise StoreError(
                f"{self.path}: cannot apply the unsubscribes queued there ({exc});"
                " let newsletter read, write and remove that file"
            ) from exc
        if requests:
            log.warning(
                "%s: applied %d unsubscribe%s accepted while the database was busy",
                self.path,
                len(requests),
                "" if len(requests) == 1 else "s",
            )
        return True

    def _remove(self, applied: bytes) -> None:
        """Take ``applied``, the start of the queue when it was read, off the queue,
        keeping whatever was added since."""
        with self._locked(create=False) as fd:
            if fd is None:
                return
            now = _read(fd)
            if not now.startswith(applied):
                return  # another process applied and removed them first
            rest = now[len(applied) :]
            if rest:
                # Replaced whole, never cut in place: a crash leaves the old queue or
                # the new one, and applying one again changes nothing.
                fresh = self.path.with_name(f"{self.path.name}.{os.getpid()}")
                out = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    _write(out, rest)
                finally:
                    os.close(out)
                os.replace(fresh, self.path)
                _sync_folder(self.path.parent)
            else:
                # Removed under the lock: whoever waits to add to it sees it gone and
                # starts a new file.
                os.unlink(self.path)

    @contextmanager
    def _locked(self, *, create: bool) -> Iterator[int | None]:
        """The queue file, open and locked; None when there is none and ``create`` is false."""
        flags = os.O_RDWR | os.O_APPEND | (os.O_CREAT if create else 0)
        while True:
            try:
                fd = os.open(self.path, flags, 0o600)
            except FileNotFoundError:
                if create:
                    raise
                yield None
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                # The file may have been applied and removed while this waited for the
                # lock; what is written into a removed file is lost, so open it again.
                if _is_at(fd, self.path):
                    yield fd
                    return
            finally:
                os.close(fd)


def _is_at(fd: int, path: Path) -> bool:
    try:
        there = os.stat(path)
    except FileNotFoundError:
        return False
    here = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _write(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` and sync it to the disk."""
    while data:
        data = data[os.write(fd, data) :]
    os.fsync(fd)


def _read(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(data: bytes, path: Path) -> list[QueuedUnsubscribe]:
    requests = []
    text = data.decode("utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            fields = json.loads(line)
            requests.append(
                QueuedUnsubscribe(
                    key=str(fields["key"]), email=str(fields["email"]), reason=str(fields["reason"])
                )
            )
        except (ValueError, KeyError, TypeError):
            # Only a write cut short by a crash leaves such a line, before the reader
            # was answered.
            log.warning("%s:%d: not a queued unsubscribe; skipped", path, number)
    return requests


def _sync_folder(folder: Path) -> None:
    """Sync ``folder``'s entries, so that a file just created in it survives a power cut."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
