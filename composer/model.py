"""The issue model: what an issue file means, whichever format it was written in.

Markdown and TOML twins load into equal models (source line numbers are kept for
messages but left out of equality), and everything downstream reads only this.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Tier = Literal["free", "paid"]
TIERS: tuple[Tier, ...] = ("free", "paid")

# The fields that say where an issue is (its file name, its dispatch's id, whether the web
# shows it), not what it says: changing one must not make a sent issue new content.
NOT_CONTENT = ("slug", "id", "published")
# A BCP 47 language tag as an editor writes one: "en", "de-CH", "zh-Hant".
LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*$")


@dataclass(frozen=True)
class Markdown:
    """A run of Markdown source and the line of the issue file where it starts."""

    text: str
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class StoryItem:
    """One item of a big-story block: its bold lead and the Markdown that follows it."""

    lead: str
    body: Markdown
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Block:
    """A ``## heading`` and what follows it, rendered by ``templates/blocks/<kind>.mjml.j2``."""

    kind: str
    heading: str
    body: Markdown
    items: tuple[StoryItem, ...] = ()
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Issue:
    """One newsletter issue. ``paywall`` is how many blocks free readers get (None: no cut);
    ``lang`` is its language tag, empty for the newsletter's own (``[newsletter] lang``);
    ``id`` the front matter's ``id``, which names its dispatch whatever the file is
    called (empty: none given); ``published`` the front matter's ``published``, which
    puts the issue on the web or keeps it off whether or not it was sent (None: not
    given, the web shows it once dispatched)."""

    path: Path = field(compare=False)
    slug: str
    id: str
    title: str
    date: dt.date
    subtitle: str
    author: str
    preheader: str
    lang: str
    lede: Markdown
    blocks: tuple[Block, ...]
    paywall: int | None
    published: bool | None = None

    def blocks_for(self, tier: Tier) -> tuple[Block, ...]:
        """The blocks a reader of ``tier`` gets: free readers stop at the paywall."""
        if tier == "free" and self.paywall is not None:
            return self.blocks[: self.paywall]
        return self.blocks

    def is_cut_for(self, tier: Tier) -> bool:
        """Whether a reader of ``tier`` misses blocks and needs a "Keep reading" link."""
        return len(self.blocks_for(tier)) < len(self.blocks)


def content_digest(issue: Issue) -> str:
    """A SHA-256 (hex) of everything ``issue`` says: every field that compares but its
    slug, its id and whether it is published. A renamed copy, its twin in the other
    format, a copy given another id and one published or unpublished on the web after it
    was sent have the same digest, so a dispatch can tell an issue it has already sent.
    A release that adds a field to the model changes the digest of every issue, unless
    the field is left out here as these are."""
    said = {name: value for name, value in _fields(issue).items() if name not in NOT_CONTENT}
    text = json.dumps(said, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _fields(value: Issue | Block | StoryItem | Markdown) -> dict[str, object]:
    """The fields of ``value`` that take part in equality (not source lines, not the
    path), as plain JSON data."""
    return {
        item.name: _plain(getattr(value, item.name))
        for item in dataclasses.fields(value)
        if item.compare
    }


def _plain(value: object) -> object:
    if isinstance(value, Block | StoryItem | Markdown):
        return _fields(value)
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dt.date):
        return value.isoformat()
    return value
