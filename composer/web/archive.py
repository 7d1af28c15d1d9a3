"""The published issues: which files under issues/ are public, and their Atom feed.

An issue is published once its date has come (today or earlier, UTC), so a draft
dated next Friday stays private while it is being written. Where an issue exists
as both ``<slug>.md`` and ``<slug>.toml`` twins, the Markdown file is the one used.
"""

from __future__ import annotations

import datetime as dt
import logging
from functools import lru_cache
from pathlib import Path
from xml.etree import ElementTree as ET

from composer.composing.load import load_issue
from composer.composing.render import web_url
from composer.composing.typography import typeset
from composer.config import Config
from composer.errors import NewsletterError
from composer.model import Issue

log = logging.getLogger(__name__)
ATOM = "http://www.w3.org/2005/Atom"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
ISSUE_SUFFIXES = (".md", ".toml")


def published_issues(issues_dir: Path, today: dt.date) -> list[Issue]:
    """Every issue under ``issues_dir`` dated ``today`` or earlier, newest first.
    A file that does not load is logged and left out, never fatal to the archive."""
    issues = [
        issue
        for path in _issue_files(issues_dir).values()
        if (issue := _load(path)) is not None and issue.date <= today
    ]
    return sorted(issues, key=lambda issue: (issue.date, issue.slug), reverse=True)


def find_published(issues_dir: Path, slug: str, today: dt.date) -> Issue | None:
    """The published issue called ``slug``, or None (unknown, unloadable or not yet due)."""
    # Looked up among the files listed, never built from the URL, so no slug can
    # reach outside issues_dir.
    path = _issue_files(issues_dir).get(slug)
    issue = _load(path) if path else None
    return issue if issue is not None and issue.date <= today else None


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


def _load(path: Path) -> Issue | None:
    try:
        return _load_cached(path, path.stat().st_mtime_ns)
    except (OSError, NewsletterError) as exc:
        log.warning("%s: left out of the archive: %s", path, exc)
        return None


@lru_cache(maxsize=256)
def _load_cached(path: Path, mtime_ns: int) -> Issue:
    # mtime_ns is part of the cache key, so an edited file is loaded afresh.
    return load_issue(path)


def _child(parent: ET.Element, tag: str, text: str = "", **attributes: str) -> ET.Element:
    element = ET.SubElement(parent, f"{{{ATOM}}}{tag}", attributes)
    if text:
        element.text = text
    return element


def _timestamp(day: dt.date) -> str:
    return f"{day.isoformat()}T00:00:00Z"
