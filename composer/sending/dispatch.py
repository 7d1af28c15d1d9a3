"""The dispatcher: every recipient of a stream gets their copy once, over a pool of
SMTP connections, with the outcome of each recorded before the next begins.

    producer  streams recipients into a bounded queue (memory stays flat)
    workers   one per connection: take a recipient, record ``sending``, send,
              record the outcome, retry 4xx with back-off, reconnect after drops
    journal   group commit: the changes of all workers since the last commit are
              written in one transaction, and a worker starts its next SMTP
              transaction only once its previous outcome is committed, so after a
              crash at most one accepted-but-unrecorded message per connection exists

A brake (:class:`Brake`, the reputation brake of :mod:`composer.sending.brake`) is asked
every ``brake_seconds`` whether the run should pause, and pauses it as too many failures
in a row do. A run that is one of several workers of a dispatch is given its lease
(:class:`~composer.store.deliveries.Lease`): the pace is the rate shared among the
workers sending, and a worker whose claims may have been taken over starts no more
messages and pauses.

Partial failure is data: :func:`dispatch` returns a :class:`DispatchReport`; only a
refused login (:class:`SmtpAuthError`), an unreachable server before the first
message, or a journal that cannot be written (:class:`JournalError`: nothing more is
sent, the messages in flight finish) raises.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from composer.errors import (
    JournalError,
    SendError,
    SmtpAuthError,
    SmtpConnectError,
    SmtpConnectionLost,
    SmtpReplyError,
    StoreError,
    UnsendableAddress,
)
from composer.sending.personalise import PersonalCopy
from composer.sending.transport import Connection, Transport
from composer.store.deliveries import Lease, Outcome, Recipient, State

log = logging.getLogger(__name__)

# Enhanced status 5.1.x: the address does not exist ("no such user", bad domain), except
# 5.1.7 and 5.1.8, which are about the sender's address (RFC 3463): Postfix, for one,
# refuses a sender domain it cannot resolve at RCPT, for every reader alike.
_BAD_ADDRESS = re.compile(r"^\s*5\.1\.(?!7\b|8\b)\d{1,3}\b")
_BAD_SENDER = re.compile(r"^\s*5\.1\.[78]\b")

# Why a run stopped before the end: Ctrl-C, or too many failures in a row (or a journal
# that cannot be written, or the brake).
StopReason = Literal["interrupted", "paused"]


class Journal(Protocol):
    """Where outcomes are recorded; :meth:`record` commits before it returns, and raises
    (:class:`JournalError`) having recorded nothing when it cannot."""

    def record(self, outcomes: Iterable[Outcome]) -> None: ...


class Brake(Protocol):
    """Asked now and then while a run sends: why it should pause, having delivered
    ``delivered`` copies (None: it goes on). Called on the dispatch's own thread."""

    def check(self, delivered: int) -> str | None: ...


