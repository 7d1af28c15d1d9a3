"""Bounces and complaints in the subscriber database (table ``feedback``), by the rules
of :mod:`composer.store.feedback`: these functions only find, read and write rows, on a
connection inside the caller's transaction where they write."""

from __future__ import annotations

import datetime as dt
import sqlite3
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
from composer.store.sqlite.database import moment_text, now_text
from composer.store.sqlite.rows import SUBSCRIBER_SELECT, subscriber_from_row

_COLUMNS = (
    "f.kind, f.source, f.event_id, f.reason, f.occurred_at, f.message_id, f.recipient,"
    " f.return_token, f.effect, s.email, f.issue, f.recorded_at"
)


def record_feedback(db: sqlite3.Connection, feedback: Feedback, soft_limit: int) -> FeedbackResult:
    """Apply ``feedback`` inside the caller's write transaction on ``db``."""
    if db.execute(
        "SELECT 1 FROM feedback WHERE source = ? AND event_id = ?",
        (feedback.source, feedback.event_id),
    ).fetchone():
        return FeedbackResult(feedback=feedback, effect="duplicate")
    subscriber, dispatch, state = _match(db, feedback)
    effect: FeedbackEffect = "unmatched"
    if subscriber is not None:
        soft_dispatches = 0
        if feedback.kind == "soft":
            soft_dispatches = _soft_dispatches(db, subscriber, dispatch)
        decision = decide(feedback.kind, subscriber.status, soft_dispatches, soft_limit)
        effect = decision.effect
        if decision.status is not None:
            db.execute(
                "UPDATE subscribers SET status = ?, status_changed_at = ?, status_reason = ?"
                " WHERE id = ?",
                (
                    decision.status,
                    now_text(),
                    feedback_reason(feedback.kind, feedback.source, dispatch, feedback.reason),
                    subscriber.id,
                ),
            )
        to = decision.delivery_state
        if dispatch is not None and state is not None and to and moves_delivery(state, to):
            db.execute(
                "UPDATE deliveries SET state = ?, updated_at = ? WHERE issue = ? AND"
                " subscriber_id = ?",
                (to, now_text(), dispatch, subscriber.id),
            )
    db.execute(
        "INSERT INTO feedback (source, event_id, kind, effect, subscriber_id, issue, reason,"
        " occurred_at, recorded_at, message_id, recipient, return_token)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            feedback.source,
            feedback.event_id,
            feedback.kind,
            effect,
            subscriber.id if subscriber else None,
            dispatch,
            feedback.reason,
            moment_text(feedback.occurred_at),
            now_text(),
            feedback.message_id,
            feedback.recipient,
            feedback.return_token,
        ),
    )
    return FeedbackResult(
        feedback=feedback,
        effect=effect,
        email=subscriber.email if subscriber else None,
        dispatch=dispatch,
    )


def _match(
    db: sqlite3.Connection, feedback: Feedback
) -> tuple[Subscriber | None, str | None, State | None]:
    """The reader, dispatch key and delivery state ``feedback`` is about: by its return
    token, else the copy's Message-ID, else the original recipient's latest delivery."""
    token = read_token(feedback.return_token) if feedback.return_token else None
    if token is not None:
        subscriber = _subscriber(db, "id = ?", token.subscriber_id)
        if subscriber is not None:
            for issue, state in db.execute(
                "SELECT issue, state FROM deliveries WHERE subscriber_id = ?", (subscriber.id,)
            ):
                if dispatch_tag(issue) == token.dispatch_tag:
                    return subscriber, issue, cast(State, state)
            return subscriber, None, None
    if feedback.message_id:
        row = db.execute(
            "SELECT subscriber_id, issue, state FROM deliveries WHERE message_id = ?"
            " ORDER BY updated_at DESC LIMIT 1",
            (feedback.message_id,),
        ).fetchone()
        if row is not None:
            return _subscriber(db, "id = ?", row[0]), row[1], cast(State, row[2])
    if feedback.recipient:
        key = feedback.recipient.strip().strip("<>").lower()
        subscriber = _subscriber(db, "key = ?", key)
        if subscriber is not None:
            row = db.execute(
                "SELECT issue, state FROM deliveries WHERE subscriber_id = ?"
                " ORDER BY updated_at DESC LIMIT 1",
                (subscriber.id,),
            ).fetchone()
            if row is None:
                return subscriber, None, None
            return subscriber, row[0], cast(State, row[1])
    return None, None, None


def _subscriber(db: sqlite3.Connection, where: str, value: object) -> Subscriber | None:
    row = db.execute(f"SELECT {SUBSCRIBER_SELECT} FROM subscribers WHERE {where}", (value,))
    found = row.fetchone()
    return subscriber_from_row(found) if found else None


def _soft_dispatches(db: sqlite3.Connection, subscriber: Subscriber, dispatch: str | None) -> int:
    """How many different dispatches ``subscriber``'s soft failures recorded since their
    last status change came from, this one (about ``dispatch``) included. Our own clock
    says when: a report's date is the remote server's."""
    dispatches = {
        issue
        for (issue,) in db.execute(
            "SELECT DISTINCT issue FROM feedback WHERE subscriber_id = ? AND kind = 'soft'"
            " AND issue IS NOT NULL AND recorded_at >= ?",
            (subscriber.id, moment_text(subscriber.status_changed_at)),
        )
    }
    if dispatch is not None:
        dispatches.add(dispatch)
    return len(dispatches)


def recent_feedback(db: sqlite3.Connection, limit: int) -> list[FeedbackRecord]:
    """The latest ``limit`` events recorded, newest first."""
    rows = db.execute(
        f"SELECT {_COLUMNS} FROM feedback AS f LEFT JOIN subscribers AS s"
        " ON s.id = f.subscriber_id ORDER BY f.id DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [_record(row) for row in rows]


def feedback_counts(db: sqlite3.Connection, dispatch_key: str) -> FeedbackCounts:
    """The events recorded against the dispatch keyed ``dispatch_key``, by kind."""
    counts = dict.fromkeys(("hard", "soft", "complaint"), 0)
    for kind, count in db.execute(
        "SELECT kind, count(*) FROM feedback WHERE issue = ? GROUP BY kind", (dispatch_key,)
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
            occurred_at=dt.datetime.fromisoformat(occurred),
            message_id=message_id,
            recipient=recipient,
            return_token=token,
        ),
        effect=cast(FeedbackEffect, effect),
        email=email,
        dispatch=issue,
        recorded_at=dt.datetime.fromisoformat(recorded),
    )
