"""``newsletter new``: start the next issue from a skeleton dated today (``newsletter init``
starts the first one the same way)."""

from __future__ import annotations

import datetime as dt
import re
import secrets
from pathlib import Path

from composer.errors import NewsletterError

MARKDOWN_SKELETON = """\
+++
id = "{id}"  # names this issue's dispatch: keep it when you rename the file
title = "TK: the issue's title"
date = {date}
subtitle = ""
author = ""
preheader = ""
+++

A short lede: why this issue is worth reading today.

## What happened

TK

## Why it matters

### A sub-heading

TK

## This Week's News

- [TK headline](https://example.com/) — one line on why it matters.

<!-- paywall -->

## The Big Story in TK

**TK LEAD IN CAPITALS:** The story.
"""

TOML_SKELETON = '''\
id = "{id}"  # names this issue's dispatch: keep it when you rename the file
title = "TK: the issue's title"
date = {date}
subtitle = ""
author = ""
preheader = ""

lede = """
A short lede: why this issue is worth reading today.
"""

[[blocks]]
heading = "What happened"
body = """
TK
"""

[[blocks]]
heading = "Why it matters"
body = """
### A sub-heading

TK
"""

[[blocks]]
heading = "This Week's News"
body = """
- [TK headline](https://example.com/) — one line on why it matters.
"""

[[blocks]]
kind = "paywall"

[[blocks]]
heading = "The Big Story in TK"

[[blocks.items]]
lead = "TK LEAD IN CAPITALS"
body = "The story."
'''

_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def new_issue(
    issues_dir: Path, slug: str | None, *, as_toml: bool = False, today: dt.date | None = None
) -> Path:
    """Write a skeleton issue dated ``today``, with an id of its own, and return its path;
    never overwrite a file."""
    date = today or dt.date.today()
    path = issue_path(issues_dir, slug, as_toml=as_toml, date=date)
    skeleton = TOML_SKELETON if as_toml else MARKDOWN_SKELETON
    issues_dir.mkdir(parents=True, exist_ok=True)
    try:
        with path.open("x", encoding="utf-8") as file:
            file.write(skeleton.format(id=_new_id(), date=date.isoformat()))
    except FileExistsError as exc:
        raise NewsletterError(f"{path} already exists; pick another slug") from exc
    return path


def _new_id() -> str:
    """A fresh issue id: 12 random hex digits (48 bits), so that no two issues of a
    newsletter share one by chance."""
    return secrets.token_hex(6)


def issue_path(issues_dir: Path, slug: str | None, *, as_toml: bool, date: dt.date) -> Path:
    """Where :func:`new_issue` writes the issue ``slug`` dated ``date``: ``<date>-<slug>.md``."""
    if slug is not None and not _SLUG.match(slug):
        raise NewsletterError(
            f"slug {slug!r} must be lower-case letters, digits and dashes, e.g. weekly-briefing"
        )
    name = f"{date.isoformat()}-{slug}" if slug else date.isoformat()
    return issues_dir / f"{name}{'.toml' if as_toml else '.md'}"
