"""The delivery record of each issue on the PostgreSQL server (tables ``deliveries``
and ``dispatches``), by the rules of :mod:`composer.store.deliveries`.

The twin of :mod:`composer.store.sqlite.deliveries`. Writes go through a connection
of their own that the dispatcher's journal thread uses; each group commit sends its
upserts as one query string, one round trip to the server whatever its size. Reads
and claims use another connection, on the caller's thread.

Where SQLite lets one process at a time send an issue, here several processes on any
machines send it together as its workers: who they are, what each claimed and its
lease are :mod:`composer.store.postgresql.workers`'.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, cast

import psycopg

from composer.errors import JournalError, StoreError
from composer.model import Tier
from composer.store import Segment, segment_tiers
from composer.store.deliveries import (
    CLAIM_BATCH,
    MAY_HAVE_ARRIVED,
    STATES,
    Delivery,
    DispatchRecord,
    DispatchStatus,
    DispatchWorker,
    IssueIdentity,
    Lease,
    Outcome,
    Recipient,
    State,
    TracedDelivery,
    bounce_reason,
)
from composer.store.postgresql.database import (
    Connection,
    connect,
    errors_translated,
    now,
    write_transaction,
)
from composer.store.postgresql.rows import bounced, subscriber_from_row
from composer.store.postgresql.workers import DispatchWorkers
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


class PostgresDispatchJournal:
    """:class:`composer.store.deliveries.DispatchJournal` of one issue; opened by
    :meth:`PostgresSubscriberStore.deliveries`, which has brought the schema up to date.
    ``identity``, when given, is recorded with the dispatch when a worker joins it."""

    shared = True

    def __init__(
        self, url: str, password_env: str, key: str, identity: IssueIdentity | None = None
    ) -> None:
        self.url = url
        self.key = key
        self.identity = identity
        self.name = identity.slug if identity else key
        self._workers = DispatchWorkers(url, password_env, key)
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
        """Stop taking part if this process does, then close the connections."""
        try:
            if self._workers.joined:
                self.release()
        finally:
            self._workers.stop_heartbeat()
            self._db.close()
            self._reads.close()

    def acquire(self, segment: Segment, *, lease_seconds: float = 30.0) -> None:
        """Join this issue's dispatch as one of its workers (:mod:`.workers`), recording
        it as run now; :class:`~composer.errors.DispatchLocked` when the live workers
        send another segment."""
        outcome = "the dispatch did not start and nothing was sent: run the same command again"
        try:
            self._workers.start_heartbeat(lease_seconds)
            with write_transaction(self._reads, self.url, outcome):
                self._workers.join(self._reads, segment, self.name)
                self._record_run(segment)
        except BaseException as exc:
            self._workers.stop_heartbeat()
            if isinstance(exc, StoreError) and not isinstance(exc, JournalError):
                raise JournalError(exc.message) from exc
            raise
        self._workers.joined_now()

    def _record_run(self, segment: Segment) -> None:
        """Inside the caller's transaction: the dispatch, run now, of this identity."""
        stamp = now()
        self._reads.execute(
            "INSERT INTO dispatches (issue, segment, started_at, last_run_at, slug) VALUES"
            " (%s, %s, %s, %s, %s) ON CONFLICT (issue) DO UPDATE SET"
            " segment = excluded.segment, last_run_at = excluded.last_run_at",
            (self.key, segment, stamp, stamp, self.key),
        )
        if self.identity is not None:
            self._reads.execute(
                "UPDATE dispatches SET slug = %s, issue_id = %s, content_digest = %s"
                " WHERE issue = %s",
                (self.identity.slug, self.identity.id or None, self.identity.content, self.key),
            )

    def release(self, result: str = "", *, settled: bool = False) -> None:
        """Leave the dispatch: done when every recipient it claimed is ``settled``, else
        stopped, leaving its unsettled claims to the other workers. The last worker
        sending notes ``result`` as the dispatch's. Tried once (a worker that cannot
        record it is gone once this process ends)."""
        outcome = (
            f"this worker of {self.key} could not record that it left: the others take"
            " over what it claimed once this process has ended"
        )
        try:
            with write_transaction(self._reads, self.url, outcome):
                self._workers.leave(self._reads, finished=settled)
                if result:
                    self._reads.execute(
                        "UPDATE dispatches SET last_result = %s WHERE issue = %s AND NOT EXISTS"
                        " (SELECT 1 FROM dispatch_workers WHERE issue = %s AND state = 'sending')",
                        (result, self.key, self.key),
                    )
        except StoreError as exc:
            raise JournalError(exc.message) from exc
        finally:
            self._workers.stop_heartbeat()

    def claim(
        self,
        segment: Segment,
        *,
        retry_failed: bool = False,
        include_unknown: bool = False,
        batch: int = CLAIM_BATCH,
    ) -> list[Recipient]:
        """Up to ``batch`` recipients still to send, this worker's alone under its lease."""
        where, params = to_send_condition(
            segment, retry_failed=retry_failed, include_unknown=include_unknown, mark="%s"
        )
        with errors_translated(self.url):
            return self._workers.claim(self._reads, where, params, batch)

    def lease(self) -> Lease:
        """This worker's standing, as its heartbeat last heard."""
        return self._workers.lease()

    def workers(self) -> list[DispatchWorker]:
        """The workers of this dispatch's latest run."""
        with errors_translated(self.url):
            return self._workers.listed(self._reads)

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
        states: list[State] = []
        for outcome in outcomes:
            states.append(outcome.state)
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
        if counted := self._workers.counted(states):
            statements.append(counted)
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
        workers = self._workers.listed(self._reads)
        return DispatchStatus(
            issue=self.name,
            segment=segment,
            counts=counts,
            not_attempted=not_attempted,
            failures=failures,
            last_result=row[1] if row else "",
            running=any(worker.alive for worker in workers),
            workers=tuple(workers),
        )


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
