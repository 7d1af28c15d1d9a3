"""The delivery record of each issue on the PostgreSQL server (tables ``deliveries``,
``dispatches`` and ``dispatch_locks``), by the rules of :mod:`composer.store.deliveries`.

The twin of :mod:`composer.store.sqlite.deliveries`. Writes go through a connection
of their own that the dispatcher's journal thread uses; each group commit sends its
upserts in one pipeline (psycopg's ``executemany``), one round trip to the server
whatever its size. Reads use another connection, a page at a time.

The dispatch lock is a row of ``dispatch_locks`` naming its holder's host, pid and
heartbeat, as in SQLite, so that ``status`` on any machine sees who holds it and a
holder on a machine that vanished is taken over once its heartbeat is stale. The
holder also keeps a session advisory lock on its write connection: the server drops
it the moment that connection ends, so a holder that died where its pid cannot be
checked (another machine) is taken over at once, without waiting out the heartbeat.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, cast

import psycopg

from composer.errors import DispatchLocked, JournalError, StoreError
from composer.model import Tier
from composer.store import Segment, segment_tiers
from composer.store.deliveries import (
    HEARTBEAT_SECONDS,
    MAY_HAVE_ARRIVED,
    STATES,
    Delivery,
    DispatchRecord,
    DispatchStatus,
    IssueIdentity,
    LockHolder,
    Outcome,
    Recipient,
    State,
    TracedDelivery,
    bounce_reason,
    lock_is_stale,
)
from composer.store.postgresql.database import (
    Connection,
    connect,
    errors_translated,
    now,
    write_transaction,
)
from composer.store.postgresql.rows import bounced, subscriber_from_row
from composer.store.tables import DELIVERY_COLUMNS, SUBSCRIBER_COLUMNS, to_send_condition

# One statement writes a whole round of outcomes (at most one per reader), a row of
# VALUES each. An outcome without a Message-ID keeps the recorded one. What came back
# about a copy (a bounce, a complaint) is the last word on it: a report can arrive
# before the dispatch commits the copy's 250, which must not overwrite it.
_UPSERT = """
INSERT INTO deliveries (issue, subscriber_id, email, state, attempts, code, reply, retryable,
                        message_id, updated_at)
VALUES {rows}
ON CONFLICT (issue, subscriber_id) DO UPDATE SET
    state = excluded.state,
    attempts = deliveries.attempts + excluded.attempts,
    code = CASE WHEN excluded.state = 'sending' THEN deliveries.code ELSE excluded.code END,
    reply = CASE WHEN excluded.state = 'sending' THEN deliveries.reply ELSE excluded.reply END,
    retryable = excluded.retryable,
    message_id = coalesce(excluded.message_id, deliveries.message_id),
    updated_at = excluded.updated_at
