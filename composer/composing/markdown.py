"""The one Markdown dialect of the project: CommonMark plus tables and strikethrough,
typeset in the issue's language.

Raw HTML in an issue is shown as text, never passed through, so nothing an editor
writes can break the email's layout. The loader, the HTML renderer, the plain-text
renderer and the checker all parse with the same rules, so they agree on structure.

Rendering for readers (:func:`markdown_for` with a language) adds markdown-it's
typographer: curly quotes and apostrophes in the language's style, dashes from ``--``
and ``---``, an ellipsis from ``...``. It leaves alone what must stay as typed: code,
URLs (in links' text or bare in a sentence), "(c)" and its kin, a paragraph in
Chinese, Japanese or Korean (their own punctuation is already in it), and a
character escaped with ``\\``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.rules_core import StateCore, replace, smartquotes, text_join
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

# Double open, double close, single open, single close, by language tag (then by its
# first part: "de-AT" is "de"); other languages get English quotes. French sets its
# guillemets off with a narrow no-break space, as its typographers do.
QUOTES: dict[str, tuple[str, str, str, str]] = {
    "en": ("\u201c", "\u201d", "\u2018", "\u2019"),  # “ ” ‘ ’
    "de": ("\u201e", "\u201c", "\u201a", "\u2018"),  # „ “ ‚ ‘
    "de-ch": ("\u00ab", "\u00bb", "\u2039", "\u203a"),  # « » ‹ ›
    "fr": ("\u00ab\u202f", "\u202f\u00bb", "\u201c", "\u201d"),  # « » “ ”
    "es": ("\u00ab", "\u00bb", "\u201c", "\u201d"),  # « » “ ”
    "it": ("\u00ab", "\u00bb", "\u201c", "\u201d"),  # « » “ ”
    "pl": ("\u201e", "\u201d", "\u00ab", "\u00bb"),  # „ ” « »
    "cs": ("\u201e", "\u201c", "\u201a", "\u2018"),  # „ “ ‚ ‘
    "ru": ("\u00ab", "\u00bb", "\u201e", "\u201c"),  # « » „ “
}

# Kept as typed: a URL in running text (without the punctuation ending the sentence
# around it), and "(c)", "(r)", "(tm)", list markers far more often than symbols in prose.
_LITERAL = re.compile(
    r"(?:https?://|mailto:|www\.)[^\s<>]*[^\s<>.,;:!?'\")\]]|\((?:c|r|tm)\)", re.IGNORECASE
)
# Han, kana, hangul, and the full-width forms CJK text is set in.
_CJK = re.compile("[\u1100-\u11ff\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")
_LETTER = re.compile(r"[^\W\d_]")

MARKDOWN = MarkdownIt("commonmark", {"html": False, "typographer": False}).enable(
    ["table", "strikethrough"]
)


def quotes_for(lang: str) -> tuple[str, str, str, str]:
    """The quotation marks of language ``lang`` (a tag such as "en" or "de-CH")."""
    tag = lang.lower()
    return QUOTES.get(tag) or QUOTES.get(tag.split("-")[0]) or QUOTES["en"]


def is_cjk(text: str) -> bool:
    """Whether most letters of ``text`` are Chinese, Japanese or Korean."""
    cjk = len(_CJK.findall(text))
    return cjk > 0 and 2 * cjk >= len(_LETTER.findall(text))


def _keep_literal(state: StateCore) -> None:
    """Hide from the typographer what must stay as typed, by making it ``text_special``
    (as markdown-it does for escaped characters); ``text_join`` makes it text again."""
    for token in state.tokens:
        if token.type != "inline" or not token.children:
            continue
        if is_cjk(token.content):
            for child in token.children:
                if child.type == "text":
                    child.type = "text_special"
        elif "<" in token.content or _LITERAL.search(token.content):
            token.children = list(_set_apart_literals(token.children))


def _set_apart_literals(children: list[Token]) -> Iterator[Token]:
    in_autolink = False
    for child in children:
        if child.type == "link_open" and child.info == "auto":
            in_autolink = True
        elif child.type == "link_close":
            in_autolink = False
        if child.type != "text":
            yield child
        elif in_autolink:
            child.type = "text_special"
            yield child
        else:
            start = 0
            for found in _LITERAL.finditer(child.content):
                if found.start() > start:
                    yield child.copy(content=child.content[start : found.start()])
                yield child.copy(type="text_special", content=found[0])
                start = found.end()
            if start == 0:
                yield child
            elif start < len(child.content):
                yield child.copy(content=child.content[start:])


_TYPOGRAPHY = (_keep_literal, replace, smartquotes, text_join)


def _typeset_inline(md: MarkdownIt, inline: Token) -> None:
    """Run the typographer over one inline token, outside a whole parse."""
    state = StateCore("", md, {})
    state.tokens = [inline]
    for rule in _TYPOGRAPHY:
        rule(state)


def _typeset_images(state: StateCore) -> None:
    """Typeset an image's alt text and caption (its title), which the typographer's own
    rules do not reach."""
    for token in state.tokens:
        for child in token.children or []:
            if child.type != "image":
                continue
            alt = Token("inline", "", 0, content=child.content, children=child.children)
            _typeset_inline(state.md, alt)
            child.children = alt.children
            child.content = "".join(part.content for part in alt.children or [])
            title = child.attrGet("title")
            if title:
                child.attrSet("title", _smarten_with(state.md, str(title)))


def _smarten_with(md: MarkdownIt, text: str) -> str:
    """Plain ``text`` (no Markdown in it) typeset with ``md``'s typographer."""
    inline = Token("inline", "", 0, content=text, children=[Token("text", "", 0, content=text)])
    _typeset_inline(md, inline)
    return "".join(child.content for child in inline.children or [])


