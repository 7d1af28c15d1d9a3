"""Rows of the ``subscribers`` table as both sides of the SQLite store use them: the
columns a :class:`~composer.store.Subscriber` is read from, and the bounce the delivery
record writes with an outcome."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterable
from typing import Any, cast

from composer.model import Tier
from composer.store import Status, Subscriber
from composer.store.sqlite.database import now_text
from composer.store.tables import SUBSCRIBER_COLUMNS, SUBSCRIBER_SELECT

__all__ = ["SUBSCRIBER_COLUMNS", "SUBSCRIBER_SELECT", "mark_bounced", "subscriber_from_row"]


def subscriber_from_row(row: tuple[Any, ...]) -> Subscriber:
    """The subscriber in a row of :data:`SUBSCRIBER_COLUMNS`."""
    id_, email, key, name, tier, tags, status, changed_at, reason = row
    return Subscriber(
        id=id_,
        email=email,
        key=key,
        name=name,
        tier=cast(Tier, tier),
        tags=tuple(tags.split(";")) if tags else (),
        status=cast(Status, status),
        status_changed_at=dt.datetime.fromisoformat(changed_at),
        status_reason=reason,
    )


def mark_bounced(db: sqlite3.Connection, bounces: Iterable[tuple[str, str]]) -> None:
    """Mark each ``(key, reason)`` subscriber bounced on ``db``, inside the caller's
    transaction: the delivery record holds a 5.1.x reply and the bounce atomically.
    Only an active subscriber moves: an unsubscribe stays an unsubscribe."""
    now = now_text()
    db.executemany(
        "UPDATE subscribers SET status = 'bounced', status_changed_at = ?, status_reason = ?"
        " WHERE key = ? AND status = 'active'",
        ((now, reason, key) for key, reason in bounces),
    )
