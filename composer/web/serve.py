"""``newsletter serve``: the small web service at base_url, put together from its groups
of routes (:mod:`composer.web.reading`: the archive, feed and issue pages;
:mod:`composer.web.joining`: signing up and confirming, with the mail they send in the
background; :mod:`composer.web.leaving`: unsubscribing; :mod:`composer.web.webhooks`: the bounces
and complaints email services report; :mod:`composer.web.manage`: a reader's own
subscription and data), which share a :class:`Site`.

Around every route (:mod:`composer.web.guards`): a body over :data:`MAX_BODY_BYTES`
(the webhooks: :data:`composer.web.webhooks.MAX_BODY_BYTES`) gets 413 unread, and
every response, errors included, carries
:data:`SECURITY_HEADERS`, with a Content-Security-Policy loosened per page only as far
as that page needs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp

from composer.config import Config
from composer.sending.notices import Notices
from composer.web import joining, leaving, manage, reading, webhooks
from composer.web.esp.sns import SnsFetcher
from composer.web.guards import BodyLimit, SecurityHeaders
from composer.web.listen import listen
from composer.web.site import Site

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
# The largest body accepted: one-click unsubscribes send 26 bytes, a browser's form a few
# more; the other routes take none.
MAX_BODY_BYTES = 4096


def run_service(
    config: Config,
    issues_dir: Path | None,
    *,
    host: str,
    port: int,
    echo: Callable[[str], None],
) -> None:
    """Run ``newsletter serve`` on ``host:port`` until Ctrl+C. The port is bound first, so
    one in use is a :class:`NewsletterError` before anything is announced, and so is a
    welcome message that does not compose."""
    Notices.from_config(config).check_welcome()
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


def create_app(
    config: Config, issues_dir: Path | None = None, *, sns_fetcher: SnsFetcher | None = None
) -> ASGIApp:
    """The ASGI app ``newsletter serve`` runs: ``config``'s store, and the issues in
    ``issues_dir`` (default: ``issues/`` next to config.toml); the SES webhook fetches
    through ``sns_fetcher`` (default: from ``sns.<region>.amazonaws.com`` only)."""
    site = Site(config, issues_dir or config.path.resolve().parent / "issues")
    later = leaving.LaterUnsubscribes(config.subscribers)
    signups = joining.Joining(site)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        later.start()  # what a previous run queued and could not apply
        async with signups.running():  # the mail queue, and expiring unconfirmed signups
            yield

    app = Starlette(
        routes=[
            *reading.routes(site),
            *joining.routes(site, signups),
            *leaving.routes(site, later),
            *webhooks.routes(config, sns_fetcher),
            *manage.routes(site, later),
        ],
        lifespan=lifespan,
    )
    # Outside starlette's own error handling, so that a 500 carries the headers too.
    limited = BodyLimit(app, MAX_BODY_BYTES, {webhooks.PREFIX: webhooks.MAX_BODY_BYTES})
    return SecurityHeaders(limited, SECURITY_HEADERS)


class RedactQueryStrings(logging.Filter):
    """Drop query strings from uvicorn's access log: they carry unsubscribe tokens."""

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn.access records: (client, method, path with query, http version, status)
        if isinstance(record.args, tuple) and len(record.args) == 5:
            client, method, path, version, status = record.args
            if isinstance(path, str) and "?" in path:
                record.args = (client, method, path.split("?", 1)[0] + "?…", version, status)
        return True
