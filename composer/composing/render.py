"""Render an issue to MJML with the newsletter's Jinja2 templates (its own folder first,
then the defaults: see :mod:`composer.composing.templates`).

Autoescaping is on: every string from the issue file is escaped, and the Markdown
fragments arrive as HTML rendered by :mod:`composer.composing.markdown`, which shows
any raw HTML as text. So nothing an editor writes can break the layout.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import jinja2
from markupsafe import Markup

from composer.composing.markdown import inline_to_html, split_first_paragraph, to_html
from composer.composing.templates import DEFAULT_TEMPLATES, LayeredLoader, search_path
from composer.config import Config
from composer.errors import TemplateError, location
from composer.model import Block, Issue, Tier

EMAIL_TEMPLATE = "email.mjml.j2"

# Stand for each recipient's own links in the composed email: their unsubscribe link,
# their "Manage your subscription" link and their own web version (which opens the
# edition their tier reads). The sender swaps them per recipient in the serialised
# message; `build`, the preview and the web version fill in the generic pages
# (:func:`composer.composing.pipeline.generic_urls`).
UNSUBSCRIBE_URL = "%%unsubscribe_url%%"
MANAGE_URL = "%%manage_url%%"
READER_WEB_URL = "%%web_url%%"
PLACEHOLDERS = (UNSUBSCRIBE_URL, MANAGE_URL, READER_WEB_URL)

# What a template calls the values it is given, for errors about them: jinja2 names
# the Python class ("'composer.composing.render.BlockView object' has no attribute …").
_TEMPLATE_NAMES = {
    "BlockView": "block",
    "ItemView": "item",
    "Issue": "issue",
    "NewsletterSettings": "newsletter",
    "WebView": "web",
    "ShareLink": "link",
}
_NO_ATTRIBUTE = re.compile(r"^'(?:[\w.]+\.)?(\w+) object' has no attribute ('[^']*')$")


@dataclass(frozen=True)
class ItemView:
    lead: str
    body_first_html: Markup
    body_rest_html: Markup


@dataclass(frozen=True)
class BlockView:
    kind: str
    heading_html: Markup
    body_html: Markup
    items: tuple[ItemView, ...]


@dataclass(frozen=True)
class ShareLink:
    """Where a reader can share the issue: a plain link, no script."""

    name: str
    url: str


@dataclass(frozen=True)
class WebView:
    """How the web version differs from the email: a link to the archive above it, and
    in place of the "Keep reading" button a subscribe form (``subscribe_url``; none for
    a known ``reader``) and an Upgrade button to ``upgrade_url`` (none when it is empty)."""

    archive_url: str
    subscribe_url: str
    upgrade_url: str
    reader: bool


@functools.lru_cache(maxsize=8)
def template_environment(templates: Path) -> jinja2.Environment:
    """One Jinja2 environment per newsletter templates folder, falling back on the defaults
    file by file; it reloads templates edited, added or removed on disk."""
    return jinja2.Environment(
        loader=LayeredLoader(search_path(templates)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=False,
        keep_trailing_newline=True,
    )


def web_url(issue: Issue, config: Config) -> str:
    """The issue's web version: the "view in browser" and "Keep reading" target."""
    return f"{config.newsletter.base_url}/issues/{issue.slug}"


def share_links(issue: Issue, config: Config) -> tuple[ShareLink, ...]:
    """The issue's public web version shared by email, on X, LinkedIn and Facebook; none
    when ``[newsletter] share`` is false. The same for every reader: no token in them."""
    if not config.newsletter.share:
        return ()
    url = quote(web_url(issue, config), safe="")
    title = quote(issue.title, safe="")
    return (
        ShareLink("Email", f"mailto:?subject={title}&body={url}"),
        ShareLink("X", f"https://x.com/intent/tweet?url={url}&text={title}"),
        ShareLink("LinkedIn", f"https://www.linkedin.com/sharing/share-offsite/?url={url}"),
        ShareLink("Facebook", f"https://www.facebook.com/sharer/sharer.php?u={url}"),
    )


def render_mjml(
    issue: Issue,
    config: Config,
    tier: Tier,
    web: WebView | None = None,
    *,
    web_version: bool = True,
) -> str:
    """The MJML source of ``issue``, already typeset
    (:func:`~composer.composing.typography.typeset`), as readers of ``tier`` get it by
    email, or on the web version when ``web`` says what its panel holds. Without
    ``web_version``, ``web_url`` is empty and there are no share links: the email
    points to no page of its own."""
    environment = template_environment(config.newsletter.templates)
    lang = issue.lang
    context = {
        "issue": issue,
        "lang": lang,
        "newsletter": config.newsletter,
        "preheader": issue.preheader,
        "date_text": f"{issue.date:%A}, {issue.date.day} {issue.date:%B %Y}",
        "year": issue.date.year,
        "lede_html": Markup(to_html(issue.lede.text, lang)) if issue.lede.text else "",
        "blocks": [_block_view(block, lang) for block in issue.blocks_for(tier)],
        "tier": tier,
        "cut": issue.is_cut_for(tier),
        "web_url": READER_WEB_URL if web_version else "",
        "public_url": web_url(issue, config),
        "manage_url": MANAGE_URL,
        "unsubscribe_url": UNSUBSCRIBE_URL,
        "share_links": share_links(issue, config) if web_version else (),
        "web": web,
    }
    try:
        return environment.get_template(EMAIL_TEMPLATE).render(context)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{exc.filename or exc.name}:{exc.lineno}: {exc.message}") from exc
    except jinja2.TemplateNotFound as exc:
        raise TemplateError(
            f"template {exc.name} not found in {config.newsletter.templates}"
            f" nor among the defaults in {DEFAULT_TEMPLATES}"
        ) from exc
    except jinja2.UndefinedError as exc:
        raise TemplateError(_unknown_value(exc)) from exc


def _unknown_value(exc: jinja2.UndefinedError) -> str:
    """``file:line: the template uses an unknown value: …`` for ``exc``, naming the
    template the value was used in, and the value as the template calls it."""
    what = exc.message or str(exc)
    found = _NO_ATTRIBUTE.match(what)
    if found and found[1] in _TEMPLATE_NAMES:
        what = f"{_TEMPLATE_NAMES[found[1]]} has no {found[2]}"
    # jinja2 rewrites the traceback so that each template frame carries the template's
    # file and line; the innermost is where the value was used (an included block).
    where = None
    tb = exc.__traceback__
    while tb is not None:
        if "__jinja_exception__" in tb.tb_frame.f_globals:
            where = location(Path(tb.tb_frame.f_code.co_filename), tb.tb_lineno)
        tb = tb.tb_next
    if where is None:
        return f"a template uses an unknown value: {what}"
    return f"{where}: the template uses an unknown value: {what}"


def _block_view(block: Block, lang: str) -> BlockView:
    items = []
    for item in block.items:
        first, rest = split_first_paragraph(item.body.text, lang)
        items.append(ItemView(item.lead, Markup(first), Markup(rest)))
    return BlockView(
        kind=block.kind,
        heading_html=Markup(inline_to_html(block.heading, lang)),
        body_html=Markup(to_html(block.body.text, lang)) if block.body.text else Markup(""),
        items=tuple(items),
    )
