"""``newsletter serve``: the small web service at base_url.

``GET /`` is the archive of published issues, newest first; ``GET /feed.xml`` its
Atom feed; ``GET /issues/<slug>`` an issue's web version, the target of "View in
browser" and of the free edition's "Keep reading". The web version is public, so
it is the free edition: everything before the paywall and the note that the rest
is for paid subscribers; an issue without a paywall is shown whole.

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

Around every route (:mod:`composer.web.guards`): a body over :data:`MAX_BODY_BYTES`
gets 413 unread, and every response, errors included, carries
:data:`SECURITY_HEADERS`, with a Content-Security-Policy loosened per page only as far
as that page needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import lru_cache
from pathlib import Path

import uvicorn
from jinja2 import DictLoader, Environment, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from composer.composing.pipeline import compose, generic_unsubscribe_url
from composer.composing.typography import typeset
from composer.config import Config, SubscriberSettings
from composer.errors import InvalidToken, NewsletterError, StoreBusy, StoreError
from composer.model import Issue
from composer.store import Subscriber, address_key, open_store
from composer.store.membership import record_unsubscribe
from composer.store.pending import PendingUnsubscribes, QueuedUnsubscribe
from composer.unsubscribe import UnsubscribeLinks
from composer.web.archive import atom_feed, find_published, published_issues
from composer.web.guards import BodyLimit, SecurityHeaders
from composer.web.listen import listen

log = logging.getLogger(__name__)

_PAGE = """<!doctype html>
<html lang="{{ lang }}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{% if not public %}<meta name="robots" content="noindex">{% endif %}
<title>{{ title }} · {{ newsletter }}</title>
<style>
  body { font: 17px/1.5 system-ui, sans-serif; color: #222; background: #f6f6f4; margin: 0; }
  main { max-width: 32rem; margin: 12vh auto; padding: 2rem; background: #fff;
         border-radius: 8px; box-shadow: 0 1px 3px rgba(0,0,0,.12); }
  h1 { font-size: 1.4rem; margin-top: 0; }
  button { font: inherit; padding: .6rem 1.2rem; border: 0; border-radius: 6px;
           background: #222; color: #fff; cursor: pointer; }
  .small { color: #666; font-size: .9rem; }
</style>
</head>
<body>
<main>
<h1>{{ title }}</h1>
{% block body %}{% endblock %}
<p class="small">{{ newsletter }}{% if address %} · {{ address }}{% endif %}</p>
</main>
</body>
</html>
"""

_TEMPLATES = {
    "page.html": _PAGE,
    "confirm.html": """{% extends "page.html" %}{% block body %}
<p>Stop sending {{ newsletter }} to <strong>{{ email }}</strong>?</p>
<form method="post" action="">
<input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit">Unsubscribe</button>
</form>
{% endblock %}""",
    "already.html": """{% extends "page.html" %}{% block body %}
<p><strong>{{ email }}</strong> is already unsubscribed from {{ newsletter }}.
No more issues will be sent to it.</p>
{% endblock %}""",
    "unavailable.html": """{% extends "page.html" %}{% block body %}
<p>Your request could not be recorded just now, so nothing was done.</p>
<p>Please open the link from the email again in a few minutes.</p>
{% endblock %}""",
    "done.html": """{% extends "page.html" %}{% block body %}
<p><strong>{{ email }}</strong> will get no more issues of {{ newsletter }}.</p>
<p class="small">Unsubscribed by mistake? Reply to any issue and we will add you back.</p>
{% endblock %}""",
    "how.html": """{% extends "page.html" %}{% block body %}
<p>Each email from {{ newsletter }} ends with an unsubscribe link made for its reader.
Use that link in any issue you received, or reply to the email and ask to be removed.</p>
{% endblock %}""",
    "archive.html": """{% extends "page.html" %}{% block body %}
{% for issue in issues %}
<p lang="{{ issue.lang }}"><a href="{{ issue_url(issue) }}">{{ issue.title }}</a><br>
<span class="small">{{ issue.date.isoformat() }}{% if issue.subtitle %}
 · {{ issue.subtitle }}{% endif %}</span></p>
{% else %}
<p>No issues yet.</p>
{% endfor %}
<p class="small"><a href="{{ feed_url }}">Atom feed</a></p>
{% endblock %}""",
    "missing.html": """{% extends "page.html" %}{% block body %}
<p>There is no published issue at this address. <a href="{{ archive_url }}">See every issue</a>.</p>
{% endblock %}""",
    "invalid.html": """{% extends "page.html" %}{% block body %}
<p>This unsubscribe link is incomplete or was changed, so nothing was done.</p>
<p>Open the link from the email again, or reply to the email and ask to be removed.</p>
{% endblock %}""",
}

# Every response: nothing it names may run, load or frame it unless its route says so.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    # Unsubscribe links carry a token in the URL, and readers' clicks are their own.
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}
# The service's own pages: their stylesheet, and the unsubscribe form posting to itself.
_PAGE_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'self';"
    " frame-ancestors 'none'"
)
# An issue's web version is the email's HTML: inline styles and the images it links to.
_ISSUE_POLICY = (
    "default-src 'none'; img-src * data:; style-src 'unsafe-inline'; base-uri 'none';"
    " form-action 'none'; frame-ancestors 'none'"
)
# A page carrying a token must not be cached by proxies nor indexed.
_PRIVATE = {"Cache-Control": "no-store", "X-Robots-Tag": "noindex"}
# The largest body accepted: one-click unsubscribes send 26 bytes, a browser's form a few
# more; the other routes take none.
MAX_BODY_BYTES = 4096
# How long the queue of unsubscribes waits between tries at a busy database (each try
# itself waits for the lock as long as any write does).
RETRY_SECONDS = 1.0


def run_service(
    config: Config,
    issues_dir: Path | None,
    *,
    host: str,
    port: int,
    echo: Callable[[str], None],
) -> None:
    """Run ``newsletter serve`` on ``host:port`` until Ctrl+C. The port is bound first, so
    one in use is a :class:`NewsletterError` before anything is announced."""
    app = create_app(config, issues_dir)
    sock = listen(port, host)
    echo(
        f"Serving {config.newsletter.base_url} on http://{host}:{sock.getsockname()[1]}"
        " (put it behind your HTTPS proxy; Ctrl+C to stop)"
    )
    logging.getLogger("uvicorn.access").addFilter(RedactQueryStrings())
    # uvicorn re-raises the Ctrl+C it caught once it has shut down cleanly.
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(uvicorn.Config(app)).run(sockets=[sock])


def create_app(config: Config, issues_dir: Path | None = None) -> ASGIApp:
    """The ASGI app ``newsletter serve`` runs: ``config``'s store, and the issues in
    ``issues_dir`` (default: ``issues/`` next to config.toml)."""
    issues_dir = issues_dir or config.path.resolve().parent / "issues"
    links = UnsubscribeLinks.from_config(config)
    later = LaterUnsubscribes(config.subscribers)
    base = config.newsletter.base_url
    templates = Environment(
        loader=DictLoader(_TEMPLATES), autoescape=select_autoescape(default=True)
    )
    site = {
        "newsletter": config.newsletter.name,
        "address": config.newsletter.address,
        "lang": config.newsletter.lang,
    }

    def page(name: str, title: str, status_code: int = 200, **values: object) -> HTMLResponse:
        html = templates.get_template(name).render(title=title, **site, **values)
        headers = {"Content-Security-Policy": _PAGE_POLICY}
        if not values.get("public"):
            headers.update(_PRIVATE)
        return HTMLResponse(html, status_code=status_code, headers=headers)

    @lru_cache(maxsize=64)
    def web_version(issue: Issue) -> str:
        # Issue values compare by content, so an edited file gets a fresh composition.
        composed = compose(issue, config, "free")
        return composed.with_unsubscribe_url(generic_unsubscribe_url(config)).html

    async def archive(request: Request) -> HTMLResponse:
        issues = await run_in_threadpool(published_issues, issues_dir, _today())
        return page(
            "archive.html",
            "Archive",
            public=True,
            issues=[typeset(issue, config) for issue in issues],
            issue_url=lambda issue: f"{base}/issues/{issue.slug}",
            feed_url=f"{base}/feed.xml",
        )

    async def feed(request: Request) -> Response:
        issues = await run_in_threadpool(published_issues, issues_dir, _today())
        return Response(atom_feed(issues, config), media_type="application/atom+xml")

    async def issue_page(request: Request) -> HTMLResponse:
        slug = request.path_params["slug"]
        issue = await run_in_threadpool(find_published, issues_dir, slug, _today())
        if issue is None:
            return page("missing.html", "No such issue", status_code=404, archive_url=f"{base}/")
        try:
            html = await run_in_threadpool(web_version, issue)
        except NewsletterError as exc:
            # A file that loads but does not compose (a block kind with no template, a
            # broken template) is left out like one that does not load, never a 500.
            log.warning("left out of the web: %s", exc.format_message())
            return page("missing.html", "No such issue", status_code=404, archive_url=f"{base}/")
        return HTMLResponse(html, headers={"Content-Security-Policy": _ISSUE_POLICY})

    async def unsubscribe(request: Request) -> HTMLResponse:
        if request.method == "GET" and "token" not in request.query_params:
            return page("how.html", "How to unsubscribe")
        try:
            token = links.verify(request.query_params.get("token", ""))
        except InvalidToken:
            return page("invalid.html", "Link not valid", status_code=400)
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
                return page("unavailable.html", "Not done", status_code=503)
            return page("done.html", "You are unsubscribed", email=email)
        try:
            found = await run_in_threadpool(_lookup, config.subscribers, key)
        except StoreBusy:
            found = None
        email = found.email if found else token.key
        left = found is not None and found.status != "active"
        if left or await run_in_threadpool(later.queue.holds, key):
            return page("already.html", "Already unsubscribed", email=email)
        return page("confirm.html", "Unsubscribe", email=email)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        later.start()  # what a previous run queued and could not apply
        yield

    app = Starlette(
        routes=[
            Route("/", archive),
            Route("/feed.xml", feed),
            Route("/issues/{slug}", issue_page),
            Route("/unsubscribe", unsubscribe, methods=["GET", "POST"]),
        ],
        lifespan=lifespan,
    )
    # Outside starlette's own error handling, so that a 500 carries the headers too.
    return SecurityHeaders(BodyLimit(app, MAX_BODY_BYTES), SECURITY_HEADERS)


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
                return subscriber.email
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


class RedactQueryStrings(logging.Filter):
    """Drop query strings from uvicorn's access log: they carry unsubscribe tokens."""

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn.access records: (client, method, path with query, http version, status)
        if isinstance(record.args, tuple) and len(record.args) == 5:
            client, method, path, version, status = record.args
            if isinstance(path, str) and "?" in path:
                record.args = (client, method, path.split("?", 1)[0] + "?…", version, status)
        return True


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def _lookup(settings: SubscriberSettings, key: str) -> Subscriber | None:
    with open_store(settings, apply_queued=False) as store:
        return store.get(key)


def _unsubscribe(settings: SubscriberSettings, wish: QueuedUnsubscribe) -> Subscriber:
    with open_store(settings, apply_queued=False) as store:
        return record_unsubscribe(store, wish.key, wish.email, wish.reason)


def _apply_queue(settings: SubscriberSettings, queue: PendingUnsubscribes) -> None:
    with open_store(settings, apply_queued=False) as store:
        queue.apply(store)
