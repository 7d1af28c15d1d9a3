"""Load an issue file, Markdown with TOML front matter or plain TOML, into an :class:`Issue`.

Both formats produce equal models. Every structural mistake an editor can make
raises :class:`IssueError` naming the file, the line (and column where known) and
the fix, before anything is built or sent.
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from composer.composing.markdown import parse
from composer.errors import IssueError
from composer.model import LANGUAGE_TAG, Block, Issue, Markdown, StoryItem

FRONT_MATTER_FENCE = "+++"
PAYWALL_MARKER = "<!-- paywall -->"
PAYWALL_KIND = "paywall"
BIG_STORY = "big-story"
SECTION = "section"  # the kind of a block whose heading implies none

_FRONT_MATTER_KEYS = ("id", "title", "date", "subtitle", "author", "preheader", "lang", "published")
_TOML_KEYS = (*_FRONT_MATTER_KEYS, "lede", "blocks")
_BLOCK_KEYS = ("heading", "kind", "body", "items")
_ITEM_KEYS = ("lead", "body")

# Headings that imply a kind when no `{.kind}` attribute is given: by their first words,
# tried in order, then by their last ("This Week's China News").
_KIND_BY_HEADING_START = (
    ("the big story", BIG_STORY),
    ("why it matters", "why-it-matters"),
    ("what happened", "what-happened"),
)
_KIND_BY_HEADING_END = (("news", "news"),)
_KIND_ATTRIBUTE = re.compile(r"^(?P<heading>.*?)\s*\{\s*\.(?P<kind>[^}]*?)\s*\}\s*$")
_VALID_KIND = re.compile(r"^[a-z][a-z0-9-]*$")
# What `newsletter new` writes is 12 hex digits; an editor's own may be any such token.
_VALID_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# A bold lead ending in a colon, the colon inside or just after the bold: "**LEAD:** body".
_BOLD_LEAD = re.compile(
    r"^(?P<mark>\*\*|__)(?P<lead>\S(?:.*?\S)?)(?P<inner>:?)(?P=mark)(?P<outer>:?)"
)
_TOML_POSITION = re.compile(r"\(at line (?P<line>\d+), column (?P<column>\d+)\)$")
# Control characters other than tab and line breaks, and the two non-characters XML
# forbids: invisible in an editor, they make the MJML unparsable and the feed invalid XML.
_INVISIBLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffe\uffff]")


def load_issue(path: Path) -> Issue:
    """Read ``path`` (``.md`` or ``.toml``) and return the issue it describes."""
    text = _read_text(path)
    if path.suffix.lower() == ".toml":
        return _load_toml(path, text)
    if path.suffix.lower() in (".md", ".markdown"):
        return _load_markdown(path, text)
    raise IssueError(path, "an issue file must end in .md or .toml")


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise IssueError(path, "no such file; check the path (issues live under issues/)") from exc
    except IsADirectoryError as exc:
        raise IssueError(path, "is a folder; give the path of one issue file") from exc
    try:
        text = data.decode("utf-8").removeprefix("\ufeff").replace("\r\n", "\n")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise IssueError(
            path,
            f"not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as UTF-8",
            line,
            column,
        ) from exc
    return _visible(path, text)


def _visible(path: Path, text: str, key: str | None = None, line: int | None = 1) -> str:
    """``text`` unless it holds a character no issue needs and no reader can see: the whole
    file when ``key`` is None, else the value of TOML key ``key`` starting on ``line``, into
    which only an escape can have written one."""
    found = _INVISIBLE.search(text)
    if found is None:
        return text
    start = found.start()
    char = _invisible(found[0])
    at = line + text.count("\n", 0, start) if line else None
    if key is None:
        raise IssueError(
            path,
            f"{char}, invisible in most editors, cannot be part of an issue; delete it",
            at,
            start - text.rfind("\n", 0, start),
        )
    raise IssueError(path, f"{key} holds {char}, written as an escape; delete the escape", at)


def _invisible(char: str) -> str:
    kind = "a non-character" if char in "\ufffe\uffff" else "a control character"
    return f"character U+{ord(char):04X} ({kind})"


def _parse_toml(path: Path, text: str, first_line: int = 1) -> dict[str, Any]:
    """Parse TOML, reporting errors at their line in the file (the text may start later)."""
    try:
        return tomllib.loads(text)
    except RecursionError as exc:
        # tomllib parses nested arrays and tables by recursion, with no limit of its own.
        raise IssueError(
            path,
            "TOML nested too deeply (arrays or tables inside one another hundreds of levels"
            " deep); an issue needs none of that: delete the nesting",
            first_line + _deepest_line(text),
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = _TOML_POSITION.search(message)
        reason = _TOML_POSITION.sub("", message).strip()
        if found is None:
            last = first_line + text.count("\n")
            raise IssueError(path, f"TOML syntax error: {reason}", last) from exc
        raise IssueError(
            path,
            f"TOML syntax error: {reason}",
            first_line + int(found["line"]) - 1,
            int(found["column"]),
        ) from exc


def _deepest_line(text: str) -> int:
    """The line of ``text`` (counted from 0) where brackets and braces nest deepest."""
    depth = deepest = found = 0
    for number, line in enumerate(text.split("\n")):
        for char in line:
            depth += (char in "[{") - (char in "]}")
            if depth > deepest:
                deepest, found = depth, number
    return found


@dataclass(frozen=True)
class _KeyLines:
    """Where ``key = …`` lines stand in a TOML text, for messages about their values."""

    lines: list[str]
    first_line: int

    def find(self, key: str, start: int = 0, stop: int | None = None) -> int | None:
        pattern = re.compile(rf"^\s*(?:{re.escape(key)}|\"{re.escape(key)}\")\s*=")
        for index in range(start, len(self.lines) if stop is None else stop):
            if pattern.match(self.lines[index]):
                return self.first_line + index
        return None


def _front_matter(
    path: Path, raw: dict[str, Any], allowed: tuple[str, ...], where: _KeyLines
) -> dict[str, Any]:
    """Check the issue-level keys shared by both formats and return them cleaned."""
    for key in raw:
        if key not in allowed:
            raise IssueError(
                path,
                f"unknown key {key!r}; the keys are {', '.join(allowed)}",
                where.find(key),
            )
    if "title" not in raw:
        raise IssueError(path, 'the issue has no title; add title = "…"', where.first_line)
    if "date" not in raw:
        raise IssueError(
            path, "the issue has no date; add date = 2024-05-03 (no quotes)", where.first_line
        )
    date = raw["date"]
    if not isinstance(date, dt.date) or isinstance(date, dt.datetime):
        raise IssueError(
            path,
            "date must be a TOML date such as 2024-05-03, without quotes",
            where.find("date"),
        )
    values: dict[str, Any] = {"date": date}
    for key in ("title", "subtitle", "author", "preheader"):
        value = raw.get(key, "")
        if not isinstance(value, str):
            raise IssueError(path, f"{key} must be a string in quotes", where.find(key))
        # Header values must never carry line breaks; collapse all whitespace runs.
        values[key] = " ".join(_visible(path, value, key, where.find(key)).split())
    if not values["title"]:
        raise IssueError(path, "the title is empty; write the issue's title", where.find("title"))
    lang = raw.get("lang", "")
    if not isinstance(lang, str) or (lang and not LANGUAGE_TAG.match(lang)):
        raise IssueError(
            path,
            'lang must be a language tag in quotes, such as lang = "en" or lang = "de-CH"',
            where.find("lang"),
        )
    values["lang"] = lang
    issue_id = raw.get("id", "")
    if "id" in raw and not (isinstance(issue_id, str) and _VALID_ID.match(issue_id)):
        raise IssueError(
            path,
            "id must be a token in quotes (letters, digits, '.', '_' or '-', at most 64),"
            ' such as id = "3f9a1c2b7e40"; `newsletter new` writes one',
            where.find("id"),
        )
    values["id"] = issue_id
    published = raw.get("published")
    if published is not None and not isinstance(published, bool):
        raise IssueError(
            path,
            "published must be true or false, without quotes (or left out: the web shows"
            " the issue once it is sent)",
            where.find("published"),
        )
    values["published"] = published
    return values


def _issue(
    path: Path, meta: dict[str, Any], lede: Markdown, blocks: list[Block], paywall: int | None
) -> Issue:
    return Issue(
        path=path,
        slug=path.stem,
        id=meta["id"],
        title=meta["title"],
        date=meta["date"],
        subtitle=meta["subtitle"],
        author=meta["author"],
        preheader=meta["preheader"] or meta["subtitle"],
        lang=meta["lang"],
        lede=lede,
        blocks=tuple(blocks),
        paywall=paywall,
        published=meta["published"],
    )


def kind_of(heading: str) -> str:
    """The block kind a heading implies by its words."""
    words = " ".join(heading.lower().split())
    for prefix, kind in _KIND_BY_HEADING_START:
        if words.startswith(prefix):
            return kind
    last_words = f" {words.rstrip(' .:!?')}"
    for suffix, kind in _KIND_BY_HEADING_END:
        if last_words.endswith(f" {suffix}"):
            return kind
    return SECTION


# --- Markdown -----------------------------------------------------------------------------


def _load_markdown(path: Path, text: str) -> Issue:
    lines = text.split("\n")
    if not lines or lines[0].strip() != FRONT_MATTER_FENCE:
        raise IssueError(
            path,
            "missing front matter: the file must start with a line '+++', "
            "then title = \"…\" and date = …, then another '+++'",
            1,
        )
    try:
        close = next(i for i in range(1, len(lines)) if lines[i].strip() == FRONT_MATTER_FENCE)
    except StopIteration:
        raise IssueError(
            path, "the front matter opened on line 1 is never closed; add a line '+++' after it", 1
        ) from None
    front_text = "\n".join(lines[1:close])
    meta = _front_matter(
        path,
        _parse_toml(path, front_text, first_line=2),
        _FRONT_MATTER_KEYS,
        _KeyLines(lines[1:close], 2),
    )
    body_lines = lines[close + 1 :]
    offset = close + 2  # file line number of body_lines[0]
    return _MarkdownBody(path, body_lines, offset).issue(meta)


@dataclass
class _Cut:
    """A place where the body splits: a ``##`` heading or the paywall marker."""

    index: int  # token index
    start: int  # first body line of the marker or heading
    end: int  # body line after it


