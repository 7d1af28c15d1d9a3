"""An issue in its own language: which language that is, and the issue typeset in it.

The Markdown parts are typeset as they are rendered (:func:`markdown_for`); the plain
strings (title, subtitle, author, preheader, story leads) are typeset here, in one
place, so the subject, the HTML, the text part and the web version all read the same.
"""

from __future__ import annotations

import dataclasses

from composer.composing.markdown import smarten
from composer.config import Config
from composer.model import Issue


def language_of(issue: Issue, config: Config) -> str:
    """The issue's language tag: its own ``lang``, else the newsletter's."""
    return issue.lang or config.newsletter.lang


def typeset(issue: Issue, config: Config) -> Issue:
    """``issue`` with its plain strings typeset and its language filled in."""
    lang = language_of(issue, config)
    blocks = tuple(
        dataclasses.replace(
            block,
            items=tuple(
                dataclasses.replace(item, lead=smarten(item.lead, lang)) for item in block.items
            ),
        )
        for block in issue.blocks
    )
    return dataclasses.replace(
        issue,
        lang=lang,
        title=smarten(issue.title, lang),
        subtitle=smarten(issue.subtitle, lang),
        author=smarten(issue.author, lang),
        preheader=smarten(issue.preheader, lang),
        blocks=blocks,
    )
