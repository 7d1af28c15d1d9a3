"""Rows of the ``subscribers`` table as both sides of the PostgreSQL store use them: a
:class:`~composer.store.Subscriber` read from its columns, and the bounce the delivery
record writes with an outcome."""

from __future__ import annotations

from typing import Any, cast

from composer.model import Tier
from composer.store import Status, Subscriber
from composer.store.postgresql.database import now


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


def bounced(bounces: list[tuple[str, str]]) -> tuple[str, tuple[object, ...]]:
    """The statement, and its parameters, that marks each ``(key, reason)`` subscriber
    bounced, for the delivery record to run in the transaction that holds the 5.1.x
    reply. Only an active subscriber moves: an unsubscribe stays an unsubscribe."""
    keys, reasons = [key for key, _ in bounces], [reason for _, reason in bounces]
    return (
        "UPDATE subscribers AS s SET status = 'bounced', status_changed_at = %s,"
        " status_reason = b.reason FROM unnest(%s::text[], %s::text[]) AS b (key, reason)"
        " WHERE s.key = b.key AND s.status = 'active'",
        (now(), keys, reasons),
    )
