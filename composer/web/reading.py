"""The public side of ``newsletter serve``: ``GET /`` is the archive of published
issues (those sent, or marked published: :mod:`composer.web.archive`), newest first;
``GET /feed.xml`` its Atom feed; ``GET /issues/<slug>`` a published issue's web version,
the target of "View in browser" and of the free edition's "Keep reading".

The web version is public, so it is the free edition: everything before the paywall,
then in place of the rest a panel with a subscribe form (a plain GET to
``/subscribe``) and, when ``[newsletter] upgrade_url`` is set, an Upgrade button; an
issue without a paywall is shown whole. A reader's own link (``?token=…``, a read
token of :mod:`composer.reader_links`) shows the edition of their tier as the store
says it is now: an active paid reader gets the whole issue, a free reader the panel
without the form. A page opened with a token is private (never cached, never
indexed); a token that does not verify, or finds no one, shows the public edition,
never an error.
"""

from __future__ import annotations

import datetime as dt
import logging
from functools import lru_cache

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from composer.composing.pipeline import compose, generic_urls
from composer.composing.render import WebView
from composer.composing.typography import typeset
from composer.config import SubscriberSettings
from composer.errors import InvalidToken, NewsletterError
from composer.model import Issue, Tier
from composer.reader_links import ReaderLinks
from composer.store import address_key, open_store
from composer.web.archive import DispatchedIssues, atom_feed, find_published, published_issues
from composer.web.site import PRIVATE, Site

log = logging.getLogger(__name__)

# An issue's web version is the email's HTML: inline styles and the images it links to,
# and its subscribe form, which goes to the service at base_url.
ISSUE_POLICY = (
    "default-src 'none'; img-src * data:; style-src 'unsafe-inline'; base-uri 'none';"
    " form-action 'self' {origin}; frame-ancestors 'none'"
)


def routes(site: Site) -> list[Route]:
    """The archive, the feed and the issue pages of ``site``."""
    config, base = site.config, site.base
    links = ReaderLinks.from_config(config)
    dispatched = DispatchedIssues(config.subscribers)
    policy = ISSUE_POLICY.format(origin=site.origin)

    @lru_cache(maxsize=64)
    def web_version(issue: Issue, tier: Tier, reader: bool) -> str:
        # Issue values compare by content, so an edited file gets a fresh composition.
        view = WebView(
            archive_url=f"{base}/",
            subscribe_url=f"{base}/subscribe",
            upgrade_url=config.newsletter.upgrade_url,
            reader=reader,
        )
        composed = compose(issue, config, tier, view)
        return composed.with_urls(generic_urls(issue, config)).html

    def missing() -> HTMLResponse:
        return site.page("missing.html", "No such issue", status_code=404, archive_url=f"{base}/")

    async def archive(request: Request) -> HTMLResponse:
        issues = await run_in_threadpool(published_issues, site.issues_dir, today(), dispatched)
        return site.page(
            "archive.html",
            "Archive",
            public=True,
            issues=[typeset(issue, config) for issue in issues],
            issue_url=lambda issue: f"{base}/issues/{issue.slug}",
            feed_url=f"{base}/feed.xml",
        )

    async def feed(request: Request) -> Response:
        issues = await run_in_threadpool(published_issues, site.issues_dir, today(), dispatched)
        return Response(atom_feed(issues, config), media_type="application/atom+xml")

    async def issue_page(request: Request) -> HTMLResponse:
        slug = request.path_params["slug"]
        issue = await run_in_threadpool(find_published, site.issues_dir, slug, today(), dispatched)
        if issue is None:
            return missing()
        headers = {"Content-Security-Policy": policy}
        token = request.query_params.get("token")
        tier: Tier | None = None
        if token is not None:
            headers.update(PRIVATE)
            tier = await run_in_threadpool(_reader_tier, links, config.subscribers, token)
        try:
            html = await run_in_threadpool(web_version, issue, tier or "free", tier is not None)
        except NewsletterError as exc:
            # A file that loads but does not compose (a block kind with no template, a
            # broken template) is left out like one that does not load, never a 500.
            log.warning("left out of the web: %s", exc.format_message())
            return missing()
        return HTMLResponse(html, headers=headers)

    return [
        Route("/", archive),
        Route("/feed.xml", feed),
        Route("/issues/{slug}", issue_page),
    ]


def _reader_tier(links: ReaderLinks, settings: SubscriberSettings, token: str) -> Tier | None:
    """The tier of the active reader whose read token ``token`` is; None for a token that
    does not verify, a reader not on the list or not active, or a store that cannot
    answer now (the page is then the public one)."""
    try:
        key = address_key(links.reader_key(token))
        with open_store(settings, apply_queued=False) as store:
            subscriber = store.get(key)
    except InvalidToken:
        return None
    except NewsletterError as exc:
        log.warning("a reader's web version fell back to the free edition: %s", exc)
        return None
    if subscriber is None or subscriber.status != "active":
        return None
    return subscriber.tier


def today() -> dt.date:
    """The date that decides which issues are due: today in UTC."""
    return dt.datetime.now(dt.UTC).date()
