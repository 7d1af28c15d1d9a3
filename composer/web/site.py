"""What every route of ``newsletter serve`` shares: the settings, the issues folder,
and the service's own pages (templates in ``pages/``, each extending ``page.html``,
which looks like the newsletter) with their headers.

Each group of routes is a module that takes a :class:`Site` and returns its routes
(:mod:`composer.web.reading`, :mod:`composer.web.leaving`, :mod:`composer.web.manage`);
:func:`composer.web.serve.create_app` puts them together.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.responses import HTMLResponse

from composer.config import Config

# The service's own pages: their stylesheet, and forms posting to the service itself
# (at base_url, which is 'self' behind the proxy).
PAGE_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'self' {origin};"
    " frame-ancestors 'none'"
)
# A page carrying a token must not be cached by proxies nor indexed.
PRIVATE = {"Cache-Control": "no-store", "X-Robots-Tag": "noindex"}


@dataclass(frozen=True)
class Site:
    """``config``'s newsletter as served: its issues in ``issues_dir`` and its pages."""

    config: Config
    issues_dir: Path
    pages: Environment = field(
        default_factory=lambda: Environment(
            loader=PackageLoader("composer.web", "pages"),
            autoescape=select_autoescape(default=True),
        )
    )

    @property
    def base(self) -> str:
        """The public address the service answers at, without a trailing slash."""
        return self.config.newsletter.base_url

    @property
    def origin(self) -> str:
        """The origin (scheme, host and port) of :attr:`base`, as browsers send it."""
        return origin_of(self.base)

    def page(
        self,
        name: str,
        title: str,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        **values: object,
    ) -> HTMLResponse:
        """Page ``name`` of ``pages/`` titled ``title``, with ``headers`` besides its own.
        Unless ``public`` is given true, it is kept out of caches and search engines: it
        may carry a reader's token."""
        newsletter = self.config.newsletter
        html = self.pages.get_template(name).render(
            title=title,
            newsletter=newsletter.name,
            address=newsletter.address,
            lang=newsletter.lang,
            base=self.base,
            privacy_url=newsletter.privacy_url,
            terms_url=newsletter.terms_url,
            **values,
        )
        all_headers = {"Content-Security-Policy": PAGE_POLICY.format(origin=self.origin)}
        if not values.get("public"):
            all_headers.update(PRIVATE)
        all_headers.update(headers or {})
        return HTMLResponse(html, status_code=status_code, headers=all_headers)


def origin_of(url: str) -> str:
    """The origin of ``url`` as a browser's ``Origin`` header spells it: scheme and host,
    and the port unless it is the scheme's default."""
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    port = f":{parts.port}" if parts.port and parts.port != default else ""
    host = (parts.hostname or "").lower()
    return f"{parts.scheme}://{f'[{host}]' if ':' in host else host}{port}"