class _MarkdownBody:
    """Splits the body after the front matter into the lede, blocks and the paywall cut."""

    def __init__(self, path: Path, lines: list[str], offset: int) -> None:
        self.path = path
        self.lines = lines
        self.offset = offset
        self.tokens = parse("\n".join(lines))

    def line(self, body_line: int) -> int:
        return body_line + self.offset

    def issue(self, meta: dict[str, Any]) -> Issue:
        cuts = self._cuts()
        lede_end = cuts[0].start if cuts else len(self.lines)
        self._reject_leads(0, lede_end, "before any block")
        lede = self._markdown(0, lede_end)
        blocks: list[Block] = []
        paywall: int | None = None
        paywall_line = 0
        for number, cut in enumerate(cuts):
            end = cuts[number + 1].start if number + 1 < len(cuts) else len(self.lines)
            if self._is_heading(cut):
                blocks.append(self._block(cut, end))
                continue
            if paywall is not None:
                raise IssueError(
                    self.path,
                    f"a second paywall marker (the first is on line {paywall_line}); "
                    "an issue has one cut: delete one of them",
                    self.line(cut.start),
                )
            if self._markdown(cut.end, end).text:
                raise IssueError(
                    self.path,
                    "text after the paywall marker belongs to no block; "
                    "put the marker just before a '## ' heading",
                    self.line(cut.end + self._first_text(cut.end, end)),
                )
            paywall, paywall_line = len(blocks), self.line(cut.start)
        return _issue(self.path, meta, lede, blocks, paywall)

    def _cuts(self) -> list[_Cut]:
        cuts = []
        for index, token in enumerate(self.tokens):
            if token.level != 0 or token.map is None:
                continue
            if token.type == "heading_open" and token.tag == "h2":
                cuts.append(_Cut(index, *token.map))
            elif token.type == "paragraph_open":
                content = self.tokens[index + 1].content
                stripped = [line.strip() for line in content.split("\n")]
                if PAYWALL_MARKER in stripped:
                    if len(stripped) > 1:
                        raise IssueError(
                            self.path,
                            "the paywall marker must stand on a line of its own, "
                            "with a blank line before and after it",
                            self.line(token.map[0] + stripped.index(PAYWALL_MARKER)),
                        )
                    cuts.append(_Cut(index, *token.map))
        return cuts

    def _is_heading(self, cut: _Cut) -> bool:
        return self.tokens[cut.index].type == "heading_open"

    def _first_text(self, start: int, end: int) -> int:
        return next(i for i in range(end - start) if self.lines[start + i].strip())

    def _markdown(self, start: int, end: int) -> Markdown:
        chunk = self.lines[start:end]
        while chunk and not chunk[0].strip():
            chunk, start = chunk[1:], start + 1
        return Markdown("\n".join(chunk).strip(), self.line(start) if chunk else 0)

    def _block(self, cut: _Cut, end: int) -> Block:
        raw_heading = self.tokens[cut.index + 1].content.strip()
        heading, kind = raw_heading, kind_of(raw_heading)
        attribute = _KIND_ATTRIBUTE.match(raw_heading)
        if attribute:
            heading, kind = attribute["heading"], attribute["kind"]
            if not _VALID_KIND.match(kind):
                raise IssueError(
                    self.path,
                    f"block kind {{.{kind}}} is not a valid name; "
                    "use lower-case letters and dashes, e.g. {.big-story}",
                    self.line(cut.start),
                )
            if kind == PAYWALL_KIND:
                raise IssueError(
                    self.path,
                    f"a heading cannot be the paywall; write the line {PAYWALL_MARKER} instead",
                    self.line(cut.start),
                )
        if not heading:
            raise IssueError(
                self.path, "a '## ' heading with no words; name the block", self.line(cut.start)
            )
        body = self._markdown(cut.end, end)
        if not body.text:
            raise IssueError(
                self.path,
                f"block {heading!r} is empty; write something under its heading or delete it",
                self.line(cut.start),
            )
        if kind != BIG_STORY:
            return Block(kind, heading, body, (), self.line(cut.start))
        intro, items = self._story_items(cut.end, end)
        return Block(kind, heading, intro, items, self.line(cut.start))

    def _lead_paragraphs(self, start: int, end: int) -> list[tuple[int, int, re.Match[str]]]:
        """Top-level paragraphs within body lines ``start``–``end`` opening with a bold lead."""
        found = []
        for token in self.tokens:
            if token.type != "paragraph_open" or token.level != 0 or token.map is None:
                continue
            first, last = token.map
            if first < start or last > end:
                continue
            match = _BOLD_LEAD.match(self.lines[first].lstrip())
            if match and (match["inner"] or match["outer"]):
                found.append((first, last, match))
        return found

    def _reject_leads(self, start: int, end: int, where: str) -> None:
        for first, _, match in self._lead_paragraphs(start, end):
            raise IssueError(
                self.path,
                f"story item {match['lead']!r} stands {where}; "
                "put it under a '## The Big Story …' heading (or add {.big-story} to its heading)",
                self.line(first),
            )

    def _story_items(self, start: int, end: int) -> tuple[Markdown, tuple[StoryItem, ...]]:
        leads = self._lead_paragraphs(start, end)
        intro = self._markdown(start, leads[0][0] if leads else end)
        items = []
        for number, (first, _, match) in enumerate(leads):
            stop = leads[number + 1][0] if number + 1 < len(leads) else end
            line = self.lines[first].lstrip()[match.end() :].lstrip()
            rest = [line, *self.lines[first + 1 : stop]]
            body = Markdown("\n".join(rest).strip(), self.line(first))
            lead = match["lead"].strip()
            if not body.text:
                raise IssueError(
                    self.path,
                    f"story item {lead!r} has no text after its lead; write the story or delete it",
                    self.line(first),
                )
            items.append(StoryItem(lead, body, self.line(first)))
        return intro, tuple(items)


