"""Draining the transactional mail queue (:mod:`composer.store.mailqueue`): the
background task of ``newsletter serve`` that sends confirmations and welcomes.

    requeue what a killed run left ``sending`` → loop: take the messages due →
    send them over a few connections: connect, mark ``sending`` (committed), send,
    record ``sent`` after the 250, or ``queued`` again with a back-off, or ``failed``

The rules are a dispatch's (:mod:`composer.sending.dispatch`): a 4xx reply, a dropped
connection or a timeout is retried after an exponential back-off with jitter, up to
``[send] max_attempts``; a 5xx reply fails the message at once, with the server's
reply recorded. A server that cannot be reached at all fails no message: nothing was
attempted, so the queue waits (the same back-off, growing) and tries again, for as
long as it takes. A connection starts its next message only once the outcome of the
last is committed, so a crash leaves at most one message per connection whose fate
is unknown; it is sent again by the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections import deque
from collections.abc import Callable

from composer.errors import (
    NewsletterError,
    SmtpAuthError,
    SmtpConnectError,
    SmtpConnectionLost,
    SmtpReplyError,
    UnsendableAddress,
)
from composer.sending.dispatch import DispatchSettings, backoff
from composer.sending.personalise import PersonalCopy
from composer.sending.transport import Connection, Transport
from composer.store import SubscriberStore
from composer.store.mailqueue import MailOutcome, QueuedMail
from composer.store.writer import Batch, StoreWriter

log = logging.getLogger(__name__)

# Messages taken from the queue at a time; connections are at most [send] concurrency.
BATCH = 200
# How often an idle queue is looked at again when nothing wakes it (retries coming due).
IDLE_SECONDS = 1.0


class MailSender:
    """Sends what the queue in ``writer``'s store holds, through ``transport``;
    ``render`` builds each message. Call :meth:`wake` when mail was queued."""

    def __init__(
        self,
        writer: StoreWriter,
        transport: Transport,
        render: Callable[[QueuedMail], PersonalCopy],
        settings: DispatchSettings,
    ) -> None:
        self.writer = writer
        self.transport = transport
        self.render = render
        self.settings = settings
        self._wake = asyncio.Event()
        # Concurrent outcomes go to the store in one transaction.
        self._record: Batch[tuple[MailOutcome, ...], None] = Batch(self._write)
        self._unreachable = 0  # rounds in a row in which the server could not be reached
        self._server_down = False

    def wake(self) -> None:
        """Mail was queued: look at the queue now."""
        self._wake.set()

    async def run(self) -> None:
        """Send queued mail until cancelled. A store that cannot be read or written just
        now (another process holds its lock) is tried again a moment later."""
        while True:
            try:
                await self._run()
            except NewsletterError as exc:
                log.warning("transactional mail waits: %s", exc.format_message())
            except Exception:
                log.exception("transactional mail stopped; it is tried again in a moment")
            await asyncio.sleep(IDLE_SECONDS)

    async def _run(self) -> None:
        requeued = await self.writer.call(lambda store: store.requeue_interrupted_mail())
        if requeued:
            log.warning("%d messages left in flight by the last run are sent again", requeued)
        while True:
            self._wake.clear()
            due = await self.writer.call(_due_now)
            if due:
                self._server_down = False
                await self.send(due)
                if self._server_down:
                    self._unreachable += 1
                    await asyncio.sleep(backoff(self.settings, self._unreachable))
                else:
                    self._unreachable = 0
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), IDLE_SECONDS)

    async def send(self, due: list[QueuedMail]) -> None:
        """Send each of ``due`` over up to ``concurrency`` connections."""
        waiting = deque(due)
        count = max(1, min(self.settings.concurrency, len(due)))
        await asyncio.gather(*(self._work(waiting) for _ in range(count)))

    async def _work(self, waiting: deque[QueuedMail]) -> None:
        connection: Connection | None = None
        # The outcome of the last message, committed with the next one's ``sending``:
        # one commit a message, and never a transaction before the last is recorded.
        settled: list[MailOutcome] = []
        try:
            while waiting:
                mail = waiting.popleft()
                if connection is None:
                    try:
                        connection = await self.transport.connect()
                    except (SmtpConnectError, SmtpConnectionLost, SmtpAuthError) as exc:
                        # Nothing was attempted: the message waits, its attempts unspent.
                        if not self._server_down:
                            log.warning("transactional mail waits: %s", exc.format_message())
                        self._server_down = True
                        waiting.appendleft(mail)
                        return
                connection, outcome = await self._attempt(connection, mail, settled)
                settled.append(outcome)
        finally:
            if settled:
                await self._record.submit(tuple(settled))
            if connection is not None:
                await connection.close()

    async def _attempt(
        self, connection: Connection, mail: QueuedMail, settled: list[MailOutcome]
    ) -> tuple[Connection | None, MailOutcome]:
        """Record ``settled`` (emptying it) and ``mail`` as ``sending``, send it over
        ``connection``; the connection to go on with (None: it was lost) and the outcome
        to record. A message that cannot be built is not sent and leaves ``settled``."""
        attempt = mail.attempts + 1
        try:
            # A welcome may need composing (tens of milliseconds): off the event loop. A
            # confirmation is a few substitutions, cheaper than the hop to a thread.
            if mail.kind == "welcome":
                copy = await asyncio.to_thread(self.render, mail)
            else:
                copy = self.render(mail)
        except (UnsendableAddress, NewsletterError) as exc:
            reason = exc.format_message() if isinstance(exc, NewsletterError) else str(exc)
            log.error("message %d (%s to %s) not sent: %s", mail.id, mail.kind, mail.email, reason)
            return connection, MailOutcome(
                id=mail.id, state="failed", attempts=attempt, reply=reason
            )
        sending = MailOutcome(id=mail.id, state="sending", attempts=attempt)
        await self._record.submit((*settled, sending))
        settled.clear()
        sender = self.settings.sender
        try:
            code, reply = await connection.send(sender, copy.envelope_address, copy.data)
        except SmtpReplyError as exc:
            return connection, self._retry_or_fail(mail, attempt, exc, exc.temporary)
        except UnsendableAddress as exc:
            return connection, MailOutcome(
                id=mail.id, state="failed", attempts=attempt, reply=str(exc)
            )
        except (SmtpConnectionLost, SmtpAuthError) as exc:
            await connection.close()
            return None, self._retry_or_fail(mail, attempt, exc, True)
        sent = MailOutcome(id=mail.id, state="sent", attempts=attempt, reply=f"{code} {reply}")
        return connection, sent

    def _retry_or_fail(
        self, mail: QueuedMail, attempt: int, exc: NewsletterError, temporary: bool
    ) -> MailOutcome:
        """``mail`` queued again after the back-off, or failed when the reply is
        permanent or attempts have run out."""
        reply = exc.format_message()
        if not temporary or attempt >= self.settings.max_attempts:
            log.error("message %d (%s to %s) failed: %s", mail.id, mail.kind, mail.email, reply)
            return MailOutcome(id=mail.id, state="failed", attempts=attempt, reply=reply)
        later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=backoff(self.settings, attempt))
        return MailOutcome(
            id=mail.id, state="queued", attempts=attempt, reply=reply, next_attempt_at=later
        )

    async def _write(self, groups: list[tuple[MailOutcome, ...]]) -> list[None]:
        outcomes = [outcome for group in groups for outcome in group]
        await self.writer.call(lambda store: store.record_mail(outcomes))
        return [None] * len(groups)


def _due_now(store: SubscriberStore) -> list[QueuedMail]:
    return store.due_mail(dt.datetime.now(dt.UTC), BATCH)
