"""Compose an issue: the whole pipeline, read top to bottom.

    load → validate → typography → render (Jinja2 → MJML) → mjml_html → inline → text

Composing is done once per issue and tier; each recipient's copy is the composed
bytes with their own values swapped in, never a fresh render.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path

from composer.composing.inline import inline_css
from composer.composing.load import load_issue
from composer.composing.mjml_html import mjml_to_html
from composer.composing.render import (
    MANAGE_URL,
    READER_WEB_URL,
    UNSUBSCRIBE_URL,
    WebView,
    render_mjml,
    web_url,
)
from composer.composing.text import render_text
from composer.composing.typography import typeset
from composer.composing.validate import validate_issue
from composer.config import Config
from composer.model import Issue, Tier

GMAIL_CLIP_BYTES = 102 * 1024
WORDS_PER_MINUTE = 230


@dataclass(frozen=True)
class ReaderUrls:
    """The links one copy carries in place of the placeholders: its reader's own, or the
    generic pages for a copy that goes to no one in particular (:func:`generic_urls`)."""

    unsubscribe: str
    manage: str
    web: str

    def fill(self, content: str) -> str:
        """``content`` with each placeholder replaced by its link."""
        for placeholder, url in self.by_placeholder().items():
            content = content.replace(placeholder, url)
        return content

    def by_placeholder(self) -> dict[str, str]:
        """Each placeholder of :mod:`composer.composing.render` and the link it stands for."""
        return {
            UNSUBSCRIBE_URL: self.unsubscribe,
            MANAGE_URL: self.manage,
            READER_WEB_URL: self.web,
        }


@dataclass(frozen=True)
class ComposedIssue:
    """An issue composed for one tier: the MJML, the inlined HTML and the plain text, with
    placeholders for each reader's links (:class:`ReaderUrls`). ``web_url`` is the
    issue's public web version."""

    issue: Issue
    tier: Tier
    subject: str
    preheader: str
    web_url: str
    mjml: str
    html: str
    text: str

    @property
    def html_size(self) -> int:
        """Bytes of HTML, the figure Gmail clips at (:data:`GMAIL_CLIP_BYTES`)."""
        return len(self.html.encode("utf-8"))

    @property
    def word_count(self) -> int:
        return len(re.findall(r"\w+", self.text))

    @property
    def reading_minutes(self) -> int:
        return max(1, math.ceil(self.word_count / WORDS_PER_MINUTE))

    def with_urls(self, urls: ReaderUrls) -> ComposedIssue:
        """A copy with ``urls`` in place of the placeholders."""
        return dataclasses.replace(self, html=urls.fill(self.html), text=urls.fill(self.text))


def compose(
    issue: Issue,
    config: Config,
    tier: Tier,
    web: WebView | None = None,
    *,
    web_version: bool = True,
) -> ComposedIssue:
    """Compose a loaded ``issue`` for readers of ``tier``: their email, or with ``web``
    the web version (whose plain text is the email's). Without ``web_version`` (the
    welcome message, which ``serve`` does not publish) the email links to no web version:
    no "View in browser", "Keep reading" or share links."""
    validate_issue(issue, config.newsletter.templates)
    typeset_issue = typeset(issue, config)
    mjml = render_mjml(typeset_issue, config, tier, web, web_version=web_version)
    html = inline_css(mjml_to_html(mjml))
    text = render_text(typeset_issue, config, tier, web_version=web_version)
    return ComposedIssue(
        issue=issue,
        tier=tier,
        subject=typeset_issue.title,
        preheader=typeset_issue.preheader,
        web_url=web_url(issue, config),
        mjml=mjml,
        html=html,
        text=text,
    )


def compose_file(path: Path, config: Config, tier: Tier) -> ComposedIssue:
    """Load the issue file at ``path`` and compose it for ``tier``."""
    return compose(load_issue(path), config, tier)


def generic_urls(issue: Issue, config: Config) -> ReaderUrls:
    """The links of a copy that goes to no one subscriber (build, preview, the web
    version): the pages that say where a reader's own links are, and the public web
    version."""
    base = config.newsletter.base_url
    return ReaderUrls(
        unsubscribe=f"{base}/unsubscribe", manage=f"{base}/manage", web=web_url(issue, config)
    )
