"""The ``schedules`` table on the PostgreSQL server: :class:`composer.store.schedules.ScheduleBook`
on the store's connection, the twin of :mod:`composer.store.sqlite.schedules`.

Each change is one ``UPDATE … WHERE`` the row is still as the caller read it, and its
row count says whether it took. Two workers on two machines that move one schedule at
once are ordered by the row's lock: the second ``UPDATE`` waits for the first to
commit, then finds the row changed and matches nothing.
"""

from __future__ import annotations

from typing import Any, cast

from composer.store import Segment
from composer.store.deliveries import IssueIdentity
from composer.store.postgresql.database import (
    Connection,
    errors_translated,
    moment,
    now,
    write_transaction,
)
from composer.store.schedules import NewSchedule, Schedule, ScheduleState, WorkerClaim

_COLUMNS = (
    "id, path, slug, issue_id, content_digest, segment, due_at, skip_check, state,"
    " created_at, owner, worker_host, worker_pid, started_at, heartbeat_at, ended_at, note"
)
# The row is still as it was read: its state, and the claim it had (none, or that one).
_AS_READ = "id = %s AND state = %s AND owner IS NOT DISTINCT FROM %s"


class PostgresScheduleBook:
    """The schedules in the database at ``url``, through the store's connection ``db``."""

    def __init__(self, db: Connection, url: str) -> None:
        self._db = db
        self.url = url

    def add(self, new: NewSchedule, *, replacing: tuple[int, ...] = ()) -> Schedule:
        """Record ``new`` and cancel the still scheduled ones it replaces, atomically."""
        stamp = now()
        with write_transaction(self._db, self.url):
            row = self._db.execute(
                f"INSERT INTO schedules (path, issue_key, slug, issue_id, content_digest,"
                " segment, due_at, skip_check, state, created_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'scheduled', %s)"
                f" RETURNING {_COLUMNS}",
                (
                    new.path,
                    new.issue.key,
                    new.issue.slug,
                    new.issue.id,
                    new.issue.content,
                    new.segment,
                    moment(new.due_at),
                    new.skip_check,
                    stamp,
                ),
            ).fetchone()
            assert row is not None
            added = _schedule(row)
            if replacing:
                self._db.execute(
                    "UPDATE schedules SET state = 'cancelled', ended_at = %s, note = %s"
                    " WHERE id = ANY(%s) AND state = 'scheduled'",
                    (stamp, f"replaced by #{added.id}", list(replacing)),
                )
        return added

    def find(self, states: tuple[ScheduleState, ...], *, limit: int = 100) -> list[Schedule]:
        """The schedules in ``states``, the last changed first."""
        with errors_translated(self.url):
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM schedules WHERE state = ANY(%s)"
                " ORDER BY coalesce(ended_at, started_at, created_at) DESC, id DESC LIMIT %s",
                (list(states), limit),
            ).fetchall()
        return [_schedule(row) for row in rows]

    def claim(self, schedule: Schedule, claim: WorkerClaim) -> bool:
        """Start ``schedule`` under ``claim`` if no one changed it since it was read."""
        return self._change(
            "state = 'started', owner = %s, worker_host = %s, worker_pid = %s,"
            " started_at = %s, heartbeat_at = %s",
            (claim.owner, claim.host, claim.pid, moment(claim.started_at), claim.heartbeat_at),
            schedule,
        )

    def end(self, schedule: Schedule, state: ScheduleState, note: str) -> bool:
        """Move ``schedule`` to ``state`` if no one changed it since it was read."""
        return self._change("state = %s, ended_at = %s, note = %s", (state, now(), note), schedule)

    def _change(self, assignments: str, values: tuple[Any, ...], schedule: Schedule) -> bool:
        owner = schedule.claim.owner if schedule.claim else None
        with write_transaction(self._db, self.url):
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
            owner=owner, host=host, pid=pid, started_at=started_at, heartbeat_at=heartbeat_at
        )
    return Schedule(
        id=id_,
        path=path,
        issue=IssueIdentity(slug=slug, id=issue_id, content=content),
        segment=cast(Segment, segment),
        due_at=due_at,
        skip_check=skip_check,
        state=cast(ScheduleState, state),
        created_at=created_at,
        claim=claim,
        ended_at=ended_at,
        note=note,
    )
