"""The tables every store keeps, as both backends spell them: their columns, the SQL
they share, and the order a copy moves them in (:mod:`composer.store.copy`).

A value crosses between backends in one form: a moment as an aware UTC
``datetime``, a flag as a ``bool``, text and numbers as they are. Each backend reads
and writes that form; how it stores it (ISO text and 0/1 in SQLite, ``timestamptz``
and ``boolean`` in PostgreSQL) is its own business.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from composer.errors import StoreError
from composer.store import (
    Change,
    NewSubscriber,
    Segment,
    Subscriber,
    classify,
    segment_tiers,
)
from composer.store.deliveries import STATES, still_to_send


@dataclass(frozen=True)
class Table:
    """One table as a copy sees it: its columns, the leading ones its primary key, and
    which of them hold a moment or a flag."""

    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    moments: frozenset[str] = frozenset()
    flags: frozenset[str] = frozenset()


SUBSCRIBER_COLUMNS = (
    "id",
    "email",
    "key",
    "name",
    "tier",
    "tags",
    "status",
    "status_changed_at",
    "status_reason",
)
SUBSCRIBER_SELECT = ", ".join(SUBSCRIBER_COLUMNS)
# One row of a save or an import: the row as it was (None: new), as given, what it does.
Step = tuple[Subscriber | None, NewSubscriber, Change]
Moment = TypeVar("Moment")


def import_steps(
    fresh: dict[str, NewSubscriber],
    existing: dict[str, Subscriber],
    suppressed: set[str],
    counts: dict[str, int],
) -> list[Step]:
    """What each of a batch's ``fresh`` rows does to the list (``existing``: the rows
    already there by key; ``suppressed``: the keys of erased readers, skipped), counted
    into ``counts``."""
    steps = []
    for key, new in fresh.items():
        if key in suppressed:
            counts["suppressed"] += 1
            continue
        old = existing.get(key)
        change = classify(old, new, resubscribe=False)
        counts[change] += 1
        steps.append((old, new, change))
    return steps


def subscriber_writes(
    steps: Iterable[Step], reason: str, stamp: Moment, moment: Callable[[dt.datetime], Moment]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The values of the INSERTs (columns email, key, name, tier, tags, status,
    status_changed_at, status_reason, created_at) and UPDATEs (name, tier, tags, status,
    status_changed_at, status_reason, then the key) that ``steps`` make, with ``stamp``
    the time now and ``moment`` a time, as the backend stores them: what a value left
    out keeps, and a status that does not move keeps its date and reason."""
    inserts: list[tuple[Any, ...]] = []
    updates: list[tuple[Any, ...]] = []
    for old, new, change in steps:
        changed_at = moment(new.status_changed_at) if new.status_changed_at else stamp
        why = new.status_reason or reason
        if old is None:
            inserts.append(
                (
                    new.email,
                    new.key,
                    new.name or "",
                    new.tier or "free",
                    ";".join(new.tags or ()),
                    new.status,
                    changed_at,
                    why,
                    stamp,
                )
            )
        elif change in ("updated", "resubscribed"):
            status_moves = new.status != old.status
            updates.append(
                (
                    old.name if new.name is None else new.name,
                    old.tier if new.tier is None else new.tier,
                    ";".join(old.tags if new.tags is None else new.tags),
                    new.status,
                    changed_at if status_moves else moment(old.status_changed_at),
                    why if status_moves else old.status_reason,
                    new.key,
                )
            )
    return inserts, updates


DELIVERY_COLUMNS = (
    "issue",
    "subscriber_id",
    "email",
    "state",
    "attempts",
    "code",
    "reply",
    "retryable",
    "message_id",
    "updated_at",
)

