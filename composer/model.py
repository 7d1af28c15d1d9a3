"""The issue model: what an issue file means, whichever format it was written in.

Markdown and TOML twins load into equal models (source line numbers are kept for
messages but left out of equality), and everything downstream reads only this.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Tier = Literal["free", "paid"]
TIERS: tuple[Tier, ...] = ("free", "paid")

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
    ``lang`` is its language tag, empty for the newsletter's own (``[newsletter] lang``)."""

    path: Path = field(compare=False)
    slug: str
    title: str
    date: dt.date
    subtitle: str
    author: str
    preheader: str
    lang: str
    lede: Markdown
    blocks: tuple[Block, ...]
    paywall: int | None

    def blocks_for(self, tier: Tier) -> tuple[Block, ...]:
        """The blocks a reader of ``tier`` gets: free readers stop at the paywall."""
        if tier == "free" and self.paywall is not None:
            return self.blocks[: self.paywall]
        return self.blocks

    def is_cut_for(self, tier: Tier) -> bool:
        """Whether a reader of ``tier`` misses blocks and needs a "Keep reading" link."""
        return len(self.blocks_for(tier)) < len(self.blocks)