class MemoryJournal:
    """Keeps outcomes in a list: for send-test, which has nothing to resume."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []

    def record(self, outcomes: Iterable[Outcome]) -> None:
        self.outcomes.extend(outcomes)


@dataclass(frozen=True)
class DispatchSettings:
    """How hard to push: connections, pace, retries and when to give up."""

    sender: str
    concurrency: int = 8
    rate_per_second: float = 0.0  # 0: as fast as the server takes it
    max_attempts: int = 5
    retry_base: float = 2.0  # seconds before the 2nd attempt; doubles each time, jittered
    retry_cap: float = 60.0
    pause_after: int = 50  # consecutive final failures that pause the dispatch
    brake_seconds: float = 5.0  # how often the brake, if any, is asked
    lease_poll_seconds: float = 0.5  # how often the lease, if any, is read for the pace


@dataclass
class Progress:
    """Running counts, passed to the progress callback as they change."""

    sent: int = 0
    deferred: int = 0  # waiting for a retry (by a later run, once the run has stopped)
    failed: int = 0
    unknown: int = 0
    bounced: int = 0
    attempted: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def rate(self) -> float:
        """Messages accepted per second so far."""
        elapsed = time.monotonic() - self.started
        return self.sent / elapsed if elapsed > 0 else 0.0


@dataclass
class DispatchReport:
    """What a run did. ``stopped`` is None when it ran to the end, else why it stopped:
    ``"interrupted"`` (Ctrl-C) or ``"paused"`` (too many failures in a row, or the
    brake), ``reason`` saying why in one line. ``unknown``
    counts copies whose outcome is unknown (no reply to the end of the message in time:
    they may have arrived); ``failures`` holds the failed and unknown outcomes."""

    sent: int = 0
    failed: int = 0
    unknown: int = 0
    deferred: int = 0  # still waiting for a retry when the run stopped
    bounced: int = 0
    failures: list[Outcome] = field(default_factory=list)
    stopped: StopReason | None = None
    reason: str = ""
    elapsed: float = 0.0

    @property
    def complete(self) -> bool:
        """Every recipient got their copy."""
        return self.stopped is None and not self.failed and not self.unknown and not self.deferred


class _Pace:
    """Spaces message starts to at most ``limit`` a second (0: no limit), and halves the
    pace when the server pushes back, growing it back by a little with each success."""

    def __init__(self, limit: float) -> None:
        self.whole = limit
        self.limit = limit
        self.current = limit
        self._next = 0.0

    def share(self, workers: int) -> None:
        """Take this process's share of the limit among ``workers`` sending together."""
        if self.whole <= 0:
            return
        self.limit = self.whole / max(1, workers)
        self.current = min(self.current, self.limit) if self.current > 0 else self.limit

    async def wait(self) -> None:
        if self.current <= 0:
            return
        now = time.monotonic()
        start = max(now, self._next)
        self._next = start + 1.0 / self.current
        if start > now:
            await asyncio.sleep(start - now)

    def slow_down(self, observed: float) -> None:
        base = self.current if self.current > 0 else observed
        if base >= 2:  # no pace measured yet: nothing to halve
            self.current = base / 2

    def speed_up(self) -> None:
        if self.current <= 0:
            return
        self.current += max(1.0, self.current * 0.02)
        if self.limit > 0:
            self.current = min(self.current, self.limit)
        elif self.current > 100_000:
            self.current = 0  # back to unlimited


