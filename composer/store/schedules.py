"""Scheduled dispatches: their record, their vocabulary and the rules every store keeps.

A schedule says: send this issue file to this segment at this time. ``newsletter
schedule`` adds one; ``newsletter worker`` claims it once it is due and runs the very
dispatch ``newsletter send`` runs. Its :data:`ScheduleState` only moves along

    scheduled ──claim──▶ started ──▶ done | failed
        │  ▲                │
        │  └── stopped ─────┘  (the worker was asked to stop: any worker resumes it)
        └──▶ cancelled          (by the editor, or replaced by a new schedule of the issue)

and every move is a compare-and-set on the state (and the claim) the mover read, so
two workers never both start one dispatch: the loser's move changes no row. A worker
keeps its claim fresh while it sends; a claim whose worker is gone (its process on
this machine has ended, or it stopped refreshing the claim) is taken over by the
rule of the dispatch lock (:func:`composer.store.deliveries.lock_is_stale`), and the
dispatch it started resumes where its journal stands.

The rules here are the same for every store; a backend only reads and writes rows
(:class:`ScheduleBook`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

from composer.store import Segment
from composer.store.deliveries import IssueIdentity, LockHolder, lock_is_stale

ScheduleState = Literal["scheduled", "started", "done", "cancelled", "failed"]
SCHEDULE_STATES: tuple[ScheduleState, ...] = get_args(ScheduleState)
# Waiting for its time or being sent: what `schedule --list` shows as upcoming.
UPCOMING: tuple[ScheduleState, ...] = ("scheduled", "started")
FINISHED: tuple[ScheduleState, ...] = ("done", "cancelled", "failed")

# How often a worker refreshes its claim while it sends: well inside the staleness
# limit of the dispatch lock (LOCK_STALE_SECONDS), whose rule the claim follows.
CLAIM_REFRESH_SECONDS = 60.0


@dataclass(frozen=True, kw_only=True)
class NewSchedule:
    """A dispatch to schedule. ``path`` is the issue file relative to the newsletter's
    folder (absolute when it lies outside); ``issue`` what the file held then; ``due_at``
    is aware, in UTC."""

    path: str
    issue: IssueIdentity
    segment: Segment
    due_at: dt.datetime
    skip_check: bool = False


@dataclass(frozen=True, kw_only=True)
class WorkerClaim:
    """The worker that started (or resumed) a schedule: a token naming this one claim,
    its process, when it started the dispatch, and its last refresh (``time.time()``)."""

    owner: str
    host: str
    pid: int
    started_at: dt.datetime
    heartbeat_at: float

    @property
    def holder(self) -> LockHolder:
        """The claim as the dispatch lock's staleness rule reads a holder."""
        return LockHolder(host=self.host, pid=self.pid, heartbeat_at=self.heartbeat_at)


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """A schedule as recorded. ``claim`` is the worker that last started it (None: never
    started); ``ended_at`` and ``note`` say when and how it last left ``started`` (or was
    cancelled)."""

    id: int
    path: str
    issue: IssueIdentity
    segment: Segment
    due_at: dt.datetime
    skip_check: bool
    state: ScheduleState
    created_at: dt.datetime
    claim: WorkerClaim | None
    ended_at: dt.datetime | None
    note: str


class ScheduleBook(Protocol):
    """The ``schedules`` of one store, on the store's connection. Every method commits
    before it returns; every change is a compare-and-set whose result says whether the
    row was still as the caller read it."""

    def add(self, new: NewSchedule, *, replacing: tuple[int, ...] = ()) -> Schedule:
        """Record ``new`` as ``scheduled`` and, in the same transaction, cancel the
        schedules ``replacing`` names that are still ``scheduled``."""

    def find(self, states: tuple[ScheduleState, ...], *, limit: int = 100) -> list[Schedule]:
        """The schedules in ``states``, the last changed (ended, else started, else
        created) first, at most ``limit``."""

    def claim(self, schedule: Schedule, claim: WorkerClaim) -> bool:
        """Make ``schedule`` ``started`` under ``claim`` if its row still has the state
        and claim read in ``schedule``; False (nothing changed) when another got there
        first. Claiming a schedule again with its own claim refreshes it."""

    def end(self, schedule: Schedule, state: ScheduleState, note: str) -> bool:
        """Move ``schedule`` to ``state`` with ``note`` if its row still has the state and
        claim read in ``schedule``; False (nothing changed) otherwise."""


def is_due(schedule: Schedule, now: dt.datetime) -> bool:
    """Whether a worker starts ``schedule`` now."""
    return schedule.state == "scheduled" and schedule.due_at <= now


def is_abandoned(schedule: Schedule, now: float, this_host: str) -> bool:
    """Whether ``schedule`` was started by a worker that is gone, by the dispatch lock's
    rule: its process on this machine has ended, or it stopped refreshing its claim."""
    return (
        schedule.state == "started"
        and schedule.claim is not None
        and lock_is_stale(schedule.claim.holder, now, this_host)
    )


def of_issue(schedule: Schedule, path: str, issue: IssueIdentity | None) -> bool:
    """Whether ``schedule`` dispatches the issue at ``path`` (what the file holds now is
    ``issue``; None: it cannot be read): the same file, or the same issue renamed (its
    id, else its content)."""
    return schedule.path == path or (issue is not None and schedule.issue.key == issue.key)