# --- TOML ---------------------------------------------------------------------------------


def _load_toml(path: Path, text: str) -> Issue:
    raw = _parse_toml(path, text)
    lines = text.split("\n")
    where = _KeyLines(lines, 1)
    for key in raw:
        if key not in _TOML_KEYS:
            raise IssueError(
                path, f"unknown key {key!r}; the keys are {', '.join(_TOML_KEYS)}", where.find(key)
            )
    front = {key: value for key, value in raw.items() if key in _FRONT_MATTER_KEYS}
    meta = _front_matter(path, front, _FRONT_MATTER_KEYS, where)
    lede = raw.get("lede", "")
    if not isinstance(lede, str):
        raise IssueError(path, "lede must be a string of Markdown", where.find("lede"))
    lede_line = where.find("lede") or 0
    _visible(path, lede, "lede", _body_line(where, lede_line))
    raw_blocks = raw.get("blocks", [])
    if isinstance(raw_blocks, dict) and "items" in raw_blocks:
        raise IssueError(
            path,
            "a story item stands outside any block; add a [[blocks]] table with a heading above it",
            next(iter(_table_lines(lines, "blocks.items")), None),
        )
    if not isinstance(raw_blocks, list):
        raise IssueError(path, "blocks must be written as [[blocks]] tables", where.find("blocks"))
    block_lines = _table_lines(lines, "blocks")
    item_lines = _table_lines(lines, "blocks.items")
    blocks: list[Block] = []
    paywall: int | None = None
    item_count = 0
    for number, raw_block in enumerate(raw_blocks):
        line = block_lines[number] if number < len(block_lines) else None
        next_line = block_lines[number + 1] if number + 1 < len(block_lines) else len(lines) + 1
        span = (line - 1 if line else 0, next_line - 1)
        block_items = raw_block.get("items", []) if isinstance(raw_block, dict) else []
        first_item = item_count
        item_count += len(block_items) if isinstance(block_items, list) else 0
        block = _toml_block(path, raw_block, where, line, span, item_lines[first_item:item_count])
        if block is None:
            if paywall is not None:
                raise IssueError(
                    path, "a second paywall block; an issue has one cut: delete one of them", line
                )
            paywall = len(blocks)
        else:
            blocks.append(block)
    return _issue(path, meta, Markdown(lede.strip(), _body_line(where, lede_line)), blocks, paywall)