@functools.lru_cache(maxsize=16)
def markdown_for(lang: str | None) -> MarkdownIt:
    """The dialect typeset for readers in language ``lang``; None for none (structure)."""
    if lang is None:
        return MARKDOWN
    md = MarkdownIt(
        "commonmark", {"html": False, "typographer": True, "quotes": list(quotes_for(lang))}
    ).enable(["table", "strikethrough", "replacements", "smartquotes"])
    md.core.ruler.before("replacements", "keep_literal", _keep_literal)
    md.core.ruler.after("smartquotes", "typeset_images", _typeset_images)
    md.add_render_rule("image", _image_with_caption)
    return md


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


def smarten(text: str, lang: str) -> str:
    """Plain ``text`` (a title, a lead: no Markdown in it) typeset in language ``lang``."""
    return _smarten_with(markdown_for(lang), text)


def to_html(text: str, lang: str | None = None) -> str:
    """Render a run of Markdown to an HTML fragment."""
    return str(markdown_for(lang).render(text))


def inline_to_html(text: str, lang: str | None = None) -> str:
    """Render one line of inline Markdown (a heading, a lead) without a wrapping ``<p>``."""
    return str(markdown_for(lang).renderInline(text))


def parse(text: str, lang: str | None = None) -> list[Token]:
    """The token stream of ``text``; each block token's ``map`` gives its source lines."""
    return markdown_for(lang).parse(text)


def split_first_paragraph(text: str, lang: str | None = None) -> tuple[str, str]:
    """Render ``text`` as (its first paragraph's inline HTML, the HTML of everything after).

    A story item's lead runs into its first paragraph, so the paragraph's ``<p>`` is
    the template's to write; when the text does not open with a paragraph, the first
    part is empty and everything is in the second.
    """
    md = markdown_for(lang)
    tokens = md.parse(text)
    if len(tokens) < 3 or tokens[0].type != "paragraph_open":
        return "", md.renderer.render(tokens, md.options, {})
    first = md.renderer.render(tokens[1].children or [], md.options, {})
    rest = md.renderer.render(tokens[3:], md.options, {})
    return first, rest
