"""Bounces and complaints on the PostgreSQL server (table ``feedback``), by the rules of
:mod:`composer.store.feedback`: the twin of :mod:`composer.store.sqlite.feedback`, on a
connection inside the caller's transaction where it writes.

SQLite lets one writer in at a time; here several (webhook requests on two machines,
a mailbox being read) record at once, so the order of what one event reads and writes
matters:

- the event is claimed first, by inserting its row (``ON CONFLICT DO NOTHING``): the
  same event arriving twice at once waits for the first to commit, then is a
  duplicate, never a failed insert;
- the reader's row is then locked (``FOR UPDATE``) before anything about them is read,
  so two soft bounces for one reader are counted one after the other and the second
  sees the first: together they never both miss the soft limit; and their copy's
  state is read under that lock, so a complaint is never overwritten by a bounce
  decided from what the copy was before.
"""

from __future__ import annotations

from typing import Any, cast

from composer.returnpath import dispatch_tag, read_token
from composer.store import Subscriber
from composer.store.deliveries import State
from composer.store.feedback import (
    Feedback,
    FeedbackCounts,
    FeedbackEffect,
    FeedbackKind,
    FeedbackRecord,
    FeedbackResult,
    decide,
    feedback_reason,
    moves_delivery,
)
from composer.store.postgresql.database import Connection, moment, now
from composer.store.postgresql.rows import subscriber_from_row
from composer.store.tables import SUBSCRIBER_SELECT

_COLUMNS = (
    "f.kind, f.source, f.event_id, f.reason, f.occurred_at, f.message_id, f.recipient,"
    " f.return_token, f.effect, s.email, f.issue, f.recorded_at"
)


def record_feedback(db: Connection, feedback: Feedback, soft_limit: int) -> FeedbackResult:
    """Apply ``feedback`` inside the caller's transaction on ``db``."""
    # Kept as unmatched until it is matched; its issue stays NULL until then, so the
    # soft failures counted below are the others'.
    claimed = db.execute(
        "INSERT INTO feedback (source, event_id, kind, effect, reason, occurred_at,"
        " recorded_at, message_id, recipient, return_token)"
        " VALUES (%s, %s, %s, 'unmatched', %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (source, event_id) DO NOTHING RETURNING id",
        (
            feedback.source,
            feedback.event_id,
            feedback.kind,
            feedback.reason,
            moment(feedback.occurred_at),
            now(),
            feedback.message_id,
            feedback.recipient,
            feedback.return_token,
        ),
    ).fetchone()
    if claimed is None:
        return FeedbackResult(feedback=feedback, effect="duplicate")
    subscriber, dispatch = _match(db, feedback)
    effect: FeedbackEffect = "unmatched"
    if subscriber is not None:
        state = _delivery_state(db, subscriber, dispatch)
        soft_dispatches = 0
        if feedback.kind == "soft":
            soft_dispatches = _soft_dispatches(db, subscriber, dispatch)
        decision = decide(feedback.kind, subscriber.status, soft_dispatches, soft_limit)
        effect = decision.effect
        if decision.status is not None:
            db.execute(
                "UPDATE subscribers SET status = %s, status_changed_at = %s,"
                " status_reason = %s WHERE id = %s",
                (
                    decision.status,
                    now(),
                    feedback_reason(feedback.kind, feedback.source, dispatch, feedback.reason),
                    subscriber.id,
                ),
            )
        to = decision.delivery_state
        if dispatch is not None and state is not None and to and moves_delivery(state, to):
            db.execute(
                "UPDATE deliveries SET state = %s, updated_at = %s WHERE issue = %s AND"
                " subscriber_id = %s",
                (to, now(), dispatch, subscriber.id),
            )
        db.execute(
            "UPDATE feedback SET effect = %s, subscriber_id = %s, issue = %s WHERE id = %s",
            (effect, subscriber.id, dispatch, claimed[0]),
        )
    return FeedbackResult(
        feedback=feedback,
        effect=effect,
        email=subscriber.email if subscriber else None,
        dispatch=dispatch,
    )


