"""Signing up on ``newsletter serve``.

``GET /subscribe`` is a form (address, optional name; ``?email=`` prefills it).
``POST /subscribe`` checks, in this order: the client's allowance (``[subscribe]
per_ip_per_hour``, else 429 with Retry-After); the honeypot field (filled: answered
as a success, nothing done); the signed form token (:mod:`composer.web.form_tokens`:
too fast, too old or forged gets the form again; an embedded form's opens this one,
prefilled); the Origin (or Referer), which must be base_url's when sent; the address.
Then the signup is written by the store's rules (:mod:`composer.store.signups`)
together with the mail it calls for, in a batch with the others that arrived
meanwhile, and the answer is the same page whatever the address's standing, byte for
byte: nothing tells whether someone is subscribed.

``GET /confirm?token=…`` shows a Confirm button; the ``POST`` confirms (link scanners
fetch every GET, so a GET changes nothing). The confirmation and welcome emails are
sent by :class:`~composer.sending.transactional.MailSender` in the background: a slow
mail server never slows a page. Pending signups are deleted once their link expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import time
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, quote, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from composer.config import Config
from composer.confirm_links import ConfirmLinks
from composer.errors import AddressRejected, InvalidToken, StoreError
from composer.sending.notices import Notices
from composer.sending.send import dispatch_settings
from composer.sending.transactional import MailSender
from composer.sending.transport import SmtpTransport
from composer.store import SubscriberStore
from composer.store.mailqueue import CONFIRM_DAYS
from composer.store.membership import AddressChecker
from composer.store.signups import Confirmation, Signup, SignupResult
from composer.store.writer import Batch, StoreWriter
from composer.web.form_tokens import FormExpired, FormTokens, FormTooFast
from composer.web.site import Site
from composer.web.throttle import RateLimit, client_address, retry_after

log = logging.getLogger(__name__)

# The field people never see nor fill; a script filling every field fills it too.
HONEYPOT = "website"
MAX_NAME_CHARS = 100
MAX_EMAIL_CHARS = 254
# How often pending signups whose link has expired are looked for.
EXPIRY_SECONDS = 3600.0
# The subscribe and confirm pages post to themselves, and a browser sends their Origin
# only when the referrer policy lets it ("no-referrer" makes it "null").
FORM_HEADERS = {"Referrer-Policy": "same-origin", "Cache-Control": "no-store"}


class Joining:
    """What the signup routes share with ``serve``'s lifespan: the store's writer, the
    batch of signups, the mail sender and the limits."""

    def __init__(self, site: Site) -> None:
        config = site.config
        self.site = site
        self.settings = config.subscribe
        self.writer = StoreWriter(config.subscribers)
        self.tokens = FormTokens.from_config(config)
        self.confirm_links = ConfirmLinks.from_config(config)
        self.checker = AddressChecker()
        self.limit = RateLimit(config.subscribe.per_ip_per_hour)
        self.mailer = MailSender(
            self.writer,
            SmtpTransport.from_settings(config.smtp),
            Notices.from_config(config).render,
            dispatch_settings(config),
        )
        self.signups: Batch[Signup, SignupResult] = Batch(self._sign_up)
        # The one answer to every accepted signup, whoever the address belongs to:
        # rendered once, so that it is the same to the byte (and costs nothing).
        sent = site.page(
            "subscribe-sent.html",
            "Check your inbox",
            public=True,
            double_opt_in=config.subscribe.double_opt_in,
        )
        self._sent = (sent.body, dict(sent.headers))

    async def _sign_up(self, signups: list[Signup]) -> list[SignupResult]:
        results = await self.writer.call(
            lambda store: store.sign_up(signups, double_opt_in=self.settings.double_opt_in)
        )
        if any(result.action in ("pending", "subscribed", "confirm_again") for result in results):
            self.mailer.wake()
        return results

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Send queued mail and expire old signups in the background meanwhile."""
        tasks = [asyncio.create_task(self.mailer.run()), asyncio.create_task(self._expire())]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.to_thread(self.writer.close)

    async def _expire(self) -> None:
        while True:
            before = dt.datetime.now(dt.UTC) - dt.timedelta(days=CONFIRM_DAYS)
            try:
                await self.writer.call(functools.partial(_expire_signups, before=before))
            except StoreError as exc:
                log.warning("expired signups not deleted yet: %s", exc.format_message())
            await asyncio.sleep(EXPIRY_SECONDS)

    def sent(self) -> HTMLResponse:
        """The answer to an accepted signup (or one a script made, honeypot filled)."""
        body, headers = self._sent
        return HTMLResponse(body, headers=headers)

    def form(
        self, email: str = "", name: str = "", note: str = "", status_code: int = 200
    ) -> HTMLResponse:
        """The subscribe form, with a fresh page token."""
        response = self.site.page(
            "subscribe.html",
            f"Subscribe to {self.site.config.newsletter.name}",
            status_code=status_code,
            public=True,
            token=self.tokens.make("page", time.time()),
            honeypot=HONEYPOT,
            email=email[:MAX_EMAIL_CHARS],
            reader_name=name[:MAX_NAME_CHARS],
            note=note,
        )
        response.headers.update(FORM_HEADERS)
        return response


