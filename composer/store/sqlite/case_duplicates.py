"""A schema step of the SQLite store: one row per address whatever its letter case.

Lists written before :func:`composer.store.address_key` kept the local part as
written, so ``Ann@example.org`` and ``ann@example.org`` could be two rows and the
reader got every issue twice. :func:`merge_case_duplicates` re-keys every row and
merges each set of rows whose keys differ only in letter case into the earliest
(lowest id), inside the migration's transaction. It touches ``subscribers``,
``status_changes`` and ``deliveries.subscriber_id`` only.
"""

from __future__ import annotations

import sqlite3
from typing import NamedTuple

from composer.store import STATUSES, address_key

# How many merged addresses the migration's note names before "and N more".
_NAMED = 10
_INDEX = "deliveries_by_subscriber_while_merging"


class _Row(NamedTuple):
    id: int
    email: str
    name: str
    tier: str
    tags: str
    status: str
    status_changed_at: str
    status_reason: str


def merge_case_duplicates(db: sqlite3.Connection) -> str:
    """Key every subscriber by :func:`address_key`, merging rows that share a key into
    the earliest; returns the note to show the editor, or "" when nothing was merged."""
    # SQLite's own lower() folds ASCII only; the key must be Python's, as elsewhere.
    db.create_function("address_key", 1, address_key, deterministic=True)
    groups = db.execute(
        "SELECT group_concat(id) FROM subscribers GROUP BY address_key(key) HAVING count(*) > 1"
    ).fetchall()
    kept = _merge_groups(db, [sorted(int(id_) for id_ in ids.split(",")) for (ids,) in groups])
    db.execute("UPDATE subscribers SET key = address_key(key) WHERE key != address_key(key)")
    if not kept:
        return ""
    named = ", ".join(sorted(kept, key=address_key)[:_NAMED])
    more = f", and {len(kept) - _NAMED} more" if len(kept) > _NAMED else ""
    addresses = "1 address" if len(kept) == 1 else f"{len(kept)} addresses"
    return (
        f"merged {addresses} that differed only in letter case"
        f" (kept the most protective status): {named}{more}"
    )


def _merge_groups(db: sqlite3.Connection, groups: list[list[int]]) -> list[str]:
    """Fold each group of row ids into its first; returns the kept emails."""
    if not groups:
        return []
    # Without it, each merge (and each deleted row's foreign-key check) reads the whole
    # journal: 0.13 s a merged address with a million journal rows. Dropped again at
    # the end, so the schema of `deliveries` is left as it was.
    db.execute(f"CREATE INDEX {_INDEX} ON deliveries (subscriber_id)")
    kept = [_merge(db, ids) for ids in groups]
    db.execute(f"DROP INDEX {_INDEX}")
    return kept


def _merge(db: sqlite3.Connection, ids: list[int]) -> str:
    """Fold the rows ``ids`` (ascending) into the first; returns its email."""
    marks = ",".join("?" * len(ids))
    rows = [
        _Row._make(row)
        for row in db.execute(
            f"SELECT {', '.join(_Row._fields)} FROM subscribers WHERE id IN ({marks}) ORDER BY id",
            ids,
        )
    ]
    first, others = rows[0], [row.id for row in rows[1:]]
    # The strongest "do not send" on file wins (STATUSES runs from least to most
    # protective); max() returns the earliest of equals, so a tie keeps the earliest.
    guard = max(rows, key=lambda row: STATUSES.index(row.status))
    last_change = db.execute("SELECT coalesce(max(id), 0) FROM status_changes").fetchone()[0]
    db.execute(
        "UPDATE subscribers SET name = ?, tier = ?, tags = ?, status = ?,"
        " status_changed_at = ?, status_reason = ? WHERE id = ?",
        (
            next((row.name for row in rows if row.name), ""),
            # One reader who paid under any spelling has paid: never cut them to free.
            "paid" if any(row.tier == "paid" for row in rows) else "free",
            next((row.tags for row in rows if row.tags), ""),
            guard.status,
            guard.status_changed_at,
            guard.status_reason,
            first.id,
        ),
    )
    # The history trigger has just logged the status taken over from a merged row,
    # whose own history, moved below, already holds that change.
    db.execute("DELETE FROM status_changes WHERE id > ?", (last_change,))
    others_marks = ",".join("?" * len(others))
    db.execute(
        f"UPDATE status_changes SET subscriber_id = ? WHERE subscriber_id IN ({others_marks})",
        (first.id, *others),
    )
    _merge_deliveries(db, ids)
    db.execute(f"DELETE FROM subscribers WHERE id IN ({others_marks})", others)
    return first.email


def _merge_deliveries(db: sqlite3.Connection, ids: list[int]) -> None:
    """Give each issue one journal row on ``ids[0]``: a ``sent`` one if any (so the reader
    is not sent it again), else the latest recorded."""
    marks = ",".join("?" * len(ids))
    best: dict[str, tuple[bool, str, int]] = {}
    for issue, subscriber_id, state, updated_at in db.execute(
        "SELECT issue, subscriber_id, state, updated_at FROM deliveries"
        f" WHERE subscriber_id IN ({marks})",
        ids,
    ):
        # The earliest row wins ties (hence the negated id).
        rank = (state == "sent", updated_at, -subscriber_id)
        if issue not in best or rank > best[issue]:
            best[issue] = rank
    for issue, (_, _, negated) in best.items():
        db.execute(
            "DELETE FROM deliveries WHERE issue = ? AND subscriber_id != ?"
            f" AND subscriber_id IN ({marks})",
            (issue, -negated, *ids),
        )
        db.execute(
            "UPDATE deliveries SET subscriber_id = ? WHERE issue = ? AND subscriber_id = ?",
            (ids[0], issue, -negated),
        )
