"""``newsletter worker``: start each scheduled dispatch when it is due, top to bottom.

every few seconds → read the schedules waiting or being sent → claim the first one due
  (or one whose worker is gone) by a compare-and-set, so that no other worker starts it
  → read the issue file: another issue now (another id) fails it; changed content is
    sent as it is now, and said so
  → send it exactly as ``newsletter send ISSUE --segment S --yes`` does, keeping the
    claim fresh meanwhile → done (whatever some readers' copies came to: ``status``
    tells), or failed with the one-line error (paused, check errors, a refused login…)
  → asked to stop (SIGTERM, Ctrl+C): the messages in flight finish and are recorded,
    the dispatch lock is released and the schedule is ``scheduled`` again, for the
    next worker to resume at once

Every event is one line through ``log``.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

from composer.composing.load import load_issue
from composer.config import Config
from composer.errors import NewsletterError, ScheduleError, StoreBusy, StoreError
from composer.sending.schedule import describe_moment, issue_file
from composer.sending.send import SendPlan, SendResult, send_issue
from composer.sending.stop import StopRequest
from composer.store import SubscriberStore, open_store
from composer.store.deliveries import IssueIdentity
from composer.store.schedules import (
    CLAIM_REFRESH_SECONDS,
    UPCOMING,
    Schedule,
    ScheduleBook,
    ScheduleState,
    WorkerClaim,
    is_abandoned,
    is_due,
)

Log = Callable[[str], None]


class _Stopping(Exception):
    """A stop was requested after the dispatch was prepared, before its first message."""


def run_worker(config: Config, *, poll_seconds: float, log: Log) -> None:
    """Start due dispatches until SIGTERM or SIGINT, looking at the schedules every
    ``poll_seconds``."""
    stop = StopRequest()
    with stop.handling():
        store = _open_when_free(config, poll_seconds, stop, log)
        if store is None:
            return
        with store:
            worker = Worker(config, store.schedules(), stop, log)
            log(
                f"worker {os.getpid()} on {worker.host}: watching {config.subscribers.database}"
                f" every {poll_seconds:g}s"
            )
            while not stop.requested:
                if not worker.start_next():
                    stop.wait(poll_seconds)
        log(f"worker {os.getpid()}: stopped")


def _open_when_free(
    config: Config, poll_seconds: float, stop: StopRequest, log: Log
) -> SubscriberStore | None:
    """The store, opened once no other process holds it busy (None: asked to stop first);
    a busy database is a moment's wait, not a reason for the service to fail."""
    while not stop.requested:
        try:
            return open_store(config.subscribers)
        except StoreBusy as exc:
            log(f"the database is busy, trying again in {poll_seconds:g}s: {exc.message}")
            stop.wait(poll_seconds)
    return None