def _match(db: Connection, feedback: Feedback) -> tuple[Subscriber | None, str | None]:
    """The reader (their row locked, as it is now) and dispatch key ``feedback`` is about:
    by its return token, else the copy's Message-ID, else the original recipient's
    latest delivery."""
    token = read_token(feedback.return_token) if feedback.return_token else None
    if token is not None:
        subscriber = _locked(db, "id = %s", token.subscriber_id)
        if subscriber is not None:
            for (issue,) in db.execute(
                "SELECT issue FROM deliveries WHERE subscriber_id = %s", (subscriber.id,)
            ):
                if dispatch_tag(issue) == token.dispatch_tag:
                    return subscriber, issue
            return subscriber, None
    if feedback.message_id:
        row = db.execute(
            "SELECT subscriber_id, issue FROM deliveries WHERE message_id = %s"
            " ORDER BY updated_at DESC LIMIT 1",
            (feedback.message_id,),
        ).fetchone()
        if row is not None:
            return _locked(db, "id = %s", row[0]), row[1]
    if feedback.recipient:
        key = feedback.recipient.strip().strip("<>").lower()
        subscriber = _locked(db, "key = %s", key)
        if subscriber is not None:
            row = db.execute(
                "SELECT issue FROM deliveries WHERE subscriber_id = %s"
                " ORDER BY updated_at DESC LIMIT 1",
                (subscriber.id,),
            ).fetchone()
            return subscriber, row[0] if row else None
    return None, None


def _locked(db: Connection, where: str, value: object) -> Subscriber | None:
    """The subscriber ``where`` names, their row locked until the transaction ends."""
    row = db.execute(
        f"SELECT {SUBSCRIBER_SELECT} FROM subscribers WHERE {where} FOR UPDATE", (value,)
    ).fetchone()
    return subscriber_from_row(row) if row else None


def _delivery_state(db: Connection, subscriber: Subscriber, dispatch: str | None) -> State | None:
    """The state of ``subscriber``'s copy of ``dispatch`` now, under their row's lock."""
    if dispatch is None:
        return None
    row = db.execute(
        "SELECT state FROM deliveries WHERE issue = %s AND subscriber_id = %s",
        (dispatch, subscriber.id),
    ).fetchone()
    return cast(State, row[0]) if row else None


def _soft_dispatches(db: Connection, subscriber: Subscriber, dispatch: str | None) -> int:
    """How many different dispatches ``subscriber``'s soft failures recorded since their
    last status change came from, this one (about ``dispatch``) included. Our own clock
    says when: a report's date is the remote server's."""
    dispatches = {
        issue
        for (issue,) in db.execute(
            "SELECT DISTINCT issue FROM feedback WHERE subscriber_id = %s AND kind = 'soft'"
            " AND issue IS NOT NULL AND recorded_at >= %s",
            (subscriber.id, subscriber.status_changed_at),
        )
    }
    if dispatch is not None:
        dispatches.add(dispatch)
    return len(dispatches)


def recent_feedback(db: Connection, limit: int) -> list[FeedbackRecord]:
    """The latest ``limit`` events recorded, newest first."""
    rows = db.execute(
        f"SELECT {_COLUMNS} FROM feedback AS f LEFT JOIN subscribers AS s"
        " ON s.id = f.subscriber_id ORDER BY f.id DESC LIMIT %s",
        (limit,),
    ).fetchall()
    return [_record(row) for row in rows]


def feedback_counts(db: Connection, dispatch_key: str) -> FeedbackCounts:
    """The events recorded against the dispatch keyed ``dispatch_key``, by kind."""
    counts = dict.fromkeys(("hard", "soft", "complaint"), 0)
    for kind, count in db.execute(
        "SELECT kind, count(*) FROM feedback WHERE issue = %s GROUP BY kind", (dispatch_key,)
    ):
        counts[kind] = count
    return FeedbackCounts(**counts)


def _record(row: tuple[Any, ...]) -> FeedbackRecord:
    kind, source, event_id, reason, occurred, message_id, recipient, token = row[:8]
    effect, email, issue, recorded = row[8:]
    return FeedbackRecord(
        feedback=Feedback(
            kind=cast(FeedbackKind, kind),
            source=source,
            event_id=event_id,
            reason=reason,
            occurred_at=occurred,
            message_id=message_id,
            recipient=recipient,
            return_token=token,
        ),
        effect=cast(FeedbackEffect, effect),
        email=email,
        dispatch=issue,
        recorded_at=recorded,
    )
