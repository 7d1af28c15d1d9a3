"""What email service providers report back, read from their webhooks: each module
verifies one service's requests by that service's own method and turns its events into
:class:`~composer.store.feedback.Feedback` values, or refuses the request
(:class:`~composer.errors.WebhookRefused`: 401, nothing recorded).

    sns.py       Amazon SNS message signatures (SignatureVersion 1 and 2), with the
                 signing certificate fetched only from sns.<region>.amazonaws.com over
                 HTTPS (:class:`~composer.web.esp.sns.SnsFetcher`, the one network door)
    ses.py       Amazon SES bounce and complaint notifications, carried by SNS
    postmark.py  Postmark bounce and spam-complaint webhooks, HTTP Basic auth
    mailgun.py   Mailgun webhooks, HMAC-SHA256 of timestamp and token
    sendgrid.py  SendGrid's Signed Event Webhook, ECDSA P-256

Each is a :class:`Webhook`; :mod:`composer.web.webhooks` serves them and records what
they read. Where a service signs a timestamp, one older than ``max_age`` seconds is
refused (:func:`check_fresh`); an event seen before is left to the store, which keeps
every event under ``(source, event_id)`` and changes nothing the second time.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any, Protocol

from composer.config import WebhookService
from composer.errors import MalformedWebhook, WebhookRefused
from composer.store.feedback import Feedback

# How far ahead of this machine's clock a signed timestamp may be (clocks drift).
CLOCK_SKEW_SECONDS = 60.0


class Webhook(Protocol):
    """One service's webhook: ``read`` verifies a request and returns the events in it
    (none for what is not a bounce or a complaint), or raises :class:`WebhookRefused`
    (or :class:`MalformedWebhook` for a verified request it cannot read)."""

    @property
    def source(self) -> WebhookService:
        """The service, as the store records where an event came from."""

    def read(self, body: bytes, headers: Mapping[str, str], now: float) -> list[Feedback]: ...


def check_fresh(signed_at: float, now: float, max_age: float) -> None:
    """Refuse a request whose signed timestamp is more than ``max_age`` seconds old (a
    replay of a captured request) or from the future beyond the clocks' drift."""
    if now - signed_at > max_age:
        raise WebhookRefused(f"signed {now - signed_at:.0f} s ago, more than {max_age:.0f} s")
    if signed_at - now > CLOCK_SKEW_SECONDS:
        raise WebhookRefused(f"signed {signed_at - now:.0f} s in the future")


def parse_json(body: bytes) -> Any:
    """``body`` read as JSON."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedWebhook(f"not JSON: {exc}") from exc


def required(record: Mapping[str, Any], name: str, kind: type = str) -> Any:
    """``record[name]``, which must be a ``kind``."""
    value = record.get(name) if isinstance(record, Mapping) else None
    if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
        raise MalformedWebhook(f"no {name} of type {kind.__name__}")
    return value


def optional_text(record: Mapping[str, Any], name: str) -> str:
    """``record[name]`` as text, empty when it is missing or null."""
    value = record.get(name)
    return "" if value is None else str(value)


def optional_section(record: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """``record[name]`` when it is an object, else an empty one."""
    value = record.get(name)
    return value if isinstance(value, Mapping) else {}


def iso_moment(text: str) -> dt.datetime:
    """An ISO 8601 time as the services write it (``Z`` for UTC), aware."""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise MalformedWebhook(f"not an ISO 8601 time: {text!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def epoch_moment(seconds: float) -> dt.datetime:
    """A Unix time as an aware datetime."""
    try:
        return dt.datetime.fromtimestamp(seconds, dt.UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise MalformedWebhook(f"not a Unix time: {seconds!r}") from exc


def angle_bracketed(message_id: str) -> str | None:
    """A Message-ID as the journal keeps it, in angle brackets (some services drop
    them); None for an empty one."""
    message_id = message_id.strip()
    if not message_id:
        return None
    return message_id if message_id.startswith("<") else f"<{message_id}>"