WHERE deliveries.state NOT IN ('bounced', 'complained')
"""
_ROW = "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
_DELIVERY_SELECT = ", ".join(f"d.{name}" for name in DELIVERY_COLUMNS)
_SUBSCRIBER_SELECT = ", ".join(f"s.{name}" for name in SUBSCRIBER_COLUMNS)
# Advisory locks, each a class and the hash of the dispatch's key: the one a holder keeps
# while it sends, and the one processes taking the lock take turns under.
_DISPATCH_LOCKS = 0x6E64  # "nd"
_ACQUIRING = 0x6E61  # "na"


class PostgresDispatchJournal:
    """:class:`composer.store.deliveries.DispatchJournal` of one issue; opened by
    :meth:`PostgresSubscriberStore.deliveries`, which has brought the schema up to date.
    ``identity``, when given, is recorded with the dispatch when the lock is taken."""

    def __init__(
        self, url: str, password_env: str, key: str, identity: IssueIdentity | None = None
    ) -> None:
        self.url = url
        self.key = key
        self.identity = identity
        self.name = identity.slug if identity else key
        self.owner = uuid.uuid4().hex
        self._locked = False
        self._last_heartbeat = 0.0
        self._db = connect(url, password_env, application="newsletter journal")
        try:
            self._reads = connect(url, password_env)
        except BaseException:
            self._db.close()
            raise

    def __enter__(self) -> PostgresDispatchJournal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the lock if held, then the connections (which ends the advisory lock)."""
        try:
            if self._locked:
                self.release()
        finally:
            self._db.close()
            self._reads.close()

    def acquire(self, segment: Segment) -> None:
        """Take this issue's dispatch lock, or raise :class:`DispatchLocked`."""
        now_ = time.time()
        host = socket.gethostname()
        outcome = "the dispatch did not start and nothing was sent: run the same command again"
        try:
            with write_transaction(self._db, self.url, outcome):
                # Two processes acquiring at once take turns here.
                self._db.execute(
                    "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_ACQUIRING, self.key)
                )
                self._take_lock(segment, host, now_)
        except StoreError as exc:
            raise JournalError(exc.message) from exc
        self._locked = True
        self._last_heartbeat = now_

    def _take_lock(self, segment: Segment, host: str, now_: float) -> None:
        """Inside the caller's transaction: refuse a live holder, then record this
        process as the holder and the dispatch as run now."""
        holder = self._holder(self._db)
        # Held for the whole session; free only when no live connection holds it.
        row = self._db.execute(
            "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (_DISPATCH_LOCKS, self.key)
        ).fetchone()
        session_lock = bool(row and row[0])
        if holder is not None and not session_lock and not lock_is_stale(holder, now_, host):
            raise DispatchLocked(
                f"{self.name} is already being sent by process {holder.pid} on"
                f" {holder.host}; wait for it to finish (or stop it), then run the same"
                " command again"
            )
        self._db.execute(
            "INSERT INTO dispatch_locks (issue, owner, host, pid, heartbeat_at)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (issue) DO UPDATE SET"
            " owner = excluded.owner, host = excluded.host, pid = excluded.pid,"
            " heartbeat_at = excluded.heartbeat_at",
            (self.key, self.owner, host, os.getpid(), now_),
        )
        stamp = now()
        self._db.execute(
            "INSERT INTO dispatches (issue, segment, started_at, last_run_at, slug) VALUES"
            " (%s, %s, %s, %s, %s) ON CONFLICT (issue) DO UPDATE SET"
            " segment = excluded.segment, last_run_at = excluded.last_run_at",
            (self.key, segment, stamp, stamp, self.key),
        )
        if self.identity is not None:
            self._db.execute(
                "UPDATE dispatches SET slug = %s, issue_id = %s, content_digest = %s"
                " WHERE issue = %s",
                (self.identity.slug, self.identity.id or None, self.identity.content, self.key),
            )

    def release(self, result: str = "") -> None:
        """Give the lock back, noting how the run ended; tried once (a lock that cannot
        be deleted goes stale when this process ends)."""
        self._locked = False
        outcome = (
            f"the dispatch lock of {self.key} was not released: it is free once this"
            " process has ended"
        )
        try:
            with write_transaction(self._db, self.url, outcome):
                self._db.execute(
                    "DELETE FROM dispatch_locks WHERE issue = %s AND owner = %s",
                    (self.key, self.owner),
                )
                if result:
                    self._db.execute(
                        "UPDATE dispatches SET last_result = %s WHERE issue = %s",
                        (result, self.key),
                    )
                self._db.execute("SELECT pg_advisory_unlock_all()")
        except StoreError as exc:
            raise JournalError(exc.message) from exc

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
            segment, retry_failed=retry_failed, include_unknown=include_unknown, mark="%s"
        )
        query = (
            "SELECT s.id, s.email, s.key, s.name, s.tier FROM subscribers AS s"
            " LEFT JOIN deliveries AS d ON d.issue = %s AND d.subscriber_id = s.id"
            f" WHERE {where} AND s.id > %s ORDER BY s.id LIMIT %s"
        )
        last = 0
        while True:
            # Each page is its own short statement: a long dispatch holds no snapshot.
            with errors_translated(self.url):
                rows = self._reads.execute(query, (self.key, *params, last, page_size)).fetchall()
            for sid, email, key, name, tier in rows:
                yield Recipient(
                    email=email, tier=cast(Tier, tier), name=name, key=key, subscriber_id=sid
                )
            if len(rows) < page_size:
                return
            last = rows[-1][0]

    def count_to_send(
        self, segment: Segment, *, retry_failed: bool = False, include_unknown: bool = False
    ) -> int:
        """How many recipients :meth:`recipients` would yield now, counted in SQL."""
        where, params = to_send_condition(
            segment, retry_failed=retry_failed, include_unknown=include_unknown, mark="%s"
        )
        query = (
            "SELECT count(*) FROM subscribers AS s LEFT JOIN deliveries AS d"
            f" ON d.issue = %s AND d.subscriber_id = s.id WHERE {where}"
        )
        with errors_translated(self.url):
            row = self._reads.execute(query, (self.key, *params)).fetchone()
        return int(row[0]) if row else 0

    def record(self, outcomes: Iterable[Outcome]) -> None:
        """Write ``outcomes`` in one transaction, marking bounced subscribers bounced."""
        # Round n holds each reader's n-th outcome of this commit: a round has a reader
        # once (one statement cannot update a row twice), and rounds run in order, so a
        # reader's later outcome still wins.
        rounds: list[list[tuple[object, ...]]] = []
        seen: dict[int, int] = {}
        bounces: list[tuple[str, str]] = []
        for outcome in outcomes:
            recipient = outcome.recipient
            sid = recipient.journal_id
            number = seen[sid] = seen.get(sid, -1) + 1
            if number == len(rounds):
                rounds.append([])
            rounds[number].append(
                (
                    sid,
                    recipient.email,
                    outcome.state,
                    1 if outcome.state == "sending" else 0,
                    outcome.code,
                    outcome.reply,
                    outcome.retryable,
                    outcome.message_id,
                )
            )
            if outcome.bounced:
                bounces.append((recipient.key, bounce_reason(self.name, outcome)))
        stamp = now()
        statements = [
            (
                _UPSERT.format(rows=", ".join([_ROW] * len(round_))),
                tuple(value for row in round_ for value in (self.key, *row, stamp)),
            )
            for round_ in rounds
        ]
        if bounces:
            statements.append(bounced(bounces))
        now_ = time.time()
        if self._locked and now_ - self._last_heartbeat > HEARTBEAT_SECONDS:
            statements.append(
                (
                    "UPDATE dispatch_locks SET heartbeat_at = %s WHERE issue = %s AND owner = %s",
                    (now_, self.key, self.owner),
                )
            )
        try:
            with errors_translated(
                self.url, "the outcomes since the last commit were not recorded"
            ):
                # Bound here and sent as one query string, which the server runs as one
                # transaction: a group commit is one round trip and one flush to the disk.
                cursor = psycopg.ClientCursor(self._db)
                cursor.execute(
                    ";\n".join(cursor.mogrify(sql, params) for sql, params in statements)
                )
        except StoreError as exc:
            raise JournalError(exc.message) from exc
        if len(statements) > len(rounds) + bool(bounces):
            self._last_heartbeat = now_

    def status(self) -> DispatchStatus:
        """Counts, what is left, and the failures of this issue's dispatch."""
        with errors_translated(self.url):
            return self._status()

    def _status(self) -> DispatchStatus:
        counts: dict[State, int] = dict.fromkeys(STATES, 0)
        for state, count in self._reads.execute(
            "SELECT state, count(*) FROM deliveries WHERE issue = %s GROUP BY state", (self.key,)
        ):
            counts[cast(State, state)] = count
        row = self._reads.execute(
            "SELECT segment, last_result FROM dispatches WHERE issue = %s", (self.key,)
        ).fetchone()
        segment = cast(Segment, row[0]) if row else None
        not_attempted = 0
        if segment is not None:
            counted = self._reads.execute(
                "SELECT count(*) FROM subscribers AS s WHERE s.status = 'active'"
                " AND s.tier = ANY(%s) AND NOT EXISTS (SELECT 1 FROM deliveries AS d"
                " WHERE d.issue = %s AND d.subscriber_id = s.id)",
                (list(segment_tiers(segment)), self.key),
            ).fetchone()
            not_attempted = int(counted[0]) if counted else 0
        failures = [
            _delivery(failure)
            for failure in self._reads.execute(
                f"SELECT {_DELIVERY_SELECT} FROM deliveries AS d WHERE d.issue = %s AND"
                " d.state IN ('failed', 'deferred', 'unknown') ORDER BY d.state, d.subscriber_id",
                (self.key,),
            )
        ]
        return DispatchStatus(
            issue=self.name,
            segment=segment,
            counts=counts,
            not_attempted=not_attempted,
            failures=failures,
            last_result=row[1] if row else "",
            running=self._running(),
        )

    def _running(self) -> bool:
        """Whether a live process holds the lock, by the rules :meth:`acquire` applies."""
        holder = self._holder(self._reads)
        if holder is None or self._locked:
            return holder is not None
        with self._reads.transaction():
            row = self._reads.execute(
                "SELECT pg_try_advisory_xact_lock(%s, hashtext(%s))", (_DISPATCH_LOCKS, self.key)
            ).fetchone()
        if row and row[0]:
            return False  # no live connection holds it: the holder has ended
        return not lock_is_stale(holder, time.time(), socket.gethostname())

    def _holder(self, db: Connection) -> LockHolder | None:
        row = db.execute(
            "SELECT host, pid, heartbeat_at FROM dispatch_locks WHERE issue = %s", (self.key,)
        ).fetchone()
        return LockHolder(host=row[0], pid=row[1], heartbeat_at=row[2]) if row else None


