"""The transactional mail queue on the PostgreSQL server (table ``mail_queue``), by the
rules of :mod:`composer.store.mailqueue`: the twin of :mod:`composer.store.sqlite.mailqueue`,
plain reads and writes on the caller's connection, inside the caller's transaction
where one is open."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import cast

from composer.model import Tier
from composer.store.mailqueue import MailKind, MailOutcome, MailState, NewMail, QueuedMail
from composer.store.postgresql.database import Connection, moment, now

_COLUMNS = "id, kind, key, email, name, tier, state, attempts, created_at"


def enqueue(db: Connection, mail: Iterable[NewMail]) -> None:
    """Queue each of ``mail``, due now."""
    stamp = now()
    rows = [(m.kind, m.key, m.email, m.name, m.tier, stamp, stamp, stamp) for m in mail]
    if rows:
        with db.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO mail_queue (kind, key, email, name, tier, state, next_attempt_at,"
                " created_at, updated_at) VALUES (%s, %s, %s, %s, %s, 'queued', %s, %s, %s)",
                rows,
            )


def last_confirmation(db: Connection, key: str) -> dt.datetime | None:
    """When a confirmation was last queued for ``key`` (None: never, or pruned)."""
    row = db.execute(
        "SELECT max(created_at) FROM mail_queue WHERE key = %s AND kind = 'confirm'", (key,)
    ).fetchone()
    return row[0] if row else None


def due(db: Connection, when: dt.datetime, limit: int) -> list[QueuedMail]:
    """Up to ``limit`` queued messages due at ``when``, oldest first."""
    rows = db.execute(
        f"SELECT {_COLUMNS} FROM mail_queue WHERE state = 'queued' AND next_attempt_at <= %s"
        " ORDER BY next_attempt_at, id LIMIT %s",
        (moment(when), limit),
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
            created_at=created_at,
        )
        for id_, kind, key, email, name, tier, state, attempts, created_at in rows
    ]


def requeue_interrupted(db: Connection) -> int:
    """Queue again every message left ``sending``, due now; how many."""
    stamp = now()
    cursor = db.execute(
        "UPDATE mail_queue SET state = 'queued', next_attempt_at = %s, updated_at = %s"
        " WHERE state = 'sending'",
        (stamp, stamp),
    )
    return cursor.rowcount


def record(db: Connection, outcomes: Iterable[MailOutcome]) -> None:
    """Write where each message stands."""
    stamp = now()
    rows = [
        (
            o.state,
            o.attempts,
            o.reply,
            moment(o.next_attempt_at) if o.next_attempt_at else None,
            stamp,
            o.id,
        )
        for o in outcomes
    ]
    if rows:
        with db.cursor() as cursor:
            cursor.executemany(
                "UPDATE mail_queue SET state = %s, attempts = %s, reply = %s,"
                " next_attempt_at = coalesce(%s, next_attempt_at), updated_at = %s"
                " WHERE id = %s",
                rows,
            )


def prune(db: Connection, before: dt.datetime) -> None:
    """Forget the messages settled (sent or failed) before ``before``."""
    db.execute(
        "DELETE FROM mail_queue WHERE state IN ('sent', 'failed') AND updated_at < %s",
        (moment(before),),
    )
