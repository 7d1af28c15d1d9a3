"""Lint a composed issue before it is sent: ``newsletter check``.

Two passes. The first walks the issue model, so each finding names its block and
the line of the issue file: the kind each block got (an ``info`` line), the
preheader's length, images without alt text, links that are not http(s)/mailto,
generic or bare-URL link text, "TK" placeholders, image-only blocks. The second
reads the composed email of each tier: Gmail's clipping size, the unsubscribe link,
the © year, colours that vanish on a dark background, and images that outweigh the
text. Errors make the command exit 1; warnings are advice; info lines
only say what the tool made of the issue.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast
from unicodedata import east_asian_width

from cssselect import ExpressionError, SelectorError
from lxml import html as lxml_html
from lxml.cssselect import CSSSelector
from markdown_it import MarkdownIt
from markdown_it.token import Token

from composer.composing.load import SECTION, kind_of, load_issue
from composer.composing.pipeline import GMAIL_CLIP_BYTES, ComposedIssue, compose
from composer.composing.render import UNSUBSCRIBE_URL
from composer.config import Config
from composer.errors import location
from composer.model import TIERS, Block, Issue, Markdown

Severity = Literal["error", "warning", "info"]

MAX_SUBJECT_CHARS = 80
# Inboxes show roughly this much preview text after the subject: a shorter preheader
# wastes the space, a longer one is cut off mid-sentence.
PREHEADER_CHARS = range(40, 131)
# A full-width image (584 px) at the common 3:2 shape stands about 390 px tall: 14 lines
# of 17 px body text, about 1,000 characters. With less text than that for each image,
# the images fill more of the email than the words do, which is what spam filters and
# readers whose client blocks images (Outlook's default) see as an image-only email.
MIN_TEXT_PER_IMAGE = 1000
MAX_WORDS = 2500  # about eleven minutes of reading; open rates fall off beyond that
GENERIC_LINK_TEXT = frozenset(
    {"here", "click here", "this", "this link", "link", "read more", "more", "click", "go"}
)
LINK_SCHEMES = ("https://", "http://", "mailto:")
IMAGE_SCHEMES = ("https://", "http://")
PLACEHOLDER = re.compile(r"\bTK(?:TK)?\b")
BARE_URL = re.compile(r"^(?:https?://|www\.)\S*$", re.IGNORECASE)
COPYRIGHT_YEAR = re.compile(r"(?:©|&copy;|\(c\)|copyright)\s*(\d{4})", re.IGNORECASE)
DARK_BACKGROUND = (0x12, 0x12, 0x12)
MIN_DARK_CONTRAST = 3.0
MIN_CONTRAST = 4.5

# The renderer drops links with unsafe schemes (javascript:, file:, …) and shows
# them as text; the checker must still see them to report them.
_LENIENT = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])
_LENIENT.validateLink = lambda url: True  # type: ignore[method-assign]


@dataclass(frozen=True)
class Finding:
    """One problem: how bad, what, and where (the block and the issue file's line)."""

    severity: Severity
    message: str
    path: Path
    block: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = f" (in {self.block})" if self.block else ""
        return f"{location(self.path, self.line)}: {self.severity}: {self.message}{where}"


@dataclass(frozen=True)
class CheckReport:
    findings: tuple[Finding, ...]

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "error")

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "warning")

    def summary(self) -> str:
        if not self.errors and not self.warnings:
            return "No problems found."
        return f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)."


def check_issue(path: Path, config: Config) -> CheckReport:
    """Load and compose the issue at ``path`` for every tier, and lint the result."""
    issue = load_issue(path)
    return check_composed_issue(issue, [compose(issue, config, tier) for tier in TIERS], config)


def check_composed_issue(
    issue: Issue, composed: list[ComposedIssue], config: Config
) -> CheckReport:
    """Lint ``issue`` already composed for every tier (as the live preview has it)."""
    return CheckReport((*check_model(issue), *check_composed(issue, composed, config)))


# --- the issue model ----------------------------------------------------------------------