# In the order a copy writes them: a row's references are written before it. The
# dispatch locks are not among them: a lock belongs to a process using the source. A
# schedule a worker has started keeps its claim: the copy is of a list at rest, and a
# claim whose worker is gone is taken over by the usual rule.
TABLES: tuple[Table, ...] = (
    Table(
        "subscribers",
        (*SUBSCRIBER_COLUMNS, "created_at"),
        key=("id",),
        moments=frozenset({"status_changed_at", "created_at"}),
    ),
    Table(
        "status_changes",
        ("id", "subscriber_id", "status", "changed_at", "reason"),
        key=("id",),
        moments=frozenset({"changed_at"}),
    ),
    Table(
        "dispatches",
        (
            "issue",
            "segment",
            "started_at",
            "last_run_at",
            "last_result",
            "slug",
            "issue_id",
            "content_digest",
        ),
        key=("issue",),
        moments=frozenset({"started_at", "last_run_at"}),
    ),
    Table(
        "deliveries",
        DELIVERY_COLUMNS,
        key=("issue", "subscriber_id"),
        moments=frozenset({"updated_at"}),
        flags=frozenset({"retryable"}),
    ),
    Table(
        "schedules",
        (
            "id",
            "path",
            "issue_key",
            "slug",
            "issue_id",
            "content_digest",
            "segment",
            "due_at",
            "skip_check",
            "state",
            "created_at",
            "owner",
            "worker_host",
            "worker_pid",
            "started_at",
            "heartbeat_at",
            "ended_at",
            "note",
        ),
        key=("id",),
        moments=frozenset({"due_at", "created_at", "started_at", "ended_at"}),
        flags=frozenset({"skip_check"}),
    ),
    Table(
        "feedback",
        (
            "id",
            "source",
            "event_id",
            "kind",
            "effect",
            "subscriber_id",
            "issue",
            "reason",
            "occurred_at",
            "recorded_at",
            "message_id",
            "recipient",
            "return_token",
        ),
        key=("id",),
        moments=frozenset({"occurred_at", "recorded_at"}),
    ),
    Table(
        "suppressions", ("digest", "created_at"), key=("digest",), moments=frozenset({"created_at"})
    ),
    Table(
        "mail_queue",
        (
            "id",
            "kind",
            "key",
            "email",
            "name",
            "tier",
            "state",
            "attempts",
            "reply",
            "next_attempt_at",
            "created_at",
            "updated_at",
        ),
        key=("id",),
        moments=frozenset({"next_attempt_at", "created_at", "updated_at"}),
    ),
)
# Tables a store keeps that are no part of the list to copy: who sends a dispatch now
# belongs to the processes using the source.
NOT_COPIED = frozenset({"dispatch_locks", "dispatch_workers", "dispatch_batches", "schema_version"})


def to_send_condition(
    segment: Segment, *, retry_failed: bool, include_unknown: bool, mark: str
) -> tuple[str, tuple[str, ...]]:
    """The condition on ``s`` (subscribers) and ``d`` (their delivery of the issue, if
    any) that keeps the active subscribers of ``segment`` that
    :func:`~composer.store.deliveries.still_to_send` says to send to, with ``mark`` as
    the backend's parameter marker; and its parameters. The states are read from that
    function, so the rules stay spelled once."""
    rules = {"retry_failed": retry_failed, "include_unknown": include_unknown}
    assert still_to_send(None, False, **rules), "never attempted is always sent"
    always = tuple(state for state in STATES if still_to_send(state, False, **rules))
    if_retryable = tuple(
        state for state in STATES if state not in always and still_to_send(state, True, **rules)
    )
    tiers = segment_tiers(segment)

    def marks(values: tuple[str, ...]) -> str:
        # An empty IN () is valid in SQLite but not in PostgreSQL; NULL matches nothing.
        return ",".join(mark for _ in values) or "NULL"

    where = (
        f"s.status = 'active' AND s.tier IN ({marks(tiers)}) AND (d.state IS NULL"
        f" OR d.state IN ({marks(always)})"
        f" OR (d.retryable AND d.state IN ({marks(if_retryable)})))"
    )
    return where, (*tiers, *always, *if_retryable)


def other_rows(where: str, table: Table, count: int) -> StoreError:
    """The error for a copy whose destination ``where`` holds ``count`` rows of ``table``
    under the keys of the source's rows but with other values: another list."""
    return StoreError(
        f"{where}: holds another list: {count:,} rows of {table.name} differ from the"
        " source's under the same keys, and nothing of this batch was copied; copy into an"
        " empty database, or one copied from this same source before"
    )


def differing(table: Table, mark_null_safe: str) -> str:
    """A condition true when the row ``c`` (the copy) differs from ``t`` (the one there)
    in any column; ``mark_null_safe`` is the backend's null-safe inequality operator."""
    return " OR ".join(f"c.{column} {mark_null_safe} t.{column}" for column in table.columns)
