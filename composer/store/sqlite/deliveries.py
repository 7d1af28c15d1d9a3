"""The delivery record of each issue in the subscriber database (tables ``deliveries``,
``dispatches`` and ``dispatch_locks``), by the rules of :mod:`composer.store.deliveries`.

Writes go through a connection of their own that the dispatcher's journal thread
uses (one thread at a time), so the event loop keeps talking SMTP while a commit
waits for the disk; each commit groups the outcomes of every connection and, with
``synchronous = FULL``, survives a power cut. Reads (who is still to send, the
status) use another connection on the caller's thread, a page at a time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator
from itertools import groupby, islice
from pathlib import Path
from types import TracebackType
from typing import Any, cast

from composer.errors import DispatchLocked, JournalError, StoreBusy
from composer.model import Tier
from composer.store import Segment, segment_tiers
from composer.store.deliveries import (
    CLAIM_BATCH,
    HEARTBEAT_SECONDS,
    MAY_HAVE_ARRIVED,
    STATES,
    Delivery,
    DispatchRecord,
    DispatchStatus,
    DispatchWorker,
    IssueIdentity,
    Lease,
    LockHolder,
    Outcome,
    Recipient,
    State,
    TracedDelivery,
    bounce_reason,
    lock_is_stale,
)
from composer.store.sqlite.database import connect, now_text, write_transaction
from composer.store.sqlite.rows import mark_bounced, subscriber_from_row
from composer.store.tables import DELIVERY_COLUMNS, SUBSCRIBER_COLUMNS, to_send_condition

# A database held by another writer is waited for this long before giving up.
BUSY_TIMEOUT_MS = 10_000

# What came back about a copy (a bounce, a complaint) is the last word on it: a report
# can arrive before the dispatch commits the copy's 250, which must not overwrite it.
_UPSERT = """
INSERT INTO deliveries (issue, subscriber_id, email, state, attempts, code, reply, retryable,
                        message_id, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (issue, subscriber_id) DO UPDATE SET
    state = excluded.state,
    attempts = deliveries.attempts + excluded.attempts,
    code = CASE WHEN excluded.state = 'sending' THEN deliveries.code ELSE excluded.code END,
    reply = CASE WHEN excluded.state = 'sending' THEN deliveries.reply ELSE excluded.reply END,
    retryable = excluded.retryable,
    updated_at = excluded.updated_at
WHERE deliveries.state NOT IN ('bounced', 'complained')
"""
# An outcome without a Message-ID leaves the recorded one, and its index, alone: the keys
# are random, so each index write lands on a page of its own, and rewriting them all for
# every sent row would double what each commit writes to disk.
_UPSERT_WITH_MESSAGE_ID = _UPSERT.replace(
    "updated_at = excluded.updated_at\n",
    "updated_at = excluded.updated_at,\n    message_id = excluded.message_id\n",
)
_MESSAGE_ID = 8  # its place in a row of _UPSERT
_DELIVERY_SELECT = ", ".join(f"d.{name}" for name in DELIVERY_COLUMNS)
_SUBSCRIBER_SELECT = ", ".join(f"s.{name}" for name in SUBSCRIBER_COLUMNS)


class SqliteDispatchJournal:
    """:class:`composer.store.deliveries.DispatchJournal` of one issue; opened by
    :meth:`SqliteSubscriberStore.deliveries`, which has brought the schema up to date.
    ``identity``, when given, is recorded with the dispatch when the lock is taken.
    One process at a time sends a dispatch here: the lock says which."""

    shared = False

    def __init__(self, path: Path, key: str, identity: IssueIdentity | None = None) -> None:
        self.path = path
        self.key = key
        self.identity = identity
        self.name = identity.slug if identity else key
        self.owner = uuid.uuid4().hex
        self._locked = False
        self._last_heartbeat = 0.0
        self._claims: Iterator[Recipient] | None = None
        self._db = connect(path, busy_timeout_ms=BUSY_TIMEOUT_MS, any_thread=True)
        try:
            self._reads = connect(path, busy_timeout_ms=BUSY_TIMEOUT_MS)
        except BaseException:
            self._db.close()
            raise

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
        """Release the lock if held, then the connections."""
        try:
            if self._locked:
                self.release()
        finally:
            self._db.close()
            self._reads.close()

    def acquire(self, segment: Segment, *, lease_seconds: float = 30.0) -> None:
        """Take this issue's dispatch lock, or raise :class:`DispatchLocked`; the lock
        is its own lease (``lease_seconds`` has no use here)."""
        now = time.time()
        host = socket.gethostname()
        try:
            with write_transaction(self._db, self.path):
                self._take_lock(segment, host, now)
        except sqlite3.Error as exc:
            raise JournalError(
                f"{self.path}: cannot start the dispatch ({exc}); nothing was sent. Free"
                " disk space (or fix what the error names), then run the same command"
            ) from exc
        self._locked = True
        self._last_heartbeat = now

    def _take_lock(self, segment: Segment, host: str, now: float) -> None:
        """Inside the caller's transaction: refuse a live holder, then record this
        process as the holder and the dispatch as run now."""
        holder = self._holder(self._db)
        if holder is not None and not lock_is_stale(holder, now, host):
            raise DispatchLocked(
                f"{self.name} is already being sent by process {holder.pid} on"
                f" {holder.host}; wait for it to finish (or stop it), then run the same"
                " command again"
            )
        self._db.execute(
            "INSERT OR REPLACE INTO dispatch_locks (issue, owner, host, pid, heartbeat_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (self.key, self.owner, host, os.getpid(), now),
        )
        stamp = now_text()
        self._db.execute(
            "INSERT INTO dispatches (issue, segment, started_at, last_run_at, slug) VALUES"
            " (?, ?, ?, ?, ?) ON CONFLICT (issue) DO UPDATE SET segment = excluded.segment,"
            " last_run_at = excluded.last_run_at",
            (self.key, segment, stamp, stamp, self.key),
        )
        if self.identity is not None:
            self._db.execute(
                "UPDATE dispatches SET slug = ?, issue_id = ?, content_digest = ? WHERE issue = ?",
                (
                    self.identity.slug,
                    self.identity.id or None,
                    self.identity.content,
                    self.key,
                ),
            )

    def release(self, result: str = "", *, settled: bool = False) -> None:
        """Give the lock back, noting how the run ended; tried once (a lock that cannot
        be deleted goes stale when this process ends). Whether the run ``settled`` all
        it took matters to no one else here: the next run reads what is left."""
        self._locked = False
        outcome = (
            f"the dispatch lock of {self.key} was not released: it is free once this"
            " process has ended"
        )
        try:
            with write_transaction(self._db, self.path, outcome):
                self._db.execute(
                    "DELETE FROM dispatch_locks WHERE issue = ? AND owner = ?",
                    (self.key, self.owner),
                )
                if result:
                    self._db.execute(
                        "UPDATE dispatches SET last_result = ? WHERE issue = ?",
                        (result, self.key),
                    )
        except StoreBusy as exc:
            raise JournalError(exc.message) from exc
        except sqlite3.Error as exc:
            raise JournalError(
                f"{self.path}: cannot release the dispatch lock of {self.key} ({exc});"
                " it is free once this process has ended"
            ) from exc

    def recipients(
        self,
        segment: Segment,
        *,
        retry_failed: bool = False,
        include_unknown: bool = False,
        page_size: int = 500,
    ) -> Iterator[Recipient]:
        """The active subscribers of ``segment`` still to send to, a page at a time."""
        where, params = to_send_condition(
            segment, retry_failed=retry_failed, include_unknown=include_unknown, mark="?"
        )
        query = (
            "SELECT s.id, s.email, s.key, s.name, s.tier FROM subscribers AS s"
            " LEFT JOIN deliveries AS d ON d.issue = ? AND d.subscriber_id = s.id"
            f" WHERE {where} AND s.id > ? ORDER BY s.id LIMIT ?"
        )
        last = 0
        while True:
            # Each page is its own short read, so a long dispatch never pins a snapshot
            # and writers (the unsubscribe server, this journal) are never blocked by it.
            rows = self._reads.execute(query, (self.key, *params, last, page_size)).fetchall()
            for sid, email, key, name, tier in rows:
                yield Recipient(
                    email=email, tier=cast(Tier, tier), name=name, key=key, subscriber_id=sid
                )
            if len(rows) < page_size:
                return
            last = rows[-1][0]

    def claim(
        self,
        segment: Segment,
        *,
        retry_failed: bool = False,
        include_unknown: bool = False,
        batch: int = CLAIM_BATCH,
    ) -> list[Recipient]:
        """The next ``batch`` of :meth:`recipients`: the lock makes them this process's
        alone, so a claim is the next stretch of one stream read a page at a time."""
        if self._claims is None:
            self._claims = self.recipients(
                segment, retry_failed=retry_failed, include_unknown=include_unknown
            )
        return list(islice(self._claims, batch))

    def lease(self) -> Lease:
        """Alone, with the lock: no one else to share the pace with or lose claims to."""
        return Lease()

    def workers(self) -> list[DispatchWorker]:
        """None: one process sends a dispatch here, and the lock names it."""
        return []

    def count_to_send(
        self, segment: Segment, *, retry_failed: bool = False, include_unknown: bool = False
    ) -> int:
        """How many recipients :meth:`recipients` would yield now, counted in SQL."""
        where, params = to_send_condition(
            segment, retry_failed=retry_failed, include_unknown=include_unknown, mark="?"
        )
        query = (
            "SELECT count(*) FROM subscribers AS s LEFT JOIN deliveries AS d"
            f" ON d.issue = ? AND d.subscriber_id = s.id WHERE {where}"
        )
        return int(self._reads.execute(query, (self.key, *params)).fetchone()[0])

    def record(self, outcomes: Iterable[Outcome]) -> None:
        """Write ``outcomes`` in one transaction, marking bounced subscribers bounced."""
        stamp = now_text()
        rows: list[tuple[object, ...]] = []
        bounces: list[tuple[str, str]] = []
        for outcome in outcomes:
            recipient = outcome.recipient
            rows.append(
                (
                    self.key,
                    recipient.journal_id,
                    recipient.email,
                    outcome.state,
                    1 if outcome.state == "sending" else 0,
                    outcome.code,
                    outcome.reply,
                    int(outcome.retryable),
                    outcome.message_id,
                    stamp,
                )
            )
            if outcome.bounced:
                bounces.append((recipient.key, bounce_reason(self.name, outcome)))
        try:
            self._write(rows, bounces, time.time())
        except StoreBusy as exc:
            raise JournalError(exc.message) from exc
        except sqlite3.Error as exc:
            self._make_room()
            raise JournalError(f"{self.path}: cannot record the dispatch ({exc})") from exc

    def _make_room(self) -> None:
        # On a full disk the commit that fails is one that had to grow the log (the WAL
        # file). Folding the log into the database lets the next commit write it from
        # its start again, in space the file already has, so that what a stopping
        # dispatch knows can still be saved. Without room even for that, nothing can.
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _write(
        self, rows: list[tuple[object, ...]], bounces: list[tuple[str, str]], now: float
    ) -> None:
        outcome = "the outcomes since the last commit were not recorded"
        with write_transaction(self._db, self.path, outcome):
            # Runs in order, so a reader's later outcome in the same commit still wins.
            for with_id, run in groupby(rows, key=lambda row: row[_MESSAGE_ID] is not None):
                self._db.executemany(_UPSERT_WITH_MESSAGE_ID if with_id else _UPSERT, run)
            if bounces:
                mark_bounced(self._db, bounces)
            if self._locked and now - self._last_heartbeat > HEARTBEAT_SECONDS:
                self._db.execute(
                    "UPDATE dispatch_locks SET heartbeat_at = ? WHERE issue = ? AND owner = ?",
                    (now, self.key, self.owner),
                )
                self._last_heartbeat = now

    def status(self) -> DispatchStatus:
        """Counts, what is left, and the failures of this issue's dispatch."""
        counts: dict[State, int] = dict.fromkeys(STATES, 0)
        for state, count in self._reads.execute(
            "SELECT state, count(*) FROM deliveries WHERE issue = ? GROUP BY state", (self.key,)
        ):
            counts[cast(State, state)] = count
        row = self._reads.execute(
            "SELECT segment, last_result FROM dispatches WHERE issue = ?", (self.key,)
        ).fetchone()
        segment = cast(Segment, row[0]) if row else None
        not_attempted = 0
        if segment is not None:
            tiers = segment_tiers(segment)
            not_attempted = self._reads.execute(
                "SELECT count(*) FROM subscribers AS s WHERE s.status = 'active' AND s.tier IN"
                f" ({','.join('?' * len(tiers))}) AND NOT EXISTS (SELECT 1 FROM deliveries AS d"
                " WHERE d.issue = ? AND d.subscriber_id = s.id)",
                (*tiers, self.key),
            ).fetchone()[0]
        failures = [
            _delivery(row)
            for row in self._reads.execute(
                f"SELECT {_DELIVERY_SELECT} FROM deliveries AS d WHERE d.issue = ? AND"
                " d.state IN ('failed', 'deferred', 'unknown') ORDER BY d.state, d.subscriber_id",
                (self.key,),
            )
        ]
        holder = self._holder(self._reads)
        running = holder is not None and not lock_is_stale(
            holder, time.time(), socket.gethostname()
        )
        return DispatchStatus(
            issue=self.name,
            segment=segment,
            counts=counts,
            not_attempted=not_attempted,
            failures=failures,
            last_result=row[1] if row else "",
            running=running,
        )

    def _holder(self, db: sqlite3.Connection) -> LockHolder | None:
        row = db.execute(
            "SELECT host, pid, heartbeat_at FROM dispatch_locks WHERE issue = ?", (self.key,)
        ).fetchone()
        return LockHolder(host=row[0], pid=row[1], heartbeat_at=row[2]) if row else None


def find_dispatches(db: sqlite3.Connection, issue: IssueIdentity) -> list[DispatchRecord]:
    """Every dispatch recorded under ``issue``'s key, or with its id, content or file name."""
    arrived = ",".join("?" * len(MAY_HAVE_ARRIVED))
    rows = db.execute(
        "SELECT d.issue, d.slug, d.issue_id, d.content_digest, d.segment, d.started_at,"
        " d.last_run_at, (SELECT count(*) FROM deliveries AS x WHERE x.issue = d.issue"
        f" AND x.state IN ({arrived})) FROM dispatches AS d"
        " WHERE d.issue = ? OR d.issue_id = ? OR d.content_digest = ? OR d.slug = ?",
        (*MAY_HAVE_ARRIVED, issue.key, issue.id or None, issue.content, issue.slug),
    ).fetchall()
    return [
        DispatchRecord(
            key=key,
            slug=slug,
            id=issue_id or "",
            content=content,
            segment=cast(Segment, segment),
            started_at=dt.datetime.fromisoformat(started),
            last_run_at=dt.datetime.fromisoformat(last_run),
            sent=sent,
        )
        for key, slug, issue_id, content, segment, started, last_run, sent in rows
    ]


def find_delivery(db: sqlite3.Connection, message_id: str) -> TracedDelivery | None:
    """The delivery whose copy had ``message_id``, with its subscriber (the latest, should
    two issues' copies ever share one)."""
    row = db.execute(
        f"SELECT {_DELIVERY_SELECT}, {_SUBSCRIBER_SELECT} FROM deliveries AS d"
        " JOIN subscribers AS s ON s.id = d.subscriber_id WHERE d.message_id = ?"
        " ORDER BY d.updated_at DESC LIMIT 1",
        (message_id,),
    ).fetchone()
    if row is None:
        return None
    width = len(DELIVERY_COLUMNS)
    return TracedDelivery(
        delivery=_delivery(row[:width]), subscriber=subscriber_from_row(row[width:])
    )


def deliveries_of(db: sqlite3.Connection, subscriber_id: int) -> tuple[Delivery, ...]:
    """Every delivery to subscriber ``subscriber_id``, oldest first."""
    rows = db.execute(
        f"SELECT {_DELIVERY_SELECT} FROM deliveries AS d WHERE d.subscriber_id = ?"
        " ORDER BY d.updated_at, d.issue",
        (subscriber_id,),
    )
    return tuple(_delivery(row) for row in rows)


def _delivery(row: tuple[Any, ...]) -> Delivery:
    issue, sid, email, state, attempts, code, reply, retryable, message_id, updated = row
    return Delivery(
        issue=issue,
        subscriber_id=sid,
        email=email,
        state=cast(State, state),
        attempts=attempts,
        code=code,
        reply=reply,
        retryable=bool(retryable),
        message_id=message_id,
        updated_at=dt.datetime.fromisoformat(updated),
    )