def check_model(issue: Issue) -> list[Finding]:
    """Findings about what the editor wrote, located by block and line."""
    findings: list[Finding] = []

    def add(severity: Severity, message: str, block: str | None, line: int | None) -> None:
        findings.append(Finding(severity, message, issue.path, block, line))

    for name, value in (
        ("title", issue.title),
        ("subtitle", issue.subtitle),
        ("preheader", issue.preheader),
    ):
        if PLACEHOLDER.search(value):
            add("error", f'the {name} still has a "TK" placeholder', "front matter", None)
    if not issue.title.strip():
        add("error", "the issue has no title", "front matter", None)
    if not issue.preheader:
        add(
            "warning",
            "no preheader or subtitle: inboxes will preview the email's first words; "
            'add preheader = "…"',
            "front matter",
            None,
        )
    elif len(issue.preheader) not in PREHEADER_CHARS:
        add(
            "warning",
            f"the preheader is {len(issue.preheader)} characters; inboxes preview "
            f"{PREHEADER_CHARS.start}–{PREHEADER_CHARS.stop - 1} after the subject, so "
            + (
                "it leaves the preview half empty" if len(issue.preheader) < 40 else "it is cut off"
            ),
            "front matter",
            None,
        )
    if len(issue.title) > MAX_SUBJECT_CHARS:
        add(
            "warning",
            f"the subject (the title) is {len(issue.title)} characters; "
            f"inboxes cut it near {MAX_SUBJECT_CHARS}",
            "front matter",
            None,
        )
    if issue.paywall is not None and issue.paywall == len(issue.blocks):
        add("warning", "the paywall comes after the last block and cuts nothing", None, None)
    if issue.paywall == 0 and not issue.lede.text:
        add(
            "warning",
            "the paywall comes before every block: free readers get no content",
            None,
            None,
        )

    for block in issue.blocks:
        add("info", _kind_note(block, issue.path), repr(block.heading), block.line)
    for block_name, fragment in _fragments(issue):
        for severity, message, line in _check_fragment(fragment):
            add(severity, message, block_name, line)
    return findings


def _kind_note(block: Block, path: Path) -> str:
    """Which kind of block ``block`` is, and what made it so."""
    toml = path.suffix.lower() == ".toml"
    if block.kind != kind_of(block.heading):
        written = f'kind = "{block.kind}"' if toml else f"{{.{block.kind}}}"
        return f"a {block.kind} block, as its {written} says"
    if block.kind == SECTION:
        choose = 'kind = "…"' if toml else "{.kind} after the heading"
        return f"a plain section: its heading implies no kind ({choose} picks one)"
    return f"a {block.kind} block, from its heading's words"


def _fragments(issue: Issue) -> Iterator[tuple[str, Markdown]]:
    if issue.lede.text:
        yield "the lede", issue.lede
    for block in issue.blocks:
        name = repr(block.heading)
        yield name, Markdown(block.heading, block.line)
        if block.body.text:
            yield name, block.body
        for item in block.items:
            yield f"{name}, item {item.lead!r}", Markdown(item.lead, item.line)
            yield f"{name}, item {item.lead!r}", item.body


def _check_fragment(fragment: Markdown) -> Iterator[tuple[Severity, str, int | None]]:
    """Findings in one run of Markdown: placeholders, images, links, image-only text."""
    lines = fragment.text.split("\n")

    def line_of(block_token: Token, needle: str) -> int | None:
        if not fragment.line or block_token.map is None:
            return None
        first, last = block_token.map
        for offset in range(first, min(last, len(lines))):
            if needle and needle in lines[offset]:
                return fragment.line + offset
        return fragment.line + first

    images = words = 0
    for block_token in _LENIENT.parse(fragment.text):
        if block_token.type != "inline":
            continue
        children = block_token.children or []
        words += sum(len(token.content.split()) for token in children if token.type == "text")
        images += sum(token.type == "image" for token in children)
        # Each check numbers its findings by token, so merged they come in reading order.
        found = heapq.merge(
            _text_and_image_findings(children), _link_findings(children), key=lambda f: f[0]
        )
        for _, severity, message, needle in found:
            yield severity, message, line_of(block_token, needle)
    if images and words < 10:
        yield (
            "warning",
            "an image with (almost) no text: spam filters distrust image-only content",
            fragment.line or None,
        )


# A finding in a run of inline tokens: the index of its token, its severity, its message
# and the text that finds its line in the source.
_InlineFinding = tuple[int, Severity, str, str]