def _table_lines(lines: list[str], name: str) -> list[int]:
    """File line numbers of each ``[[name]]`` array-of-tables header, in order."""
    pattern = re.compile(rf"^\s*\[\[\s*{re.escape(name)}\s*\]\]")
    return [number + 1 for number, text in enumerate(lines) if pattern.match(text)]


def _body_line(where: _KeyLines, key_line: int) -> int:
    """The line where a string value's text starts: after a ``\"\"\"`` that ends its line."""
    if not key_line:
        return 0
    text = where.lines[key_line - where.first_line].rstrip()
    return key_line + 1 if text.endswith(('"""', "'''")) else key_line


def _toml_block(
    path: Path,
    raw: Any,
    where: _KeyLines,
    line: int | None,
    span: tuple[int, int],
    item_lines: list[int],
) -> Block | None:
    """One ``[[blocks]]`` table as a block, or None for the paywall cut."""
    if not isinstance(raw, dict):
        raise IssueError(path, "each block must be a [[blocks]] table", line)
    for key in raw:
        if key not in _BLOCK_KEYS:
            raise IssueError(
                path,
                f"unknown block key {key!r}; a block has {', '.join(_BLOCK_KEYS)}",
                where.find(key, *span) or line,
            )
    kind = raw.get("kind")
    if kind == PAYWALL_KIND:
        if len(raw) > 1:
            raise IssueError(path, 'a paywall block takes only kind = "paywall"', line)
        return None
    heading = raw.get("heading")
    if not isinstance(heading, str) or not heading.strip():
        raise IssueError(path, 'this block has no heading; add heading = "…"', line)
    heading = " ".join(
        _visible(path, heading, "heading", where.find("heading", *span) or line).split()
    )
    if kind is None:
        kind = kind_of(heading)
    if not isinstance(kind, str) or not _VALID_KIND.match(kind):
        raise IssueError(
            path,
            f"block kind {kind!r} is not a valid name; use lower-case letters and dashes",
            where.find("kind", *span) or line,
        )
    body = raw.get("body", "")
    if not isinstance(body, str):
        raise IssueError(
            path, "body must be a string of Markdown", where.find("body", *span) or line
        )
    body_line = _body_line(where, where.find("body", *span) or 0)
    body_md = Markdown(_visible(path, body, "body", body_line).strip(), body_line)
    raw_items = raw.get("items", [])
    if raw_items and kind != BIG_STORY:
        raise IssueError(
            path,
            f"story items belong to big-story blocks, and {heading!r} is a {kind}; "
            'set kind = "big-story" or move the items',
            item_lines[0] if item_lines else line,
        )
    if not isinstance(raw_items, list):
        raise IssueError(path, "items must be written as [[blocks.items]] tables", line)
    items = tuple(
        _toml_item(path, item, where, item_lines[n] if n < len(item_lines) else line)
        for n, item in enumerate(raw_items)
    )
    if not body_md.text and not items:
        raise IssueError(
            path, f"block {heading!r} is empty; give it a body or items, or delete it", line
        )
    return Block(kind, heading, body_md, items, line or 0)


def _toml_item(path: Path, raw: Any, where: _KeyLines, line: int | None) -> StoryItem:
    if not isinstance(raw, dict):
        raise IssueError(path, "each story item must be a [[blocks.items]] table", line)
    for key in raw:
        if key not in _ITEM_KEYS:
            raise IssueError(path, f"unknown item key {key!r}; an item has lead and body", line)
    lead, body = raw.get("lead"), raw.get("body")
    if not isinstance(lead, str) or not lead.strip():
        raise IssueError(path, 'this story item has no lead; add lead = "…"', line)
    # The item's own keys are the first of their names after its [[blocks.items]] line.
    lead_line = where.find("lead", line or 0) or line
    lead = " ".join(_visible(path, lead, "lead", lead_line).split()).rstrip(":").rstrip()
    if not isinstance(body, str) or not body.strip():
        raise IssueError(
            path, f'story item {lead!r} has no text; add body = "…" or delete it', line
        )
    body_line = _body_line(where, where.find("body", line or 0) or 0)
    body_md = Markdown(_visible(path, body, "body", body_line).strip(), body_line)
    return StoryItem(lead, body_md, line or 0)
