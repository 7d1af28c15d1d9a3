"""A reader managing their own subscription on ``newsletter serve``.

``GET /manage?token=…`` (the "Manage your subscription" link in every email, a manage
token of :mod:`composer.reader_links`) shows the reader's address, name, edition and
status, with a form for each thing they can do; a GET changes nothing. Each form posts
to its own route, with the page's CSRF token (:mod:`composer.web.csrf`):

- ``POST /manage/name``: change the name their emails are addressed to;
- ``POST /manage/unsubscribe``: stop the emails (as the unsubscribe link does, queued
  while the database is busy);
- ``POST /manage/export``: download everything held about them as JSON;
- ``POST /manage/delete``: erase it all, leaving only a suppression
  (:mod:`composer.store.personal`); the form asks them to tick a confirmation first.

A POST from another site, or without a fresh CSRF token for this reader, is refused
with 403 and changes nothing. A manage token that does not verify gets a 400 page; one
whose reader is gone (erased, or never on this list) says so.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from composer.config import SubscriberSettings
from composer.errors import InvalidToken, StoreError
from composer.reader_links import ReaderLinks
from composer.signing import load_secret
from composer.store import Subscriber, address_key, open_store
from composer.store.pending import QueuedUnsubscribe
from composer.web.csrf import FormTokens, same_site
from composer.web.leaving import LaterUnsubscribes
from composer.web.site import PRIVATE, Site

log = logging.getLogger(__name__)

# A name is one line of at most this many characters (what the To header carries).
MAX_NAME_CHARS = 100
# The manage pages post to the service itself: a browser sends their Origin (not "null",
# as it would under no-referrer) to the same site, and no Referer anywhere else.
SAME_ORIGIN_REFERRER = {"Referrer-Policy": "same-origin"}

Action = Callable[[Request, Subscriber, dict[str, str]], Awaitable[Response]]


def routes(site: Site, later: LaterUnsubscribes) -> list[Route]:
    """``/manage`` and its forms, unsubscribing through ``later``."""
    links = ReaderLinks.from_config(site.config)
    forms = FormTokens(load_secret(site.config.path))
    settings = site.config.subscribers
    upgrade_url = site.config.newsletter.upgrade_url

    def page(name: str, title: str, status_code: int = 200, **values: object) -> HTMLResponse:
        return site.page(name, title, status_code, SAME_ORIGIN_REFERRER, **values)

    def manage_page(subscriber: Subscriber, token: str, notice: str = "") -> HTMLResponse:
        return page(
            "manage.html",
            "Your subscription",
            subscriber=subscriber,
            token=token,
            csrf=forms.token(subscriber.key),
            upgrade_url=upgrade_url if subscriber.tier == "free" else "",
            notice=notice,
        )

    async def reader_of(request: Request) -> tuple[str, Subscriber | None] | HTMLResponse:
        """The reader the request's manage token names (None: no longer on the list),
        or the page to answer instead."""
        token = request.query_params.get("token")
        if token is None:
            return page("manage-how.html", "Manage your subscription")
        try:
            key = address_key(links.manage_key(token))
        except InvalidToken:
            return page("manage-invalid.html", "Link not valid", status_code=400)
        try:
            return key, await run_in_threadpool(_get, settings, key)
        except StoreError as exc:
            log.error("a manage page could not read the list: %s", exc.format_message())
            return page("unavailable.html", "Not available", status_code=503)

    async def show(request: Request) -> HTMLResponse:
        found = await reader_of(request)
        if isinstance(found, HTMLResponse):
            return found
        _, subscriber = found
        if subscriber is None:
            return page("manage-gone.html", "Not on the list", status_code=404)
        return manage_page(subscriber, request.query_params["token"])

    def posted(action: Action) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            body = (await request.body()).decode("utf-8", "replace")
            fields = {name: values[0] for name, values in parse_qs(body).items()}
            found = await reader_of(request)
            if isinstance(found, HTMLResponse):
                return found
            key, subscriber = found
            fresh = forms.valid(fields.get("csrf", ""), key)
            if not same_site(request.headers, site.origin) or not fresh:
                return page("manage-refused.html", "Not done", status_code=403)
            if subscriber is None:
                return page("manage-gone.html", "Not on the list", status_code=404)
            try:
                return await action(request, subscriber, fields)
            except StoreError as exc:
                log.error("a manage request was not recorded: %s", exc.format_message())
                return page("unavailable.html", "Not done", status_code=503)

        return endpoint

    async def rename(request: Request, subscriber: Subscriber, fields: dict[str, str]) -> Response:
        name = " ".join(fields.get("name", "").split())[:MAX_NAME_CHARS]
        renamed = await run_in_threadpool(_rename, settings, subscriber.key, name)
        token = request.query_params["token"]
        if renamed is None:
            return page("manage-gone.html", "Not on the list", status_code=404)
        return manage_page(renamed, token, "Your name is saved.")

    async def unsubscribe(
        request: Request, subscriber: Subscriber, fields: dict[str, str]
    ) -> Response:
        wish = QueuedUnsubscribe(key=subscriber.key, email=subscriber.email, reason="manage page")
        await later.unsubscribe(wish)
        found = await run_in_threadpool(_get, settings, subscriber.key)
        return manage_page(
            found or subscriber,
            request.query_params["token"],
            f"{subscriber.email} will get no more issues of {site.config.newsletter.name}.",
        )

    async def export(request: Request, subscriber: Subscriber, fields: dict[str, str]) -> Response:
        data = await run_in_threadpool(_export, settings, subscriber.key)
        if data is None:
            return page("manage-gone.html", "Not on the list", status_code=404)
        headers = {
            **PRIVATE,
            "Content-Disposition": 'attachment; filename="newsletter-data.json"',
        }
        return Response(data, media_type="application/json", headers=headers)

    async def delete(request: Request, subscriber: Subscriber, fields: dict[str, str]) -> Response:
        if fields.get("confirm") != "yes":
            notice = "Nothing was deleted: tick the box to confirm, then press Delete my data."
            response = manage_page(subscriber, request.query_params["token"], notice)
            response.status_code = 400
            return response
        await run_in_threadpool(_erase, settings, subscriber.key)
        return page("manage-deleted.html", "Your data is deleted", email=subscriber.email)

    return [
        Route("/manage", show),
        Route("/manage/name", posted(rename), methods=["POST"]),
        Route("/manage/unsubscribe", posted(unsubscribe), methods=["POST"]),
        Route("/manage/export", posted(export), methods=["POST"]),
        Route("/manage/delete", posted(delete), methods=["POST"]),
    ]


def _get(settings: SubscriberSettings, key: str) -> Subscriber | None:
    with open_store(settings, apply_queued=False) as store:
        return store.get(key)


def _rename(settings: SubscriberSettings, key: str, name: str) -> Subscriber | None:
    with open_store(settings, apply_queued=False) as store:
        return store.rename(key, name)


def _export(settings: SubscriberSettings, key: str) -> bytes | None:
    with open_store(settings, apply_queued=False) as store:
        data = store.personal_data(key)
    return data.to_json() if data else None


def _erase(settings: SubscriberSettings, key: str) -> None:
    with open_store(settings, apply_queued=False) as store:
        store.erase(key)
