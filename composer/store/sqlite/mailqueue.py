"""The transactional mail queue in the subscriber database (table ``mail_queue``), by the
rules of :mod:`composer.store.mailqueue`: plain reads and writes on the caller's
connection, inside the caller's transaction where one is open."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterable
from typing import cast

from composer.model import Tier
from composer.store.mailqueue import MailKind, MailOutcome, MailState, NewMail, QueuedMail
from composer.store.sqlite.database import moment_text, now_text

_COLUMNS = "id, kind, key, email, name, tier, state, attempts, created_at"


def enqueue(db: sqlite3.Connection, mail: Iterable[NewMail]) -> None:
    """Queue each of ``mail``, due now."""
    now = now_text()
    db.executemany(
        "INSERT INTO mail_queue (kind, key, email, name, tier, state, next_attempt_at,"
        " created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?)",
        ((m.kind, m.key, m.email, m.name, m.tier, now, now, now) for m in mail),
    )


def last_confirmation(db: sqlite3.Connection, key: str) -> dt.datetime | None:
    """When a confirmation was last queued for ``key`` (None: never, or pruned)."""
    (last,) = db.execute(
        "SELECT max(created_at) FROM mail_queue WHERE key = ? AND kind = 'confirm'", (key,)
    ).fetchone()
    return dt.datetime.fromisoformat(last) if last else None


def due(db: sqlite3.Connection, now: dt.datetime, limit: int) -> list[QueuedMail]:
    """Up to ``limit`` queued messages due at ``now``, oldest first."""
    rows = db.execute(
        f"SELECT {_COLUMNS} FROM mail_queue WHERE state = 'queued' AND next_attempt_at <= ?"
        " ORDER BY next_attempt_at, id LIMIT ?",
        (moment_text(now), limit),
    ).fetchall()
    return [
        QueuedMail(
            id=id_,
            kind=cast(MailKind, kind),
            key=key,
            email=email,
            name=name,
            tier=cast(Tier, tier),
            state=cast(MailState, state),
            attempts=attempts,
            created_at=dt.datetime.fromisoformat(created_at),
        )
        for id_, kind, key, email, name, tier, state, attempts, created_at in rows
    ]


def requeue_interrupted(db: sqlite3.Connection) -> int:
    """Queue again every message left ``sending``, due now; how many."""
    now = now_text()
    cursor = db.execute(
        "UPDATE mail_queue SET state = 'queued', next_attempt_at = ?, updated_at = ?"
        " WHERE state = 'sending'",
        (now, now),
    )
    return cursor.rowcount


def record(db: sqlite3.Connection, outcomes: Iterable[MailOutcome]) -> None:
    """Write where each message stands."""
    now = now_text()
    db.executemany(
        "UPDATE mail_queue SET state = ?, attempts = ?, reply = ?,"
        " next_attempt_at = coalesce(?, next_attempt_at), updated_at = ? WHERE id = ?",
        (
            (
                o.state,
                o.attempts,
                o.reply,
                moment_text(o.next_attempt_at) if o.next_attempt_at else None,
                now,
                o.id,
            )
            for o in outcomes
        ),
    )


def prune(db: sqlite3.Connection, before: dt.datetime) -> None:
    """Forget the messages settled (sent or failed) before ``before``."""
    db.execute(
        "DELETE FROM mail_queue WHERE state IN ('sent', 'failed') AND updated_at < ?",
        (moment_text(before),),
    )
