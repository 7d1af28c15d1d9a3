"""What one composition of the previewed issue is (:class:`Snapshot`: every tier's
email, or the :class:`PreviewError` that stopped it), and the subscriber a preview may
be shown as (:class:`Reader`), with their own copy (:func:`email_copy`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from composer.composing.check import Finding
from composer.composing.pipeline import ComposedIssue, ReaderUrls, generic_urls
from composer.config import Config
from composer.errors import IssueError, NewsletterError, SubscriberError, location
from composer.model import Tier
from composer.reader_links import ReaderLinks
from composer.store import Subscriber, open_store
from composer.store.membership import checked_key
from composer.unsubscribe import UnsubscribeLinks


@dataclass(frozen=True)
class PreviewError:
    """Why the latest composition failed: ``where`` is ``file:line:column`` when known."""

    where: str | None
    reason: str

    @classmethod
    def from_exception(cls, exc: Exception) -> PreviewError:
        if isinstance(exc, IssueError):
            return cls(location(exc.path, exc.line, exc.column), exc.reason)
        if isinstance(exc, NewsletterError):
            return cls(None, exc.message)
        return cls(None, f"unexpected {type(exc).__name__}: {exc} (details in the terminal)")

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}" if self.where else self.reason


@dataclass(frozen=True)
class Snapshot:
    """One composition of the issue: every tier's email with the placeholder unsubscribe
    link still in it, and the check findings (None until the check has run); or the
    error instead of both."""

    version: int
    composed: Mapping[Tier, ComposedIssue] = field(default_factory=dict)
    findings: tuple[Finding, ...] | None = None
    config: Config | None = None
    error: PreviewError | None = None
    milliseconds: float = 0.0


@dataclass(frozen=True)
class Reader:
    """A subscriber the preview is shown as: their tier and their own links."""

    subscriber: Subscriber
    links: UnsubscribeLinks
    reader_links: ReaderLinks


def find_reader(config: Config, email: str) -> Reader:
    """The subscriber ``email`` on ``config``'s list, or :class:`SubscriberError`."""
    database = config.subscribers.database
    # Looking someone up must not leave an empty database behind as a side effect.
    if database is not None and not database.exists():
        raise SubscriberError(f"no subscriber list yet at {database}; add subscribers first")
    key = checked_key(email)
    with open_store(config.subscribers) as store:
        subscriber = store.get(key)
    if subscriber is None:
        raise SubscriberError(f"{email} is not on the subscriber list")
    return Reader(subscriber, UnsubscribeLinks.from_config(config), ReaderLinks.from_config(config))


def email_copy(snapshot: Snapshot, tier: Tier, reader: Reader | None = None) -> ComposedIssue:
    """The copy a reader of ``tier`` gets, as ``build`` writes it, or ``reader``'s own copy
    (their tier, their own links)."""
    assert snapshot.config is not None and not snapshot.error
    if reader is None:
        composed = snapshot.composed[tier]
        return composed.with_urls(generic_urls(composed.issue, snapshot.config))
    composed = snapshot.composed[reader.subscriber.tier]
    key, slug = reader.subscriber.key, composed.issue.slug
    urls = ReaderUrls(
        unsubscribe=reader.links.url(key, slug),
        manage=reader.reader_links.manage_url(key),
        web=reader.reader_links.web_url(key, slug),
    )
    return composed.with_urls(urls)
