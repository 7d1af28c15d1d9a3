"""Unsubscribing on ``newsletter serve``.

``POST /unsubscribe?token=…`` unsubscribes (RFC 8058 one-click, sent by mailbox
providers with the body ``List-Unsubscribe=One-Click``, and by the button on the
confirmation page) and answers 200. ``GET`` only shows that confirmation page,
because link scanners fetch every link in every email. A token that does not
verify changes nothing and gets a 400 page; a GET without any token (the footer of
a copy that went to no one in particular) explains where the real link is. While
another process keeps the database locked, an unsubscribe is queued on the disk
beside it (:mod:`composer.store.pending`), answered like any other, and applied in
the background once the lock is free (:class:`LaterUnsubscribes`): a lock is never
a 500 nor a lost unsubscribe.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from composer.config import SubscriberSettings
from composer.errors import InvalidToken, NewsletterError, StoreBusy, StoreError
from composer.store import Subscriber, address_key, open_store
from composer.store.membership import record_unsubscribe
from composer.store.pending import PendingUnsubscribes, QueuedUnsubscribe
from composer.unsubscribe import UnsubscribeLinks
from composer.web.site import Site

log = logging.getLogger(__name__)

# How long the queue of unsubscribes waits between tries at a busy database (each try
# itself waits for the lock as long as any write does).
RETRY_SECONDS = 1.0


def routes(site: Site, later: LaterUnsubscribes) -> list[Route]:
    """``/unsubscribe`` of ``site``, recording through ``later``."""
    links = UnsubscribeLinks.from_config(site.config)
    settings = site.config.subscribers

    async def unsubscribe(request: Request) -> HTMLResponse:
        if request.method == "GET" and "token" not in request.query_params:
            return site.page("unsubscribe-how.html", "How to unsubscribe")
        try:
            token = links.verify(request.query_params.get("token", ""))
        except InvalidToken:
            return site.page("unsubscribe-invalid.html", "Link not valid", status_code=400)
        # Links sent before addresses were keyed case-insensitively carry the local part
        # as written; address_key of what a link carries finds its reader either way.
        key = address_key(token.key)
        if request.method == "POST":
            # Any POST to a verified link unsubscribes: the signature is the authority,
            # and refusing a provider whose body differs from RFC 8058's would only
            # leave someone subscribed who asked to leave. Scanners do not POST.
            await request.body()
            reason = f"unsubscribe link in {token.issue}" if token.issue else "unsubscribe link"
            wish = QueuedUnsubscribe(key=key, email=token.key, reason=reason)
            try:
                email = await later.unsubscribe(wish)
            except StoreError as exc:
                log.error("an unsubscribe was not recorded: %s", exc.format_message())
                return site.page("unavailable.html", "Not done", status_code=503)
            return site.page("unsubscribe-done.html", "You are unsubscribed", email=email)
        try:
            found = await run_in_threadpool(_lookup, settings, key)
        except StoreBusy:
            found = None
        email = found.email if found else token.key
        left = found is not None and found.status != "active"
        if left or await run_in_threadpool(later.queue.holds, key):
            return site.page("unsubscribe-already.html", "Already unsubscribed", email=email)
        return site.page("unsubscribe-confirm.html", "Unsubscribe", email=email)

    return [Route("/unsubscribe", unsubscribe, methods=["GET", "POST"])]


class LaterUnsubscribes:
    """Unsubscribes that a busy database could not take at once: queued on the disk
    beside it (:class:`PendingUnsubscribes`) and applied by a background task on the
    server's event loop, retrying until the lock is free."""

    def __init__(self, settings: SubscriberSettings) -> None:
        self.settings = settings
        self.queue = PendingUnsubscribes(settings)
        self._task: asyncio.Task[None] | None = None

    async def unsubscribe(self, wish: QueuedUnsubscribe) -> str:
        """Record ``wish`` now, or queue it when the database is busy; the address to
        show the reader. Raises :class:`StoreError` only when neither can be done."""
        # While earlier ones wait, a new one joins them, so they apply in order.
        if not await run_in_threadpool(self.queue.waiting):
            try:
                subscriber = await run_in_threadpool(_unsubscribe, self.settings, wish)
            except StoreBusy as exc:
                log.warning(
                    "database busy (%s): unsubscribe queued in %s", exc.__cause__, self.queue.path
                )
            else:
                return subscriber.email if subscriber else wish.email
        await run_in_threadpool(self.queue.add, wish)
        self.start()
        return wish.email

    def start(self) -> None:
        """Apply the queue in the background until it is empty, unless that is under way."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._apply())

    async def _apply(self) -> None:
        while await run_in_threadpool(self.queue.waiting):
            await asyncio.sleep(RETRY_SECONDS)
            try:
                await run_in_threadpool(_apply_queue, self.settings, self.queue)
            except NewsletterError as exc:
                log.warning("queued unsubscribes not applied yet: %s", exc.format_message())
            except Exception:
                # Kept on the disk: the next queued unsubscribe, restart or command
                # tries again.
                log.exception("queued unsubscribes not applied: %s", self.queue.path)
                return


def _lookup(settings: SubscriberSettings, key: str) -> Subscriber | None:
    with open_store(settings, apply_queued=False) as store:
        return store.get(key)


def _unsubscribe(settings: SubscriberSettings, wish: QueuedUnsubscribe) -> Subscriber | None:
    with open_store(settings, apply_queued=False) as store:
        return record_unsubscribe(store, wish.key, wish.email, wish.reason)


def _apply_queue(settings: SubscriberSettings, queue: PendingUnsubscribes) -> None:
    with open_store(settings, apply_queued=False) as store:
        queue.apply(store)