def find_dispatches(db: Connection, issue: IssueIdentity) -> list[DispatchRecord]:
    """Every dispatch recorded under ``issue``'s key, or with its id, content or file name."""
    rows = db.execute(
        "SELECT d.issue, d.slug, d.issue_id, d.content_digest, d.segment, d.started_at,"
        " d.last_run_at, (SELECT count(*) FROM deliveries AS x WHERE x.issue = d.issue"
        " AND x.state = ANY(%s)) FROM dispatches AS d"
        " WHERE d.issue = %s OR d.issue_id = %s OR d.content_digest = %s OR d.slug = %s",
        (list(MAY_HAVE_ARRIVED), issue.key, issue.id or None, issue.content, issue.slug),
    ).fetchall()
    return [
        DispatchRecord(
            key=key,
            slug=slug,
            id=issue_id or "",
            content=content,
            segment=cast(Segment, segment),
            started_at=started,
            last_run_at=last_run,
            sent=sent,
        )
        for key, slug, issue_id, content, segment, started, last_run, sent in rows
    ]


def find_delivery(db: Connection, message_id: str) -> TracedDelivery | None:
    """The delivery whose copy had ``message_id``, with its subscriber (the latest, should
    two issues' copies ever share one)."""
    row = db.execute(
        f"SELECT {_DELIVERY_SELECT}, {_SUBSCRIBER_SELECT} FROM deliveries AS d"
        " JOIN subscribers AS s ON s.id = d.subscriber_id WHERE d.message_id = %s"
        " ORDER BY d.updated_at DESC LIMIT 1",
        (message_id,),
    ).fetchone()
    if row is None:
        return None
    width = len(DELIVERY_COLUMNS)
    return TracedDelivery(
        delivery=_delivery(row[:width]), subscriber=subscriber_from_row(row[width:])
    )


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
        retryable=retryable,
        message_id=message_id,
        updated_at=updated,
    )
