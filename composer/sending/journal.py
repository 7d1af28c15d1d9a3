"""The dispatch journal: where each subscriber's copy of an issue stands, durably.

One row per issue and subscriber in ``deliveries``, in the subscriber database
(schema step 2 in :mod:`composer.store.sqlite`, which owns every migration); no row
means not yet attempted. A dispatch records
``sending`` before the SMTP transaction and ``sent`` only after the server's 250
to the final dot, in transactions that group the changes of every connection, on
a connection with ``synchronous = FULL`` so a committed change survives a power
cut. A resumed dispatch re-sends everything that is not ``sent`` (or ``failed``).

``dispatch_locks`` lets exactly one process send an issue at a time. A lock whose
holder stopped refreshing it (killed, machine off) for :data:`LOCK_STALE_SECONDS`,
or whose process on this machine no longer exists, is taken over.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import cast

from composer.errors import DispatchLocked, StoreError
from composer.sending import STATES, Outcome, State
from composer.store import Segment, segment_tiers
from composer.store.sqlite import SqliteSubscriberStore, mark_bounced

# Longer than the longest back-off (60 s): a live dispatch records something at least
# that often, even when it is only waiting to retry.
LOCK_STALE_SECONDS = 300.0
HEARTBEAT_SECONDS = 2.0

_UPSERT = """
INSERT INTO deliveries (issue, subscriber_id, email, state, attempts, code, reply, retryable,
                        updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (issue, subscriber_id) DO UPDATE SET
    state = excluded.state,
    attempts = deliveries.attempts + excluded.attempts,
    code = CASE WHEN excluded.state = 'sending' THEN deliveries.code ELSE excluded.code END,
    reply = CASE WHEN excluded.state = 'sending' THEN deliveries.reply ELSE excluded.reply END,
    retryable = excluded.retryable,
    updated_at = excluded.updated_at
"""


@dataclass(frozen=True)
class Delivery:
    """One journal row: a subscriber's copy of an issue, as last recorded."""

    subscriber_id: int
    email: str
    state: State
    attempts: int
    code: int | None
    reply: str
    retryable: bool
    updated_at: str


@dataclass(frozen=True)
class DispatchStatus:
    """Where a dispatch stands: counts per state, how many active subscribers of its
    segment have no row yet, and every failure with the server's reply."""

    issue: str
    segment: Segment | None
    counts: dict[State, int]
    not_attempted: int
    failures: list[Delivery]
    last_result: str
    running: bool


class SqliteDispatchJournal:
    """The journal of one issue in the subscriber database; see the module docstring."""

    def __init__(self, path: Path, issue: str) -> None:
        # Opening the store runs the schema migrations the journal's tables come from.
        SqliteSubscriberStore(path).close()
        self.path = path
        self.issue = issue
        self.owner = uuid.uuid4().hex
        self._locked = False
        self._last_heartbeat = 0.0
        try:
            # Writes may come from the dispatcher's journal thread (one at a time), so the
            # loop keeps talking SMTP while a commit waits for the disk; reads
            # (``states``, ``status``) use their own connection on the caller's thread.
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout = 10000")
            self._db.execute("PRAGMA journal_mode = WAL")
            # FULL: each commit reaches the disk, so a power cut loses no recorded 250.
            self._db.execute("PRAGMA synchronous = FULL")
            self._reads = sqlite3.connect(path, isolation_level=None)
            self._reads.execute("PRAGMA busy_timeout = 10000")
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open the dispatch journal ({exc})") from exc

    def __enter__(self) -> SqliteDispatchJournal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the lock if held, then the connection."""
        if self._locked:
            self.release()
        self._db.close()
        self._reads.close()

    def acquire(self, segment: Segment) -> None:
        """Take this issue's dispatch lock, or raise :class:`DispatchLocked`."""
        now = time.time()
        host = socket.gethostname()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:  # busy past busy_timeout: another writer
            raise StoreError(
                f"{self.path}: the subscriber database is busy ({exc});"
                " another newsletter command is writing to it: try again in a moment"
            ) from exc
        try:
            row = self._db.execute(
                "SELECT host, pid, heartbeat_at FROM dispatch_locks WHERE issue = ?",
                (self.issue,),
            ).fetchone()
            if row is not None and not _stale(row[0], row[1], row[2], now, host):
                raise DispatchLocked(
                    f"{self.issue} is already being sent by process {row[1]} on {row[0]};"
                    " wait for it to finish (or stop it), then run the same command again"
                )
            self._db.execute(
                "INSERT OR REPLACE INTO dispatch_locks (issue, owner, host, pid, heartbeat_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (self.issue, self.owner, host, os.getpid(), now),
            )
            stamp = _now()
            self._db.execute(
                "INSERT INTO dispatches (issue, segment, started_at, last_run_at) VALUES"
                " (?, ?, ?, ?) ON CONFLICT (issue) DO UPDATE SET segment = excluded.segment,"
                " last_run_at = excluded.last_run_at",
                (self.issue, segment, stamp, stamp),
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._locked = True
        self._last_heartbeat = now

    def release(self, result: str = "") -> None:
        """Give the lock back, noting how the run ended."""
        with _transaction(self._db):
            self._db.execute(
                "DELETE FROM dispatch_locks WHERE issue = ? AND owner = ?", (self.issue, self.owner)
            )
            if result:
                self._db.execute(
                    "UPDATE dispatches SET last_result = ? WHERE issue = ?", (result, self.issue)
                )
        self._locked = False

    def states(self, subscriber_ids: Sequence[int]) -> dict[int, tuple[State, bool]]:
        """The recorded state and retryable flag of those of ``subscriber_ids`` with a row."""
        if not subscriber_ids:
            return {}
        marks = ",".join("?" * len(subscriber_ids))
        rows = self._reads.execute(
            f"SELECT subscriber_id, state, retryable FROM deliveries WHERE issue = ?"
            f" AND subscriber_id IN ({marks})",
            (self.issue, *subscriber_ids),
        )
        return {sid: (cast(State, state), bool(retryable)) for sid, state, retryable in rows}

    def record(self, outcomes: Iterable[Outcome]) -> None:
        """Write ``outcomes`` in one transaction, in which a bounced outcome also marks
        its subscriber bounced, so later issues skip them. Safe to call from one other
        thread at a time."""
        stamp = _now()
        rows: list[tuple[object, ...]] = []
        bounces: list[tuple[str, str]] = []
        for outcome in outcomes:
            recipient = outcome.recipient
            rows.append(
                (
                    self.issue,
                    recipient.journal_id,
                    recipient.email,
                    outcome.state,
                    1 if outcome.state == "sending" else 0,
                    outcome.code,
                    outcome.reply,
                    int(outcome.retryable),
                    stamp,
                )
            )
            if outcome.bounced:
                reason = f"bounced by {self.issue}: {outcome.code} {outcome.reply}"[:500]
                bounces.append((recipient.key, reason))
        now = time.time()
        try:
            self._write(rows, bounces, now)
        except sqlite3.Error as exc:
            raise StoreError(
                f"{self.path}: cannot record the dispatch ({exc}); nothing more is sent."
                " Free disk space or fix the file, then rerun the same command to resume"
            ) from exc

    def _write(
        self, rows: list[tuple[object, ...]], bounces: list[tuple[str, str]], now: float
    ) -> None:
        with _transaction(self._db):
            self._db.executemany(_UPSERT, rows)
            if bounces:
                mark_bounced(self._db, bounces)
            if self._locked and now - self._last_heartbeat > HEARTBEAT_SECONDS:
                self._db.execute(
                    "UPDATE dispatch_locks SET heartbeat_at = ? WHERE issue = ? AND owner = ?",
                    (now, self.issue, self.owner),
                )
                self._last_heartbeat = now

    def status(self) -> DispatchStatus:
        """Counts, what is left, and the failures of this issue's dispatch."""
        counts: dict[State, int] = dict.fromkeys(STATES, 0)
        for state, count in self._reads.execute(
            "SELECT state, count(*) FROM deliveries WHERE issue = ? GROUP BY state", (self.issue,)
        ):
            counts[cast(State, state)] = count
        row = self._reads.execute(
            "SELECT segment, last_result FROM dispatches WHERE issue = ?", (self.issue,)
        ).fetchone()
        segment = cast(Segment, row[0]) if row else None
        not_attempted = 0
        if segment is not None:
            tiers = segment_tiers(segment)
            not_attempted = self._reads.execute(
                "SELECT count(*) FROM subscribers AS s WHERE s.status = 'active' AND s.tier IN"
                f" ({','.join('?' * len(tiers))}) AND NOT EXISTS (SELECT 1 FROM deliveries AS d"
                " WHERE d.issue = ? AND d.subscriber_id = s.id)",
                (*tiers, self.issue),
            ).fetchone()[0]
        failures = [
            Delivery(
                subscriber_id=sid,
                email=email,
                state=cast(State, state),
                attempts=attempts,
                code=code,
                reply=reply,
                retryable=bool(retryable),
                updated_at=updated,
            )
            for sid, email, state, attempts, code, reply, retryable, updated in self._reads.execute(
                "SELECT subscriber_id, email, state, attempts, code, reply, retryable, updated_at"
                " FROM deliveries WHERE issue = ? AND state IN ('failed', 'deferred')"
                " ORDER BY state, subscriber_id",
                (self.issue,),
            )
        ]
        lock = self._reads.execute(
            "SELECT host, pid, heartbeat_at FROM dispatch_locks WHERE issue = ?", (self.issue,)
        ).fetchone()
        running = lock is not None and not _stale(
            lock[0], lock[1], lock[2], time.time(), socket.gethostname()
        )
        return DispatchStatus(
            issue=self.issue,
            segment=segment,
            counts=counts,
            not_attempted=not_attempted,
            failures=failures,
            last_result=row[1] if row else "",
            running=running,
        )


def _stale(host: str, pid: int, heartbeat_at: float, now: float, this_host: str) -> bool:
    if now - heartbeat_at > LOCK_STALE_SECONDS:
        return True
    if host == this_host and pid != os.getpid():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
    return False


class _transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
