"""Rows of the ``subscribers`` table as both sides of the PostgreSQL store use them: a
:class:`~composer.store.Subscriber` read from its columns, and the bounce the delivery
record writes with an outcome."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from composer.model import Tier
from composer.store import Status, Subscriber
from composer.store.postgresql.database import Connection, now


def subscriber_from_row(row: tuple[Any, ...]) -> Subscriber:
    """The subscriber in a row of :data:`~composer.store.tables.SUBSCRIBER_COLUMNS`."""
    id_, email, key, name, tier, tags, status, changed_at, reason = row
    return Subscriber(
        id=id_,
        email=email,
        key=key,
        name=name,
        tier=cast(Tier, tier),
        tags=tuple(tags.split(";")) if tags else (),
        status=cast(Status, status),
        status_changed_at=changed_at,
        status_reason=reason,
    )


def mark_bounced(db: Connection, bounces: Iterable[tuple[str, str]]) -> None:
    """Mark each ``(key, reason)`` subscriber bounced on ``db``, inside the caller's
    transaction: the delivery record holds a 5.1.x reply and the bounce atomically.
    Only an active subscriber moves: an unsubscribe stays an unsubscribe."""
    stamp = now()
    with db.cursor() as cursor:
        cursor.executemany(
            "UPDATE subscribers SET status = 'bounced', status_changed_at = %s,"
            " status_reason = %s WHERE key = %s AND status = 'active'",
            [(stamp, reason, key) for key, reason in bounces],
        )