class _Dispatch:
    def __init__(
        self,
        recipients: Iterable[Recipient],
        render: Callable[[Recipient], PersonalCopy],
        transport: Transport,
        journal: Journal,
        settings: DispatchSettings,
        stop: asyncio.Event,
        on_progress: Callable[[Progress], None] | None,
        brake: Brake | None = None,
        lease: Callable[[], Lease] | None = None,
    ) -> None:
        self.recipients = recipients
        self.brake = brake
        self.lease = lease
        self.render = render
        self.transport = transport
        self.journal = journal
        self.settings = settings
        self.stop = stop
        self.on_progress = on_progress
        self.progress = Progress()
        self.stopped: StopReason | None = None
        self.reason = ""
        self.failures: list[Outcome] = []
        self.pace = _Pace(settings.rate_per_second)
        self.queue: asyncio.Queue[tuple[Recipient, int] | None] = asyncio.Queue()
        # The producer may run this far ahead of the workers, and no further.
        self.room = asyncio.Semaphore(settings.concurrency * 4)
        self.outstanding = 0
        self.producer_done = False
        self.retries: dict[Recipient, asyncio.TimerHandle] = {}
        # Readers a copy of whom got no reply to its end in time, and that attempt.
        self.unconfirmed: dict[Recipient, int] = {}
        self.consecutive_failures = 0
        self.fatal: SendError | None = None
        # Why the journal could not be written: nothing more is sent once it is set.
        self.journal_failure: BaseException | None = None
        self.unsaved = 0
        self._buffer: list[Outcome] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._flush_scheduled = False
        self._committing = False
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")

    # -- the journal, group-committed ---------------------------------------------------

    def note(self, outcome: Outcome) -> None:
        """Buffer ``outcome`` for the next commit."""
        self._buffer.append(outcome)
        self._kick()

    async def committed(self, outcome: Outcome | None = None) -> None:
        """Buffer ``outcome`` and wait until it (and everything before it) is committed;
        raise :class:`_JournalDown` once the journal cannot be written."""
        if self.journal_failure is not None:
            raise _JournalDown
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        if outcome is not None:
            self._buffer.append(outcome)
        self._kick()
        await waiter

    def _kick(self) -> None:
        if self._committing or self._flush_scheduled:
            return
        self._flush_scheduled = True
        # call_soon runs after every worker already woken in this loop turn has had its
        # say, so one commit carries all their changes.
        asyncio.get_running_loop().call_soon(self._start_commit)

    def _start_commit(self) -> None:
        self._flush_scheduled = False
        if self._committing or self.journal_failure is not None:
            return
        if not (self._buffer or self._waiters):
            return
        batch, self._buffer = self._buffer, []
        waiters, self._waiters = self._waiters, []
        self._committing = True
        # The commit waits for the disk on the journal's own thread while this loop goes
        # on talking SMTP; changes made meanwhile form the next commit.
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._writer, self.journal.record, batch)
        future.add_done_callback(lambda done: self._finish_commit(done, batch, waiters))

    def _finish_commit(
        self,
        done: asyncio.Future[None],
        batch: list[Outcome],
        waiters: list[asyncio.Future[None]],
    ) -> None:
        self._committing = False
        failure = done.exception()
        if failure is not None:
            # Nothing of the batch was written: it goes back before what was noted since,
            # for drain()'s last try. Every worker waiting, now or later, learns at once
            # (one left waiting would hold the run, and its lock, for good).
            self._buffer[:0] = batch
            self.journal_failure = failure
            waiters += self._waiters
            self._waiters = []
            self.halt("paused", f"cannot write the journal: {failure}")
        for waiter in waiters:
            if waiter.done():
                continue
            if failure is not None:
                waiter.set_exception(_JournalDown())
            else:
                waiter.set_result(None)
        if failure is not None:
            return
        if self.on_progress is not None:
            self.on_progress(self.progress)
        if self._buffer or self._waiters:
            self._kick()

    async def drain(self) -> None:
        """Wait until every buffered outcome is committed. Once the journal has failed,
        try once more to save the outcomes of the messages already sent, without the
        new ``sending`` rows that no longer matter: a copy the server took but the
        journal still has in flight would go again on a rerun. Count those left so."""
        try:
            while self._buffer or self._committing:
                await self.committed()
        except _JournalDown:
            pass
        known = [outcome for outcome in self._buffer if outcome.state != "sending"]
        self._buffer = []
        if self.journal_failure is None or not known:
            return
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._writer, self.journal.record, known)
        except Exception:  # whatever it is, the first failure is the one to report
            taken = {o.recipient for o in known if o.state in ("sent", "unknown")}
            self.unsaved = len(taken)

    # -- the run ------------------------------------------------------------------------

    async def run(self) -> DispatchReport:
        # One connection before anything is recorded: a refused login or an unreachable
        # server stops the run here, before any message, with nothing to clean up.
        first = await self.transport.connect()
        producer = asyncio.create_task(self.produce())
        workers = [
            asyncio.create_task(self.work(first if n == 0 else None))
            for n in range(self.settings.concurrency)
        ]
        watch = asyncio.create_task(self.watch_stop())
        braking = asyncio.create_task(self.watch_brake()) if self.brake else None
        leasing = asyncio.create_task(self.watch_lease()) if self.lease else None
        try:
            await asyncio.gather(*workers)
        except BaseException:
            for worker in workers:
                worker.cancel()
            raise
        finally:
            watch.cancel()
            for task in (braking, leasing):
                if task is not None:
                    task.cancel()
            producer.cancel()
            for handle in self.retries.values():
                handle.cancel()
            try:
                await self.drain()
            finally:
                self._writer.shutdown(wait=True)
        for recipient in self.retries:
            self.left_waiting(recipient)
        if self.journal_failure is not None:
            if isinstance(self.journal_failure, JournalError):
                raise JournalError(
                    self.journal_failure.message, unsaved=self.unsaved
                ) from self.journal_failure
            raise self.journal_failure
        if self.fatal is not None:
            raise self.fatal
        counts = self.progress
        return DispatchReport(
            sent=counts.sent,
            failed=counts.failed,
            unknown=counts.unknown,
            deferred=counts.deferred,
            bounced=counts.bounced,
            failures=self.failures,
            stopped=self.stopped,
            reason=self.reason,
            elapsed=time.monotonic() - counts.started,
        )

    async def watch_stop(self) -> None:
        await self.stop.wait()
        self.halt("interrupted", "stopped by the user")

    async def watch_brake(self) -> None:
        assert self.brake is not None
        while self.stopped is None:
            await asyncio.sleep(self.settings.brake_seconds)
            try:
                # One read of the store, on this thread (the store's connection is this
                # thread's), every few seconds: no cost to speak of against the sending.
                reason = self.brake.check(self.progress.sent)
            except Exception:
                # A brake that cannot read this time does not stop the mail; the next
                # look may.
                log.warning("the reputation brake could not read the reports", exc_info=True)
                continue
            if reason is not None:
                self.halt("paused", reason)

    async def watch_lease(self) -> None:
        assert self.lease is not None
        while self.stopped is None:
            self.pace.share(self.lease().workers)
            await asyncio.sleep(self.settings.lease_poll_seconds)

    def lease_lost(self) -> bool:
        """Whether this worker's claims may be another's now: if so, it pauses."""
        lost = self.lease().lost if self.lease is not None else ""
        if lost:
            self.halt("paused", lost)
        return bool(lost)

    def halt(self, why: StopReason, reason: str) -> None:
        """Take no new recipient; the messages in flight finish and are recorded."""
        if self.stopped is None:
            self.stopped = why
            self.reason = reason
        self.producer_done = True
        self._wake_workers()

    def _wake_workers(self) -> None:
        for _ in range(self.settings.concurrency):
            self.queue.put_nowait(None)

    async def produce(self) -> None:
        try:
            for recipient in self.recipients:
                await self.room.acquire()
                if self.stopped is not None:
                    return
                self.outstanding += 1
                self.queue.put_nowait((recipient, 1))
        except StoreError as exc:
            # Who is still to send cannot be read (or claimed): what is under way
            # finishes and is recorded; a rerun reads the rest.
            self.halt("paused", exc.message)
            return
        self.producer_done = True
        if self.outstanding == 0:
            self._wake_workers()

    def finish(self) -> None:
        """One recipient reached a final state (or the run stopped before them)."""
        self.outstanding -= 1
        if self.producer_done and self.outstanding == 0:
            self._wake_workers()

    async def work(self, connection: Connection | None) -> None:
        session = _Session(connection)
        try:
            while (item := await self.queue.get()) is not None:
                recipient, attempt = item
                if attempt == 1:
                    self.room.release()
                if self.stopped is not None:
                    self.finish()
                    continue
                await self.attempt(session, recipient, attempt)
        finally:
            if session.connection is not None:
                await session.connection.close()

    async def attempt(self, session: _Session, recipient: Recipient, attempt: int) -> None:
        """Send ``recipient`` their copy over ``session``, then record what came of it:
        settled, or waiting for a retry."""
        try:
            copy = self.render(recipient)
        except UnsendableAddress as exc:
            self.fail(recipient, attempt, str(exc))
            return
        await self.pace.wait()
        if self.lease_lost():
            # Never started: left, as it is recorded, to the worker that took it over.
            self.finish()
            return
        try:
            await self.committed(
                Outcome(
                    recipient=recipient,
                    state="sending",
                    attempts=attempt,
                    message_id=copy.message_id,
                )
            )
        except _JournalDown:
            # Not recorded as in flight, so not sent: the run is stopping.
            self.finish()
            return
        self.progress.attempted += 1
        try:
            if session.connection is None:
                if session.failures > 1:
                    await asyncio.sleep(self.backoff(session.failures - 1))
                session.connection = await self.transport.connect()
            code, reply = await session.connection.send(
                copy.return_path or self.settings.sender, copy.envelope_address, copy.data
            )
        except SmtpAuthError as exc:
            self.fatal = exc
            self.halt("paused", str(exc))
            self.retry_or_fail(recipient, attempt, exc.code, exc.reply or str(exc))
        except SmtpReplyError as exc:
            session.failures = 0
            self.refused(recipient, attempt, exc)
        except UnsendableAddress as exc:
            # This server cannot take the address (no SMTPUTF8); another may.
            self.fail(recipient, attempt, str(exc), retryable=True)
        except (SmtpConnectionLost, SmtpConnectError) as exc:
            if session.connection is not None:
                await session.connection.close()
            session.connection = None
            session.failures += 1
            self.lost(recipient, attempt, exc, session.failures)
        else:
            session.failures = 0
            self.settle(
                Outcome(recipient=recipient, state="sent", attempts=attempt, code=code, reply=reply)
            )

    def refused(self, recipient: Recipient, attempt: int, exc: SmtpReplyError) -> None:
        code = exc.code or 0
        if exc.temporary:
            self.retry_or_fail(recipient, attempt, code, exc.reply)
            return
        # Only a reply to RCPT or DATA (one recipient per transaction) is about the reader.
        bounced = exc.stage != "MAIL" and bool(_BAD_ADDRESS.match(exc.reply))
        # A refused address is final; a server error about the message, the session or
        # the sender may pass once the cause is fixed: --retry-failed tries it.
        retryable = not bounced and (exc.stage != "RCPT" or bool(_BAD_SENDER.match(exc.reply)))
        self.fail(recipient, attempt, exc.reply, code=code, retryable=retryable, bounced=bounced)

    def lost(
        self,
        recipient: Recipient,
        attempt: int,
        exc: SmtpConnectionLost | SmtpConnectError,
        failures: int,
    ) -> None:
        """The connection for ``recipient``'s message was lost or could not be made, the
        ``failures``-th time in a row for its worker.

        A connection that served messages and then closed (a limit per session, a
        restart) is replaced at once, and the message retried on the new one. Only when
        that fails too is the server pushing back: the pace halves, the message waits
        for its back-off, and the worker for its own before each new connection."""
        if failures > 1:
            self.pace.slow_down(self.progress.rate)
        delay = 0.0 if failures == 1 else None
        self.retry_or_fail(
            recipient,
            attempt,
            exc.code,
            exc.reply or str(exc),
            delay=delay,
            unknown=isinstance(exc, SmtpConnectionLost) and exc.outcome_unknown,
        )

    def retry_or_fail(
        self,
        recipient: Recipient,
        attempt: int,
        code: int | None,
        reply: str,
        *,
        delay: float | None = None,
        unknown: bool = False,
    ) -> None:
        """Retry ``recipient`` after ``delay`` seconds (default: the back-off), or record
        them failed when attempts have run out (deferred when the run is stopping).

        ``unknown``: the server may have taken this attempt (no reply to the end of the
        message in time). Such a reader gets one more attempt, never more, and is
        recorded ``unknown`` unless that one is confirmed, so that neither a rerun nor
        ``--retry-failed`` sends yet another copy unasked."""
        if unknown:
            self.unconfirmed.setdefault(recipient, attempt)
        out_of_attempts = (
            attempt >= self.settings.max_attempts
            or self.unconfirmed.get(recipient, attempt) < attempt
        )
        state: State = "unknown" if unknown else "failed" if out_of_attempts else "deferred"
        outcome = Outcome(
            recipient=recipient,
            state=state,
            attempts=attempt,
            code=code,
            reply=reply,
            retryable=True,
        )
        if out_of_attempts or self.stopped is not None:
            self.settle(outcome)
            return
        # A temporary refusal that will be retried is no failure (greylisting refuses
        # every first contact): only final failures count towards a pause.
        self.note(outcome)
        self.progress.deferred += 1
        self.retries[recipient] = asyncio.get_running_loop().call_later(
            self.backoff(attempt) if delay is None else delay, self._retry, recipient, attempt + 1
        )

    def _retry(self, recipient: Recipient, attempt: int) -> None:
        del self.retries[recipient]
        if self.stopped is not None:
            # The workers are leaving; the journal already says deferred (or unknown).
            self.left_waiting(recipient)
            return
        self.progress.deferred -= 1
        self.queue.put_nowait((recipient, attempt))

    def left_waiting(self, recipient: Recipient) -> None:
        """Count ``recipient``, whose retry the stopping run will not make: deferred, as
        counted while they waited, or unknown when an earlier copy may have arrived."""
        if recipient in self.unconfirmed:
            self.progress.deferred -= 1
            self.progress.unknown += 1

    def backoff(self, attempt: int) -> float:
        """How long to wait before attempt ``attempt + 1``: :func:`backoff`."""
        return backoff(self.settings, attempt)

    def unknown_if_unconfirmed(self, outcome: Outcome) -> Outcome:
        """``outcome`` (failed or deferred) as ``unknown`` when an earlier copy to its
        reader may have arrived: that attempt got no reply to the end of the message."""
        timed_out = self.unconfirmed.get(outcome.recipient)
        if timed_out is None or outcome.state not in ("failed", "deferred"):
            return outcome
        reply = f"{outcome.reply}; attempt {timed_out} got no reply in time, may have arrived"
        return replace(outcome, state="unknown", reply=reply)

    def fail(
        self,
        recipient: Recipient,
        attempt: int,
        reply: str,
        *,
        code: int | None = None,
        retryable: bool = False,
        bounced: bool = False,
    ) -> None:
        """Record ``recipient`` failed at ``attempt``, for ``reply``."""
        self.settle(
            Outcome(
                recipient=recipient,
                state="failed",
                attempts=attempt,
                code=code,
                reply=reply,
                retryable=retryable,
                bounced=bounced,
            )
        )

    def settle(self, outcome: Outcome) -> None:
        """Record a final (or, at a stop, deferred) outcome and count it."""
        if self.unconfirmed:
            outcome = self.unknown_if_unconfirmed(outcome)
        self.note(outcome)
        if outcome.state == "sent":
            self.progress.sent += 1
            self.consecutive_failures = 0
            self.pace.speed_up()
        elif outcome.state == "deferred":
            self.progress.deferred += 1
        else:
            if outcome.state == "unknown":
                self.progress.unknown += 1
            else:
                self.progress.failed += 1
            self.failures.append(outcome)
            if outcome.bounced:
                self.progress.bounced += 1
            self.count_failure(outcome.reply)
        self.finish()

    def count_failure(self, reply: str) -> None:
        self.consecutive_failures += 1
        if self.consecutive_failures >= self.settings.pause_after:
            self.halt(
                "paused",
                f"{self.consecutive_failures} failures in a row, the last: {reply}",
            )