def _text_and_image_findings(children: list[Token]) -> Iterator[_InlineFinding]:
    """Placeholders left in the text, and images without alt text or an http(s) URL."""
    for index, token in enumerate(children):
        if token.type == "text" and PLACEHOLDER.search(token.content):
            yield index, "error", 'a "TK" placeholder is left in the text', "TK"
        elif token.type == "image":
            src = str(token.attrGet("src") or "")
            if not token.content.strip():
                yield (
                    index,
                    "error",
                    f"image {src} has no alt text; write ![what it shows]({src})",
                    src,
                )
            if not src.startswith(IMAGE_SCHEMES):
                yield (
                    index,
                    "error",
                    f"image {src!r} is not an http(s) URL; mail clients cannot load it",
                    src,
                )


def _link_findings(children: list[Token]) -> Iterator[_InlineFinding]:
    """Links that are not absolute, and link text that says nothing or is a bare URL."""
    label: list[str] = []
    href: str | None = None
    for index, token in enumerate(children):
        if token.type == "text" and href is not None:
            label.append(token.content)
        elif token.type == "link_open":
            href, label = str(token.attrGet("href") or ""), []
            if not href.startswith(LINK_SCHEMES):
                yield (
                    index,
                    "error",
                    f"link {href!r} is not an http(s) or mailto: URL; "
                    "links in email must be absolute",
                    href or "](",
                )
        elif token.type == "link_close":
            text = " ".join("".join(label).split())
            if text.lower().strip(" .!?:→»") in GENERIC_LINK_TEXT:
                yield (
                    index,
                    "warning",
                    f"link text {text!r} says nothing out of context; name where the link goes",
                    text,
                )
            elif BARE_URL.match(text) or text == (href or "").split("://", 1)[-1]:
                yield (
                    index,
                    "warning",
                    f"link text {text!r} is a bare URL: it tells a reader little and reads "
                    "badly aloud; name where the link goes",
                    text,
                )
            href = None


# --- the composed email -------------------------------------------------------------------


def check_composed(issue: Issue, composed: list[ComposedIssue], config: Config) -> list[Finding]:
    """Findings about the emails as sent, one set per tier where they differ."""
    findings: list[Finding] = []

    def add(severity: Severity, message: str) -> None:
        finding = Finding(severity, message, issue.path, "the composed email")
        if finding not in findings:
            findings.append(finding)

    for variant in composed:
        size = variant.html_size
        if size > GMAIL_CLIP_BYTES:
            add(
                "error",
                f"the {variant.tier} HTML is {size / 1024:.1f} KB; Gmail clips messages over "
                f"{GMAIL_CLIP_BYTES // 1024} KB, hiding the footer and unsubscribe link: "
                "shorten the issue",
            )
        elif size > GMAIL_CLIP_BYTES * 0.9:
            add(
                "warning", f"the {variant.tier} HTML is {size / 1024:.1f} KB, close to Gmail's clip"
            )
        if UNSUBSCRIBE_URL not in variant.html or UNSUBSCRIBE_URL not in variant.text:
            add(
                "error",
                "no unsubscribe link in the HTML and plain text: the templates must link "
                "{{ unsubscribe_url }}",
            )
        for year in sorted({int(y) for y in COPYRIGHT_YEAR.findall(variant.html + variant.text)}):
            if year != issue.date.year:
                add("warning", f"the © year {year} is not the issue's year {issue.date.year}")
        tree = lxml_html.fromstring(variant.html)
        for message in _colour_findings(tree):
            add("warning", message)
        images, characters = _images_and_text(tree)
        if images and characters < MIN_TEXT_PER_IMAGE * images:
            add(
                "warning",
                f"the {variant.tier} email has {images} image(s) and {characters:,} characters "
                f"of text, under {MIN_TEXT_PER_IMAGE:,} an image: the images fill more of it "
                "than the words, and with images blocked it looks empty",
            )
        if variant.word_count > MAX_WORDS:
            add(
                "warning",
                f"the {variant.tier} issue is {variant.word_count:,} words "
                f"(about {variant.reading_minutes} minutes); consider moving some to the web",
            )
    if not config.newsletter.address:
        add(
            "warning",
            "no postal address in config.toml ([newsletter] address); the law in "
            "several countries asks bulk senders for one",
        )
    return findings


