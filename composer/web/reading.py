"""The public side of ``newsletter serve``: ``GET /`` is the archive of published
issues, newest first; ``GET /feed.xml`` its Atom feed; ``GET /issues/<slug>`` an
issue's web version, the target of "View in browser" and of the free edition's "Keep
reading". The web version is public, so it is the free edition: everything before the
paywall and the note that the rest is for paid subscribers; an issue without a paywall
is shown whole.
"""

from __future__ import annotations

import datetime as dt
import logging
from functools import lru_cache

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from composer.composing.pipeline import compose, generic_unsubscribe_url
from composer.composing.typography import typeset
from composer.errors import NewsletterError
from composer.model import Issue
from composer.web.archive import atom_feed, find_published, published_issues
from composer.web.site import Site

log = logging.getLogger(__name__)

# An issue's web version is the email's HTML: inline styles and the images it links to.
ISSUE_POLICY = (
    "default-src 'none'; img-src * data:; style-src 'unsafe-inline'; base-uri 'none';"
    " form-action 'none'; frame-ancestors 'none'"
)


def routes(site: Site) -> list[Route]:
    """The archive, the feed and the issue pages of ``site``."""
    config, base = site.config, site.base

    @lru_cache(maxsize=64)
    def web_version(issue: Issue) -> str:
        # Issue values compare by content, so an edited file gets a fresh composition.
        composed = compose(issue, config, "free")
        return composed.with_unsubscribe_url(generic_unsubscribe_url(config)).html

    def missing() -> HTMLResponse:
        return site.page("missing.html", "No such issue", status_code=404, archive_url=f"{base}/")

    async def archive(request: Request) -> HTMLResponse:
        issues = await run_in_threadpool(published_issues, site.issues_dir, today())
        return site.page(
            "archive.html",
            "Archive",
            public=True,
            issues=[typeset(issue, config) for issue in issues],
            issue_url=lambda issue: f"{base}/issues/{issue.slug}",
            feed_url=f"{base}/feed.xml",
        )

    async def feed(request: Request) -> Response:
        issues = await run_in_threadpool(published_issues, site.issues_dir, today())
        return Response(atom_feed(issues, config), media_type="application/atom+xml")

    async def issue_page(request: Request) -> HTMLResponse:
        slug = request.path_params["slug"]
        issue = await run_in_threadpool(find_published, site.issues_dir, slug, today())
        if issue is None:
            return missing()
        try:
            html = await run_in_threadpool(web_version, issue)
        except NewsletterError as exc:
            # A file that loads but does not compose (a block kind with no template, a
            # broken template) is left out like one that does not load, never a 500.
            log.warning("left out of the web: %s", exc.format_message())
            return missing()
        return HTMLResponse(html, headers={"Content-Security-Policy": ISSUE_POLICY})

    return [
        Route("/", archive),
        Route("/feed.xml", feed),
        Route("/issues/{slug}", issue_page),
    ]


def today() -> dt.date:
    """The date that decides which issues are published: today in UTC."""
    return dt.datetime.now(dt.UTC).date()