def backoff(settings: DispatchSettings, attempt: int) -> float:
    """Exponential back-off with jitter, after ``attempt`` attempts: about
    ``retry_base`` x 2^(attempt-1) seconds, capped at ``retry_cap``."""
    delay = min(settings.retry_cap, settings.retry_base * 2.0 ** (attempt - 1))
    jitter: float = random.uniform(0.5, 1.0)
    return delay * jitter


@dataclass
class _Session:
    """One worker's connection (None: to be made before its next message), and how many
    connections it lost or could not make since it last heard a reply to a message."""

    connection: Connection | None
    failures: int = 0


class _JournalDown(Exception):
    """The journal cannot be written: a worker sends nothing more."""


async def dispatch(
    recipients: Iterable[Recipient],
    render: Callable[[Recipient], PersonalCopy],
    transport: Transport,
    journal: Journal,
    settings: DispatchSettings,
    *,
    stop: asyncio.Event | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    brake: Brake | None = None,
    lease: Callable[[], Lease] | None = None,
) -> DispatchReport:
    """Send ``render(recipient)`` to each of ``recipients`` through ``transport``,
    recording every step in ``journal``; stop cleanly when ``stop`` is set, or pause
    when ``brake`` says so, or when ``lease`` says this worker's claims may have been
    taken over; pace at the rate shared among the workers ``lease`` counts."""
    run = _Dispatch(
        recipients,
        render,
        transport,
        journal,
        settings,
        stop or asyncio.Event(),
        on_progress,
        brake,
        lease,
    )
    return await run.run()