_COLOR = re.compile(r"(?:^|;)\s*color\s*:\s*(#[0-9a-fA-F]{3,6})\b")
_BACKGROUND = re.compile(r"background(?:-color)?\s*:\s*(#[0-9a-fA-F]{3,6})\b")
_DARK_MEDIA = re.compile(r"@media[^{]*prefers-color-scheme\s*:\s*dark[^{]*\{(.*?)\}\s*\}", re.S)
_HIDDEN = re.compile(r"display\s*:\s*none")
_RULE = re.compile(r"([^{}]+)\{([^{}]*)\}")


def _images_and_text(tree: lxml_html.HtmlElement) -> tuple[int, int]:
    """The images of an email and the length of its visible text, in characters of body
    text: a wide (CJK) character takes the room of two."""
    body = tree.find("body")
    if body is None:
        return 0, 0
    text = " ".join(body.text_content().split())
    wide = sum(east_asian_width(char) in "WF" for char in text)
    return len(body.findall(".//img")), len(text) + wide


def _colour_findings(tree: lxml_html.HtmlElement) -> Iterator[str]:
    """Text colours too faint on their own background, or on a dark one with no override."""
    overridden = _dark_mode_coloured(tree)
    reported: set[str] = set()
    for element in tree.iter():
        if not isinstance(element.tag, str) or not (element.text or "").strip():
            continue
        found = _COLOR.search(element.get("style", ""))
        if not found or _hidden(element):
            continue
        colour = found.group(1).lower()
        background = _background_of(element)
        if background is not None and _contrast(colour, background) < MIN_CONTRAST:
            key = f"{colour}/{background}"
            if key not in reported:
                reported.add(key)
                yield (
                    f"text colour {colour} on {background} is hard to read "
                    f"(contrast {_contrast(colour, background):.1f}:1, want {MIN_CONTRAST}:1)"
                )
        dark = _contrast(colour, _hex(DARK_BACKGROUND))
        if element not in overridden and dark < MIN_DARK_CONTRAST and colour not in reported:
            reported.add(colour)
            yield (
                f"text colour {colour} would vanish on a dark background and no "
                "prefers-color-scheme: dark rule overrides it"
            )


def _dark_mode_coloured(tree: lxml_html.HtmlElement) -> set[lxml_html.HtmlElement]:
    """The elements whose text colour a ``prefers-color-scheme: dark`` rule sets."""
    matched: set[lxml_html.HtmlElement] = set()
    for style in tree.iter("style"):
        for rules in _DARK_MEDIA.findall(style.text or ""):
            for selectors, declarations in _RULE.findall(rules):
                if not re.search(r"(?:^|[;\s])color\s*:", declarations):
                    continue
                for selector in selectors.split(","):
                    try:
                        found = CSSSelector(selector.strip())(tree)
                    except (SelectorError, ExpressionError):
                        continue  # a selector lxml cannot evaluate, such as :root
                    matched.update(cast(list[lxml_html.HtmlElement], found))
    return matched


def _hidden(element: lxml_html.HtmlElement) -> bool:
    """Whether the element is hidden, as the inbox preview text (the preheader) is."""
    return any(
        _HIDDEN.search(candidate.get("style", ""))
        for candidate in (element, *element.iterancestors())
    )


def _background_of(element: lxml_html.HtmlElement) -> str | None:
    for candidate in (element, *element.iterancestors()):
        found = _BACKGROUND.search(candidate.get("style", "")) or None
        if found:
            return found.group(1).lower()
        if candidate.get("bgcolor", "").startswith("#"):
            return str(candidate.get("bgcolor")).lower()
    return None


def _rgb(colour: str) -> tuple[int, int, int]:
    digits = colour.lstrip("#")
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _contrast(first: str, second: str) -> float:
    """WCAG 2 contrast ratio of two colours."""

    def luminance(colour: str) -> float:
        channels = []
        for value in _rgb(colour):
            c = value / 255
            channels.append(c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4)
        red, green, blue = channels
        return 0.2126 * red + 0.7152 * green + 0.0722 * blue

    lighter, darker = sorted((luminance(first), luminance(second)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)