class Worker:
    """One worker process: claims schedules in ``book`` and sends them."""

    def __init__(self, config: Config, book: ScheduleBook, stop: StopRequest, log: Log) -> None:
        self.config = config
        self.book = book
        self.stop = stop
        self.log = log
        self.host = socket.gethostname()

    def start_next(self) -> bool:
        """Claim and send the first due schedule (or one whose worker is gone); False when
        there was none to claim."""
        try:
            claimed = self._claim_next()
        except StoreBusy as exc:
            self.log(f"the database is busy, looking again later: {exc.message}")
            return False
        if claimed is None:
            return False
        self._send(*claimed)
        return True

    def _claim_next(self) -> tuple[Schedule, Schedule] | None:
        """The schedule this worker now holds, and the same as it was read before."""
        now, clock = dt.datetime.now(dt.UTC), time.time()
        ready = [
            s
            for s in self.book.find(UPCOMING, limit=1000)
            if is_due(s, now) or is_abandoned(s, clock, self.host)
        ]
        for schedule in sorted(ready, key=lambda s: (s.due_at, s.id)):
            claim = WorkerClaim(
                owner=uuid.uuid4().hex,
                host=self.host,
                pid=os.getpid(),
                started_at=now,
                heartbeat_at=clock,
            )
            if self.book.claim(schedule, claim):
                return replace(schedule, state="started", claim=claim), schedule
            self.log(f"#{schedule.id} {schedule.path}: another worker started it first")
        return None

    def _send(self, held: Schedule, before: Schedule) -> None:
        label = f"#{held.id} {held.path}"
        late = (dt.datetime.now(dt.UTC) - held.due_at).total_seconds()
        if before.state == "started" and before.claim is not None:
            gone = before.claim
            self.log(
                f"{label}: resuming the dispatch of worker {gone.pid} on {gone.host}"
                f" (started {describe_moment(gone.started_at)}), which is gone"
            )
        else:
            self.log(
                f"{label}: due {describe_moment(held.due_at)}, starting"
                f"{f' {_duration(late)} late' if late >= 60 else ''}"
            )
        try:
            changed = self._changed(held)
            if changed:
                self.log(f"{label}: {changed}")
            with self._claim_kept_fresh(held):
                result = send_issue(
                    issue_file(held, self.config),
                    self.config,
                    held.segment,
                    skip_check=held.skip_check,
                    on_start=lambda plan: self._started(label, plan),
                )
        except _Stopping:
            self._end(held, "scheduled", "stopped before its first message; resumes at once")
        except StoreBusy as exc:
            self._end(held, "scheduled", f"the database was busy; tried again: {exc.message}")
        except NewsletterError as exc:
            self._end(held, "failed", exc.message)
        except Exception as exc:
            self._end(held, "failed", f"internal error: {exc!r}")
            raise
        else:
            state, note = _outcome(result, held)
            if result.report.stopped == "interrupted":
                self.stop.requested = True
            self._end(held, state, f"{note}; {changed}" if changed else note)

    def _changed(self, held: Schedule) -> str:
        """What changed in the issue file since ``held`` was scheduled ("" if nothing).
        The same issue edited is sent as it is now (it is checked again before sending,
        as the editor who fixes a typo after scheduling expects); a file that holds
        another issue now (another id) raises :class:`ScheduleError`."""
        path = issue_file(held, self.config)
        now = IssueIdentity.of(load_issue(path))
        if held.issue.id and now.id != held.issue.id:
            raise ScheduleError(
                f"{held.path}: holds another issue now (id {now.id or 'none'!r}, scheduled"
                f" with id {held.issue.id!r}); nothing was sent: schedule it again if it is"
                " the one to send"
            )
        if now.content != held.issue.content:
            return "the file changed since it was scheduled: sending it as it is now"
        return ""

    def _started(self, label: str, plan: SendPlan) -> None:
        if self.stop.requested:
            raise _Stopping
        self.log(
            f"{label}: sending to {plan.to_send:,} of {plan.active:,} subscribers"
            f" ({plan.segment}) via {plan.server}"
        )

    @contextmanager
    def _claim_kept_fresh(self, held: Schedule) -> Iterator[None]:
        """Refresh ``held``'s claim every :data:`CLAIM_REFRESH_SECONDS` from a thread of its
        own (on a connection of its own) while the dispatch runs, so that no worker on
        another machine takes it for abandoned."""
        assert held.claim is not None
        claim = held.claim
        done = threading.Event()

        def refresh() -> None:
            try:
                store = open_store(self.config.subscribers, apply_queued=False)
            except StoreError as exc:
                self.log(f"#{held.id}: its claim cannot be refreshed: {exc.message}")
                return
            with store:
                book = store.schedules()
                while not done.wait(CLAIM_REFRESH_SECONDS):
                    try:
                        book.claim(held, replace(claim, heartbeat_at=time.time()))
                    except StoreError:
                        continue  # busy or failing: the next refresh is well in time

        thread = threading.Thread(target=refresh, name="claim", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    def _end(self, held: Schedule, state: ScheduleState, note: str) -> None:
        label = f"#{held.id} {held.path}"
        try:
            ended = self.book.end(held, state, note)
        except StoreError as exc:
            # Its claim then goes stale with this process, and a worker resumes it.
            self.log(f"{label}: {state}: {note}; could not be recorded: {exc.message}")
            return
        if not ended:
            self.log(f"{label}: {state}: {note}; another worker had taken it over meanwhile")
            return
        self.log(f"{label}: {state}: {note}")


def _outcome(result: SendResult, held: Schedule) -> tuple[ScheduleState, str]:
    """The state a dispatch's result leaves its schedule in, and the note saying why."""
    report = result.report
    resume = f"`newsletter send {held.path} --segment {held.segment}`"
    if report.stopped == "interrupted":
        return "scheduled", (
            f"stopped after the messages in flight ({report.sent:,} sent); the next worker"
            " resumes it"
        )
    if report.stopped == "paused":
        return "failed", f"paused: {report.reason}; fix the cause, then {resume} resumes it"
    note = f"sent {report.sent:,} in {report.elapsed:.1f}s"
    left = [
        f"{count:,} {what}"
        for count, what in (
            (report.failed, "failed"),
            (report.unknown, "unknown"),
            (report.deferred, "deferred"),
        )
        if count
    ]
    if left:
        note += f", {', '.join(left)} (`newsletter status {held.path}`)"
    return "done", note


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes} min" if minutes < 120 else f"{minutes // 60} h {minutes % 60} min"
