"""What every route of ``newsletter serve`` shares: the settings, the issues folder,
and the service's own pages (templates in ``pages/``) with their headers.

Each group of routes is a module that takes a :class:`Site` and returns its routes
(:mod:`composer.web.reading`, :mod:`composer.web.leaving`);
:func:`composer.web.serve.create_app` puts them together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.responses import HTMLResponse

from composer.config import Config

# The service's own pages: their stylesheet, and forms posting to the service itself.
PAGE_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'self';"
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

    def page(self, name: str, title: str, status_code: int = 200, **values: object) -> HTMLResponse:
        """Page ``name`` of ``pages/`` titled ``title``. Unless ``public`` is given true,
        it is kept out of caches and search engines: it may carry a reader's token."""
        newsletter = self.config.newsletter
        html = self.pages.get_template(name).render(
            title=title,
            newsletter=newsletter.name,
            address=newsletter.address,
            lang=newsletter.lang,
            **values,
        )
        headers = {"Content-Security-Policy": PAGE_POLICY}
        if not values.get("public"):
            headers.update(PRIVATE)
        return HTMLResponse(html, status_code=status_code, headers=headers)
