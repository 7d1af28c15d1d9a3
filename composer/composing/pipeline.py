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
from composer.composing.render import UNSUBSCRIBE_URL, render_mjml, web_url
from composer.composing.text import render_text
from composer.composing.typography import typeset
from composer.composing.validate import validate_issue
from composer.config import Config
from composer.model import Issue, Tier

GMAIL_CLIP_BYTES = 102 * 1024
WORDS_PER_MINUTE = 230


@dataclass(frozen=True)
class ComposedIssue:
    """An issue composed for one tier: the MJML, the inlined HTML and the plain text."""

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

    def with_unsubscribe_url(self, url: str) -> ComposedIssue:
        """A copy with the recipient's unsubscribe link in place of the placeholder."""
        return dataclasses.replace(
            self,
            html=self.html.replace(UNSUBSCRIBE_URL, url),
            text=self.text.replace(UNSUBSCRIBE_URL, url),
        )


def compose(issue: Issue, config: Config, tier: Tier) -> ComposedIssue:
    """Compose a loaded ``issue`` for readers of ``tier``."""
    validate_issue(issue, config.newsletter.templates)
    typeset_issue = typeset(issue, config)
    mjml = render_mjml(typeset_issue, config, tier)
    html = inline_css(mjml_to_html(mjml))
    text = render_text(typeset_issue, config, tier)
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


def generic_unsubscribe_url(config: Config) -> str:
    """The unsubscribe page for copies that go to no one subscriber (build, preview)."""
    return f"{config.newsletter.base_url}/unsubscribe"
