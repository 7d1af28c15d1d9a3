"""Mailgun's webhooks at ``/webhooks/mailgun``.

Each request carries ``signature``: a ``timestamp``, a random ``token`` and their
HMAC-SHA256 under the webhook signing key (Mailgun's dashboard, "Webhook signing key"),
hex-encoded. A signature that does not verify, or a timestamp older than ``max_age``, is
refused. ``event-data`` is one event: ``failed`` with ``severity`` ``permanent`` (hard)
or ``temporary`` (soft), or ``complained``; every other event records nothing. Its
``id`` keys it; the copy's Message-ID is in ``message.headers``, without the angle
brackets the journal keeps.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from composer.errors import MalformedWebhook, WebhookRefused
from composer.store.feedback import Feedback, FeedbackKind
from composer.web.esp import (
    angle_bracketed,
    check_fresh,
    epoch_moment,
    optional_section,
    optional_text,
    parse_json,
    required,
)

SEVERITY_KINDS: dict[str, FeedbackKind] = {"permanent": "hard", "temporary": "soft"}


@dataclass(frozen=True)
class MailgunWebhook:
    """Mailgun's webhooks, signed with ``signing_key``."""

    signing_key: bytes = field(repr=False)
    max_age: float
    source: Literal["mailgun"] = "mailgun"

    def read(self, body: bytes, headers: Mapping[str, str], now: float) -> list[Feedback]:
        payload = parse_json(body)
        try:
            signature = required(payload, "signature", dict)
            self.verify(
                required(signature, "timestamp"),
                required(signature, "token"),
                required(signature, "signature"),
                now,
            )
        except MalformedWebhook as exc:
            raise WebhookRefused(f"no signature: {exc}") from exc
        return event_feedback(required(payload, "event-data", dict))

    def verify(self, timestamp: str, token: str, signature: str, now: float) -> None:
        """Refuse unless ``signature`` is the HMAC of ``timestamp`` and ``token``, and the
        timestamp recent."""
        expected = hmac.new(self.signing_key, (timestamp + token).encode(), hashlib.sha256)
        if not hmac.compare_digest(expected.hexdigest(), signature.lower()):
            raise WebhookRefused("the Mailgun signature does not verify")
        try:
            signed_at = float(timestamp)
        except ValueError as exc:
            raise WebhookRefused(f"not a timestamp: {timestamp[:50]!r}") from exc
        check_fresh(signed_at, now, self.max_age)


def event_feedback(event: dict[str, Any]) -> list[Feedback]:
    """The bounce or complaint one Mailgun event reports, if it is one."""
    name = required(event, "event")
    if name == "complained":
        kind: FeedbackKind | None = "complaint"
    elif name == "failed":
        kind = SEVERITY_KINDS.get(optional_text(event, "severity"))
    else:
        kind = None
    if kind is None:
        return []
    status = optional_section(event, "delivery-status")
    reason = " ".join(
        part
        for part in (
            f"{name} ({optional_text(event, 'severity') or 'complaint'}):",
            optional_text(status, "code"),
            optional_text(status, "message") or optional_text(status, "description"),
            optional_text(event, "reason"),
        )
        if part
    )
    headers = optional_section(optional_section(event, "message"), "headers")
    timestamp = event.get("timestamp")
    if not isinstance(timestamp, int | float) or isinstance(timestamp, bool):
        raise MalformedWebhook("no timestamp in event-data")
    return [
        Feedback(
            kind=kind,
            source="mailgun",
            event_id=required(event, "id"),
            reason=reason,
            occurred_at=epoch_moment(timestamp),
            message_id=angle_bracketed(optional_text(headers, "message-id")),
            recipient=required(event, "recipient"),
        )
    ]
