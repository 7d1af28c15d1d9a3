"""The plain-text alternative, written from the issue model rather than scraped from HTML.

Headings stand on their own lines (block headings in capitals, underlined),
paragraphs are wrapped at 72 columns, lists and quotes keep their markers, and
every link and image is written out with its URL so a text-only reader can
follow it. Story leads keep the editor's case, as in the HTML.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from markdown_it.token import Token

from composer.composing.markdown import parse
from composer.composing.render import MANAGE_URL, READER_WEB_URL, UNSUBSCRIBE_URL, web_url
from composer.config import Config
from composer.model import Issue, Tier

WIDTH = 72


def render_text(issue: Issue, config: Config, tier: Tier, *, web_version: bool = True) -> str:
    """The plain-text body of ``issue``, already typeset
    (:func:`~composer.composing.typography.typeset`), as readers of ``tier`` get it;
    without ``web_version``, with no link to a web version of it."""
    newsletter = config.newsletter
    name = newsletter.name
    url = READER_WEB_URL
    lang = issue.lang
    parts = [name.upper(), "=" * len(name), "", _wrap(issue.title)]
    if issue.subtitle:
        parts += ["", _wrap(issue.subtitle)]
    byline = f"{issue.date.day} {issue.date:%B %Y}"
    parts += ["", f"By {issue.author} · {byline}" if issue.author else byline]
    if web_version:
        parts += ["", f"Read it on the web: {url}"]
    if issue.lede.text:
        parts += ["", markdown_to_text(issue.lede.text, lang)]
    for block in issue.blocks_for(tier):
        heading = _inline_text(parse(block.heading, lang)).upper()
        parts += ["", "", heading, "-" * min(len(heading), WIDTH)]
        if block.body.text:
            parts += ["", markdown_to_text(block.body.text, lang)]
        for item in block.items:
            parts += ["", markdown_to_text(f"{item.lead}: {item.body.text}", lang)]
    if issue.is_cut_for(tier):
        parts += ["", "", "The rest of this issue is for paid subscribers."]
        if web_version:
            parts.append(f"Keep reading: {url}")
    if newsletter.share and web_version:
        parts += ["", f"Share this issue: {web_url(issue, config)}"]
    parts += ["", "", "-- ", f"© {issue.date.year} {name}"]
    if newsletter.address:
        parts.append(newsletter.address)
    parts += [
        f"You are receiving this because you subscribed to {name}.",
        f"Manage your subscription: {MANAGE_URL}",
        f"Unsubscribe: {UNSUBSCRIBE_URL}",
    ]
    if newsletter.privacy_url:
        parts.append(f"Privacy: {newsletter.privacy_url}")
    if newsletter.terms_url:
        parts.append(f"Terms: {newsletter.terms_url}")
    parts.append("")
    return "\n".join(parts)


def markdown_to_text(text: str, lang: str) -> str:
    """Markdown as readable plain text in language ``lang``, wrapped at :data:`WIDTH` columns."""
    return "\n\n".join(_blocks(parse(text, lang), WIDTH)).rstrip()


def _blocks(tokens: Sequence[Token], width: int) -> list[str]:
    """The paragraphs of a token run, each a string of lines wrapped at ``width``."""
    out: list[str] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        end = _closing(tokens, index)
        inner = tokens[index + 1 : end]
        if token.type == "paragraph_open":
            out.append(_wrap(_inline_text(inner), width))
        elif token.type == "heading_open":
            heading = _inline_text(inner)
            out.append(f"{heading}\n{'~' * min(len(heading), width)}")
        elif token.type in ("bullet_list_open", "ordered_list_open"):
            out.append(_list(token, inner, width))
        elif token.type == "blockquote_open":
            quoted = "\n\n".join(_blocks(inner, width - 2))
            out.append("\n".join(f"> {line}".rstrip() for line in quoted.split("\n")))
        elif token.type in ("fence", "code_block"):
            out.append(textwrap.indent(token.content.rstrip("\n"), "    "))
        elif token.type == "hr":
            out.append("* * *")
        elif token.type == "table_open":
            out.append(_table(inner))
        index = end + 1
    return out


def _closing(tokens: Sequence[Token], index: int) -> int:
    """Index of the token that closes ``tokens[index]`` (itself, for a self-contained token)."""
    if tokens[index].nesting != 1:
        return index
    depth = 0
    for position in range(index, len(tokens)):
        depth += tokens[position].nesting
        if depth == 0:
            return position
    return len(tokens) - 1


def _list(opening: Token, inner: Sequence[Token], width: int) -> str:
    ordered = opening.type == "ordered_list_open"
    start = int(opening.attrGet("start") or 1)
    items: list[str] = []
    index = 0
    while index < len(inner):
        end = _closing(inner, index)
        if inner[index].type == "list_item_open":
            marker = f"{start + len(items)}. " if ordered else "- "
            body = "\n\n".join(_blocks(inner[index + 1 : end], width - len(marker)))
            lines = body.split("\n")
            pad = " " * len(marker)
            items.append(
                "\n".join([marker + lines[0], *(pad + line if line else "" for line in lines[1:])])
            )
        index = end + 1
    return "\n".join(items)


def _table(inner: Sequence[Token]) -> str:
    rows: list[str] = []
    cells: list[str] = []
    for index, token in enumerate(inner):
        if token.type in ("th_open", "td_open"):
            cells.append(_inline_text([inner[index + 1]]))
        elif token.type == "tr_close":
            rows.append(" | ".join(cells))
            cells = []
    return "\n".join(rows)


def _inline_text(tokens: Sequence[Token]) -> str:
    """The text of inline tokens, links followed by their URL in parentheses."""
    out: list[str] = []
    links: list[tuple[str, int]] = []
    for token in tokens:
        if token.type == "inline":
            out.append(_inline_text(token.children or []))
        elif token.type in ("text", "code_inline"):
            out.append(token.content)
        elif token.type == "softbreak":
            out.append(" ")
        elif token.type == "hardbreak":
            out.append("\n")
        elif token.type == "link_open":
            links.append((str(token.attrGet("href") or ""), len(out)))
        elif token.type == "link_close" and links:
            href, start = links.pop()
            label = "".join(out[start:])
            if href and href not in (label, f"mailto:{label}"):
                out.append(f" ({href})")
        elif token.type == "image":
            # The HTML shows the caption under the image: here it follows on its own line.
            alt = f"Image: {token.content}" if token.content else "Image"
            caption = token.attrGet("title")
            out.append(f"[{alt}] ({token.attrGet('src') or ''})")
            if caption:
                out.append(f"\n{caption}")
    return "".join(out)


def _wrap(text: str, width: int = WIDTH) -> str:
    return "\n".join(
        textwrap.fill(line, width, break_long_words=False, break_on_hyphens=False)
        for line in text.split("\n")
    )
