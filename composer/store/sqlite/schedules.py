"""The ``schedules`` table: :class:`composer.store.schedules.ScheduleBook` on the store's
connection. Each change is one ``UPDATE … WHERE`` the row is still as the caller read it,
inside a write transaction, and its row count says whether it took."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any, cast

from composer.store import Segment
from composer.store.deliveries import IssueIdentity
from composer.store.schedules import NewSchedule, Schedule, ScheduleState, WorkerClaim
from composer.store.sqlite.database import moment_text, now_text, write_transaction

_COLUMNS = (
    "id, path, slug, issue_id, content_digest, segment, due_at, skip_check, state,"
    " created_at, owner, worker_host, worker_pid, started_at, heartbeat_at, ended_at, note"
)
# The row is still as it was read: its state, and the claim it had (none, or that one).
_AS_READ = "id = ? AND state = ? AND owner IS ?"


class SqliteScheduleBook:
    """The schedules in the SQLite file at ``path``, through the store's connection ``db``."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self.path = path

    def add(self, new: NewSchedule, *, replacing: tuple[int, ...] = ()) -> Schedule:
        """Record ``new`` and cancel the still scheduled ones it replaces, atomically."""
        now = now_text()
        with write_transaction(self._db, self.path):
            cursor = self._db.execute(
                "INSERT INTO schedules (path, issue_key, slug, issue_id, content_digest,"
                " segment, due_at, skip_check, state, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'scheduled', ?)",
                (
                    new.path,
                    new.issue.key,
                    new.issue.slug,
                    new.issue.id,
                    new.issue.content,
                    new.segment,
                    moment_text(new.due_at),
                    int(new.skip_check),
                    now,
                ),
            )
            added = cursor.lastrowid
            self._db.executemany(
                "UPDATE schedules SET state = 'cancelled', ended_at = ?, note = ?"
                " WHERE id = ? AND state = 'scheduled'",
                ((now, f"replaced by #{added}", old) for old in replacing),
            )
        row = self._db.execute(f"SELECT {_COLUMNS} FROM schedules WHERE id = ?", (added,))
        return _schedule(row.fetchone())

    def find(self, states: tuple[ScheduleState, ...], *, limit: int = 100) -> list[Schedule]:
        """The schedules in ``states``, the last changed first."""
        marks = ",".join("?" * len(states))
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM schedules WHERE state IN ({marks})"
            " ORDER BY coalesce(ended_at, started_at, created_at) DESC, id DESC LIMIT ?",
            (*states, limit),
        )
        return [_schedule(row) for row in rows]

    def claim(self, schedule: Schedule, claim: WorkerClaim) -> bool:
        """Start ``schedule`` under ``claim`` if no one changed it since it was read."""
        return self._change(
            "state = 'started', owner = ?, worker_host = ?, worker_pid = ?, started_at = ?,"
            " heartbeat_at = ?",
            (claim.owner, claim.host, claim.pid, moment_text(claim.started_at), claim.heartbeat_at),
            schedule,
        )

    def end(self, schedule: Schedule, state: ScheduleState, note: str) -> bool:
        """Move ``schedule`` to ``state`` if no one changed it since it was read."""
        return self._change(
            "state = ?, ended_at = ?, note = ?", (state, now_text(), note), schedule
        )

    def _change(self, assignments: str, values: tuple[Any, ...], schedule: Schedule) -> bool:
        owner = schedule.claim.owner if schedule.claim else None
        with write_transaction(self._db, self.path):
            cursor = self._db.execute(
                f"UPDATE schedules SET {assignments} WHERE {_AS_READ}",
                (*values, schedule.id, schedule.state, owner),
            )
        return cursor.rowcount == 1


def _schedule(row: tuple[Any, ...]) -> Schedule:
    (id_, path, slug, issue_id, content, segment, due_at, skip_check, state, created_at,
     owner, host, pid, started_at, heartbeat_at, ended_at, note) = row  # fmt: skip
    claim = None
    if owner is not None:
        claim = WorkerClaim(
            owner=owner,
            host=host,
            pid=pid,
            started_at=dt.datetime.fromisoformat(started_at),
            heartbeat_at=heartbeat_at,
        )
    return Schedule(
        id=id_,
        path=path,
        issue=IssueIdentity(slug=slug, id=issue_id, content=content),
        segment=cast(Segment, segment),
        due_at=dt.datetime.fromisoformat(due_at),
        skip_check=bool(skip_check),
        state=cast(ScheduleState, state),
        created_at=dt.datetime.fromisoformat(created_at),
        claim=claim,
        ended_at=dt.datetime.fromisoformat(ended_at) if ended_at else None,
        note=note,
    )
