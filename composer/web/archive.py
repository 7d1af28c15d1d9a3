"""The published issues: which files under issues/ are public, and their Atom feed.

An issue is on the web once it has gone out: once a dispatch that ``send`` would continue
for it (by its id, else its content, else its file name) has sent, or may have sent, a
copy to someone (:func:`composer.store.deliveries.was_dispatched`), so the links in that
copy work and a skeleton from ``newsletter new`` is not public while it is written. Its
front matter decides instead when it says so: ``published = true`` for an issue never
mailed (or a back issue brought from elsewhere), ``published = false`` to take a sent one
off the web. An issue dated after today (UTC) is never on the web. Where an issue exists
as both ``<slug>.md`` and ``<slug>.toml`` twins, the Markdown file is the one used.

The store is asked once per page (:class:`DispatchedIssues`), and only when an issue
due and without a ``published`` key needs it. When it cannot answer (busy, unreachable),
the archive goes by what it last answered: a dispatch does not come undone, so that can
only leave out an issue sent since, never publish a draft; before its first answer, only
the issues marked ``published = true`` are on the web (fail closed).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from xml.etree import ElementTree as ET

from composer.composing.load import load_issue
from composer.composing.render import web_url
from composer.composing.typography import typeset
from composer.config import Config, SubscriberSettings
from composer.errors import NewsletterError
from composer.model import Issue
from composer.store import open_store
from composer.store.deliveries import DispatchedIssue, IssueIdentity, was_dispatched

log = logging.getLogger(__name__)
ATOM = "http://www.w3.org/2005/Atom"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
ISSUE_SUFFIXES = (".md", ".toml")

# What the store says has gone out, asked for when first needed.
Dispatched = Callable[[], Sequence[DispatchedIssue]]


class DispatchedIssues:
    """The dispatched issues the store at ``settings`` records, read afresh at each call,
    or what it last answered when it cannot answer now (none before its first answer)."""

    def __init__(self, settings: SubscriberSettings) -> None:
        self.settings = settings
        self.last: tuple[DispatchedIssue, ...] = ()

    def __call__(self) -> tuple[DispatchedIssue, ...]:
        try:
            # Never waiting to apply queued unsubscribes: serve applies them itself.
            with open_store(self.settings, apply_queued=False) as store:
                self.last = tuple(store.dispatched_issues())
        except NewsletterError as exc:
            log.warning(
                "the archive goes by the %d dispatched issues the store last named: %s",
                len(self.last),
                exc.format_message(),
            )
        return self.last


def published_issues(issues_dir: Path, today: dt.date, dispatched: Dispatched) -> list[Issue]:
    """Every issue under ``issues_dir`` on the web on ``today``, newest first; ``dispatched``
    is called at most once. A file that does not load is logged and left out, never fatal
    to the archive."""
    once = cache(dispatched)
    issues = [
        loaded.issue
        for path in _issue_files(issues_dir).values()
        if (loaded := _load(path)) is not None and _on_the_web(loaded, today, once)
    ]
    return sorted(issues, key=lambda issue: (issue.date, issue.slug), reverse=True)


def find_published(
    issues_dir: Path, slug: str, today: dt.date, dispatched: Dispatched
) -> Issue | None:
    """The issue called ``slug`` if it is on the web on ``today``, or None (unknown,
    unloadable, not yet due, not sent or taken off)."""
    # Looked up among the files listed, never built from the URL, so no slug can
    # reach outside issues_dir.
    path = _issue_files(issues_dir).get(slug)
    loaded = _load(path) if path else None
    return loaded.issue if loaded is not None and _on_the_web(loaded, today, dispatched) else None


def atom_feed(issues: list[Issue], config: Config) -> bytes:
    """The Atom feed of ``issues`` (newest first), linking each to its web version."""
    base = config.newsletter.base_url
    ET.register_namespace("", ATOM)
    feed = ET.Element(f"{{{ATOM}}}feed")
    _child(feed, "id", f"{base}/")
    _child(feed, "title", config.newsletter.name)
    newest = issues[0].date if issues else dt.date(1970, 1, 1)
    _child(feed, "updated", _timestamp(newest))
    _child(feed, "link", href=f"{base}/feed.xml", rel="self", type="application/atom+xml")
    _child(feed, "link", href=f"{base}/", rel="alternate", type="text/html")
    author = _child(feed, "author")
    _child(author, "name", config.newsletter.name)
    for issue in (typeset(issue, config) for issue in issues):
        entry = _child(feed, "entry")
        entry.set(XML_LANG, issue.lang)
        url = web_url(issue, config)
        _child(entry, "id", url)
        _child(entry, "title", issue.title)
        _child(entry, "updated", _timestamp(issue.date))
        _child(entry, "link", href=url, rel="alternate", type="text/html")
        if issue.author:
            _child(_child(entry, "author"), "name", issue.author)
        if issue.subtitle or issue.preheader:
            _child(entry, "summary", issue.subtitle or issue.preheader)
    document: bytes = ET.tostring(feed, encoding="utf-8", xml_declaration=True)
    return document


def _issue_files(issues_dir: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    # .toml first so that the .md twin, listed second, replaces it.
    for suffix in reversed(ISSUE_SUFFIXES):
        for path in sorted(issues_dir.glob(f"*{suffix}")):
            files[path.stem] = path
    return files


@dataclass(frozen=True)
class _Loaded:
    """An issue file as loaded, with what finds its dispatch."""

    issue: Issue
    identity: IssueIdentity


def _on_the_web(loaded: _Loaded, today: dt.date, dispatched: Dispatched) -> bool:
    issue = loaded.issue
    if issue.date > today:
        return False
    if issue.published is not None:
        return issue.published
    return was_dispatched(loaded.identity, dispatched())


def _load(path: Path) -> _Loaded | None:
    try:
        return _load_cached(path, path.stat().st_mtime_ns)
    except (OSError, NewsletterError) as exc:
        log.warning("%s: left out of the archive: %s", path, exc)
        return None


@lru_cache(maxsize=256)
def _load_cached(path: Path, mtime_ns: int) -> _Loaded:
    # mtime_ns is part of the cache key, so an edited file is loaded afresh; the content
    # digest is computed here once per version of the file, not on every page.
    issue = load_issue(path)
    return _Loaded(issue, IssueIdentity.of(issue))


def _child(parent: ET.Element, tag: str, text: str = "", **attributes: str) -> ET.Element:
    element = ET.SubElement(parent, f"{{{ATOM}}}{tag}", attributes)
    if text:
        element.text = text
    return element


def _timestamp(day: dt.date) -> str:
    return f"{day.isoformat()}T00:00:00Z"