def routes(site: Site, joining: Joining) -> list[Route]:
    """``/subscribe`` and ``/confirm`` of ``site``."""

    async def subscribe(request: Request) -> HTMLResponse:
        if request.method == "GET":
            return joining.form(email=request.query_params.get("email", "").strip())
        peer = request.client.host if request.client else None
        address = client_address(
            peer, request.headers.get("x-forwarded-for", ""), joining.settings.trusted_proxies
        )
        wait = joining.limit.take(address, time.monotonic())
        if wait:
            response = site.page("subscribe-limited.html", "Too many signups", status_code=429)
            response.headers["Retry-After"] = retry_after(wait)
            return response
        form = await _form(request)
        email = form.get("email", "").strip()[:MAX_EMAIL_CHARS]
        name = " ".join(form.get("name", "").split())[:MAX_NAME_CHARS]
        if form.get(HONEYPOT):
            log.info("signup with the honeypot filled, from %s: ignored", address)
            return joining.sent()
        try:
            kind = joining.tokens.check(form.get("token", ""), time.time())
        except FormTooFast:
            note = "Please check your address and press Subscribe again."
            return joining.form(email, name, note)
        except FormExpired:
            note = "This form was open a long time: please press Subscribe again."
            return joining.form(email, name, note)
        except InvalidToken:
            note = "This form could not be read: please press Subscribe again."
            return joining.form(email, name, note, status_code=400)
        if kind == "embed":
            note = "One more step: check your address and press Subscribe."
            return joining.form(email, name, note)
        if not _same_origin(request, site.base):
            return site.page("refused.html", "Not accepted", status_code=403)
        try:
            key = joining.checker.key(email)
        except AddressRejected as exc:
            note = f"That is not an email address we can send to: {exc.reason}"
            return joining.form(email, name, note, status_code=400)
        try:
            await joining.signups.submit(Signup(email=email, key=key, name=name))
        except StoreError as exc:
            log.error("a signup was not recorded: %s", exc.format_message())
            return site.page("unavailable.html", "Not done", status_code=503)
        return joining.sent()

    async def confirm(request: Request) -> HTMLResponse:
        try:
            token = joining.confirm_links.verify(request.query_params.get("token", ""))
        except InvalidToken:
            return site.page("confirm-invalid.html", "Link not valid", status_code=400)
        if token.expired(dt.datetime.now(dt.UTC)):
            again = f"{site.base}/subscribe?email={quote(token.email)}"
            return site.page(
                "confirm-expired.html", "Link expired", status_code=400, subscribe_url=again
            )
        if request.method == "GET":
            response = site.page("confirm.html", "Confirm your subscription", email=token.email)
            response.headers.update(FORM_HEADERS)
            return response
        if not _same_origin(request, site.base):
            return site.page("refused.html", "Not accepted", status_code=403)
        await request.body()
        confirmation = Confirmation(key=token.key, email=token.email)
        try:
            subscriber, changed = await joining.writer.call(
                lambda store: store.confirm(confirmation)
            )
        except StoreError as exc:
            log.error("a confirmation was not recorded: %s", exc.format_message())
            return site.page("unavailable.html", "Not done", status_code=503)
        if changed:
            joining.mailer.wake()
        return site.page("confirm-done.html", "You are subscribed", email=subscriber.email)

    return [
        Route("/subscribe", subscribe, methods=["GET", "POST"]),
        Route("/confirm", confirm, methods=["GET", "POST"]),
    ]


def _expire_signups(store: SubscriberStore, *, before: dt.datetime) -> int:
    return store.expire_signups(before)


async def _form(request: Request) -> dict[str, str]:
    """The fields of a urlencoded form body (the body is capped upstream), first value
    of each."""
    body = (await request.body()).decode("utf-8", "replace")
    return {name: values[0] for name, values in parse_qs(body, keep_blank_values=True).items()}


def _same_origin(request: Request, base_url: str) -> bool:
    """Whether the request's Origin (else its Referer) is base_url's, or absent."""
    claimed = request.headers.get("origin") or request.headers.get("referer")
    if claimed is None:
        return True
    return _origin(claimed) == _origin(base_url)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    try:
        port = parts.port
    except ValueError:
        return "invalid"
    host = (parts.hostname or "").lower()
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def embed_form(config: Config) -> str:
    """The HTML form another site can paste: it posts to base_url/subscribe with a token
    that never expires, which opens this service's own form, prefilled."""
    site = Site(config, config.path.resolve().parent / "issues")
    return site.pages.get_template("embed.html").render(
        action=f"{site.base}/subscribe",
        token=FormTokens.from_config(config).make("embed", time.time()),
        newsletter=config.newsletter.name,
    )
