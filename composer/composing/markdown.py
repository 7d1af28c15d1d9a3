"""The one Markdown dialect of the project: CommonMark plus tables and strikethrough.

Raw HTML in an issue is shown as text, never passed through, so nothing an editor
writes can break the email's layout. The loader, the HTML renderer, the plain-text
renderer and the checker all parse with :data:`MARKDOWN`, so they agree on structure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

MARKDOWN = MarkdownIt("commonmark", {"html": False, "typographer": False}).enable(
    ["table", "strikethrough"]
)


def _image_with_caption(
    self: Any, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    """An image as a full-width ``<img>``; its Markdown title becomes a visible caption."""
    token = tokens[idx]
    alt = self.renderInlineAsText(token.children or [], options, env)
    src = escapeHtml(str(token.attrGet("src") or ""))
    caption = str(token.attrGet("title") or "")
    html = f'<img src="{src}" alt="{escapeHtml(alt)}" class="nl-img" width="584">'
    if caption:
        html += f'<span class="nl-caption">{escapeHtml(caption)}</span>'
    return html


MARKDOWN.add_render_rule("image", _image_with_caption)


def to_html(text: str) -> str:
    """Render a run of Markdown to an HTML fragment."""
    return str(MARKDOWN.render(text))


def inline_to_html(text: str) -> str:
    """Render one line of inline Markdown (a heading, a lead) without a wrapping ``<p>``."""
    return str(MARKDOWN.renderInline(text))


def parse(text: str) -> list[Token]:
    """The token stream of ``text``; each block token's ``map`` gives its source lines."""
    return MARKDOWN.parse(text)


def split_first_paragraph(text: str) -> tuple[str, str]:
    """Render ``text`` as (its first paragraph's inline HTML, the HTML of everything after).

    A story item's lead runs into its first paragraph, so the paragraph's ``<p>`` is
    the template's to write; when the text does not open with a paragraph, the first
    part is empty and everything is in the second.
    """
    tokens = parse(text)
    if len(tokens) < 3 or tokens[0].type != "paragraph_open":
        return "", MARKDOWN.renderer.render(tokens, MARKDOWN.options, {})
    first = MARKDOWN.renderer.render(tokens[1].children or [], MARKDOWN.options, {})
    rest = MARKDOWN.renderer.render(tokens[3:], MARKDOWN.options, {})
    return first, rest
