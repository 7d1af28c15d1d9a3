"""``schedule``: a dispatch recorded for later, the list of them, and cancelling one.

--at → an aware time in UTC (one without a UTC offset, or past, is refused)
  → compose each tier the segment reaches and check them, as ``send`` does
  → count who would get it now (refusing content already sent in another dispatch)
  → the schedules of the same issue: one being sent refuses, one waiting is replaced
  → record it, for ``newsletter worker`` to start when it is due

A schedule names its issue file relative to the newsletter's folder (the folder of
``config.toml``), so a worker started anywhere with ``--config`` finds it.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from composer.composing.load import load_issue
from composer.config import Config
from composer.errors import DispatchLocked, IssueError, NothingScheduled, ScheduleError
from composer.sending.send import SendPlan, compose_variants, plan_composed
from composer.store import Segment, open_store
from composer.store.deliveries import IssueIdentity
from composer.store.schedules import (
    FINISHED,
    UPCOMING,
    NewSchedule,
    Schedule,
    of_issue,
)


@dataclass(frozen=True, kw_only=True)
class Scheduled:
    """What ``schedule`` recorded: the schedule, who would get the issue if it went now,
    and the schedules of the same issue it replaced."""

    schedule: Schedule
    plan: SendPlan
    replaced: list[Schedule]


def parse_due(text: str, now: dt.datetime) -> dt.datetime:
    """``--at`` as an aware time in UTC. A time without a UTC offset is refused, naming
    the offset this machine has then (the worker may run on a machine in another zone,
    and a bare time is ambiguous across a clock change); so is one before ``now``."""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise ScheduleError(
            f"--at {text!r} is not an ISO 8601 time; write it as 2024-05-03T07:00+02:00"
            " (the date, T, the time and its UTC offset; Z for UTC)"
        ) from exc
    if moment.tzinfo is None:
        local = moment.astimezone()
        raise ScheduleError(
            f"--at {text} has no UTC offset; add the one you mean: this machine's then is"
            f" {_offset(local)} (--at {local.isoformat(timespec='minutes')}), Z is UTC"
        )
    moment = moment.astimezone(dt.UTC)
    if moment < now:
        raise ScheduleError(
            f"--at {text} is in the past (it is {describe_moment(now)}); give a later time,"
            " or send it now with `newsletter send`"
        )
    return moment


def schedule_issue(
    issue_path: Path,
    config: Config,
    due_at: dt.datetime,
    segment: Segment,
    *,
    skip_check: bool = False,
) -> Scheduled:
    """Check the issue as ``send`` would, then record its dispatch to ``segment`` at
    ``due_at``, replacing a schedule of the same issue not yet started. An issue that
    ``check`` finds errors in raises :class:`~composer.errors.IssueNotReady` unless
    ``skip_check``; one a worker is sending now raises
    :class:`~composer.errors.DispatchLocked`."""
    variants = compose_variants(issue_path, config, segment, skip_check=skip_check)
    top_variant = list(variants.values())[-1]
    plan = plan_composed(top_variant, config, segment)
    path = issue_location(issue_path, config)
    identity = IssueIdentity.of(top_variant.issue)
    with open_store(config.subscribers) as store:
        book = store.schedules()
        same = [s for s in book.find(UPCOMING) if of_issue(s, path, identity)]
        started = next((s for s in same if s.state == "started"), None)
        if started is not None:
            raise DispatchLocked(f"{path}: {_being_sent(started)}; it cannot be scheduled again")
        new = NewSchedule(
            path=path, issue=identity, segment=segment, due_at=due_at, skip_check=skip_check
        )
        added = book.add(new, replacing=tuple(s.id for s in same))
    return Scheduled(schedule=added, plan=plan, replaced=same)


def cancel_schedule(issue_path: Path, config: Config) -> list[Schedule]:
    """Cancel every schedule of the issue at ``issue_path`` not yet started (the file may
    be gone: then those naming that path). None raises
    :class:`~composer.errors.NothingScheduled`; one being sent,
    :class:`~composer.errors.DispatchLocked`."""
    path = issue_location(issue_path, config)
    try:
        identity: IssueIdentity | None = IssueIdentity.of(load_issue(issue_path))
    except IssueError:
        identity = None
    with open_store(config.subscribers) as store:
        book = store.schedules()
        same = [s for s in book.find(UPCOMING) if of_issue(s, path, identity)]
        cancelled = [s for s in same if s.state == "scheduled" and book.end(s, "cancelled", "")]
        if not cancelled:
            # Read again: a worker may have started one between the read and the cancel.
            started = next(
                (s for s in book.find(("started",)) if of_issue(s, path, identity)), None
            )
            if started is not None:
                raise DispatchLocked(f"{path}: {_being_sent(started)}; it cannot be cancelled")
            raise NothingScheduled(
                f"{path}: no dispatch of it is scheduled, so nothing was cancelled;"
                " `newsletter schedule --list` shows what is"
            )
    return cancelled


def list_schedules(config: Config, *, recent: int = 10) -> tuple[list[Schedule], list[Schedule]]:
    """The schedules waiting or being sent, the next due first, and the ``recent`` last
    finished (done, failed or cancelled), the last finished first."""
    with open_store(config.subscribers) as store:
        book = store.schedules()
        upcoming = sorted(book.find(UPCOMING), key=lambda s: (s.due_at, s.id))
        return upcoming, book.find(FINISHED, limit=recent)


def issue_location(issue_path: Path, config: Config) -> str:
    """How a schedule names the issue file: relative to the newsletter's folder, or
    absolute when it lies outside."""
    absolute = Path(os.path.abspath(issue_path))
    try:
        return absolute.relative_to(newsletter_folder(config)).as_posix()
    except ValueError:
        return str(absolute)


def issue_file(schedule: Schedule, config: Config) -> Path:
    """The issue file ``schedule`` names."""
    return newsletter_folder(config) / schedule.path


def newsletter_folder(config: Config) -> Path:
    # Both sides absolute but not resolved: an issues/ folder that is a link stays inside.
    return Path(os.path.abspath(config.path)).parent


def describe_moment(moment: dt.datetime) -> str:
    """``moment`` in this machine's local time, then in UTC: ``2024-05-03 07:00 CEST
    (05:00 UTC)``; once when the two agree."""
    utc = moment.astimezone(dt.UTC)
    local = utc.astimezone()
    clock = "%H:%M:%S" if utc.second else "%H:%M"
    if local.utcoffset() == dt.timedelta(0):
        return utc.strftime(f"%Y-%m-%d {clock} UTC")
    in_utc = utc.strftime(clock if utc.date() == local.date() else f"%Y-%m-%d {clock}")
    return (
        f"{local.strftime(f'%Y-%m-%d {clock}')} {local.tzname() or _offset(local)} ({in_utc} UTC)"
    )


def describe_scheduled(done: Scheduled) -> str:
    """The one line ``schedule`` prints: what goes to whom (counted now), when."""
    schedule, plan = done.schedule, done.plan
    readers = f"{plan.to_send:,} subscriber{'' if plan.to_send == 1 else 's'}"
    already = f" not yet sent (of {plan.active:,})" if plan.done else ""
    replaced = "".join(
        f"; replaces #{old.id} (was {describe_moment(old.due_at)})" for old in done.replaced
    )
    return (
        f"Scheduled #{schedule.id}: “{plan.issue.subject}” ({schedule.path}) for"
        f" {describe_moment(schedule.due_at)}, to the {readers}{already} of segment"
        f" {schedule.segment} (counted now){replaced}; a running `newsletter worker`"
        " sends it then"
    )


def describe_schedule(schedule: Schedule) -> str:
    """One row of ``schedule --list``: number, state, time, segment, file, and what
    happened (who started it, how it ended)."""
    what = _being_sent(schedule) if schedule.state == "started" else schedule.note
    return (
        f"#{schedule.id:<4} {schedule.state:<9} {describe_moment(schedule.due_at)}  "
        f"{schedule.segment:<4}  {schedule.path}{f'  {what}' if what else ''}"
    )


def _being_sent(schedule: Schedule) -> str:
    claim = schedule.claim
    if claim is None:
        return "a worker is sending it"
    return (
        f"worker {claim.pid} on {claim.host} is sending it since"
        f" {describe_moment(claim.started_at)}"
    )


def _offset(moment: dt.datetime) -> str:
    """``+02:00``, ``-05:00``: the UTC offset of an aware ``moment``."""
    return moment.isoformat(timespec="minutes")[-6:]
