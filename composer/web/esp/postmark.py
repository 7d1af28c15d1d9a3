"""Postmark's bounce and spam-complaint webhooks at ``/webhooks/postmark``.

Postmark authenticates its webhooks the way its documentation gives: HTTP Basic auth
credentials written into the webhook's URL (``https://USER:PASSWORD@…/webhooks/postmark``),
checked here in constant time. Postmark signs no timestamp; a request sent again is
caught by its event's ``ID``. One record a request: ``RecordType`` ``Bounce`` (its
``Type`` says hard, soft or a complaint, below) or ``SpamComplaint``; deliveries, opens,
clicks and the bounce types that are not about the reader (auto-replies, subscription
requests…) record nothing. Postmark's ``MessageID`` is its own, not the copy's
Message-ID, so the event finds its copy by the recipient.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from composer.errors import WebhookRefused
from composer.store.feedback import Feedback, FeedbackKind
from composer.web.esp import iso_moment, optional_text, parse_json, required

# Postmark's bounce types that say something about the reader's address.
BOUNCE_KINDS: dict[str, FeedbackKind] = {
    "HardBounce": "hard",
    "BadEmailAddress": "hard",
    "SoftBounce": "soft",
    "Transient": "soft",
    "DnsError": "soft",
    "SpamNotification": "soft",
    "SpamComplaint": "complaint",
}


@dataclass(frozen=True)
class PostmarkWebhook:
    """Postmark's webhooks, sent with the Basic auth ``username`` and ``password``."""

    username: str
    password: str = field(repr=False)
    source: Literal["postmark"] = "postmark"

    def read(self, body: bytes, headers: Mapping[str, str], now: float) -> list[Feedback]:
        self.authenticate(headers.get("authorization", ""))
        record = parse_json(body)
        record_type = required(record, "RecordType")
        if record_type == "SpamComplaint":
            kind: FeedbackKind | None = "complaint"
        elif record_type == "Bounce":
            kind = BOUNCE_KINDS.get(required(record, "Type"))
        else:
            kind = None
        if kind is None:
            return []
        event_id = required(record, "ID", int)
        reason = " ".join(
            part
            for part in (
                f"{optional_text(record, 'Type')}:",
                optional_text(record, "Description"),
                optional_text(record, "Details"),
            )
            if part
        )
        return [
            Feedback(
                kind=kind,
                source="postmark",
                event_id=f"{record_type}/{event_id}",
                reason=reason,
                occurred_at=iso_moment(required(record, "BouncedAt")),
                recipient=required(record, "Email"),
            )
        ]

    def authenticate(self, authorization: str) -> None:
        """Refuse a request without this webhook's Basic auth credentials."""
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            raise WebhookRefused("no Basic auth credentials")
        try:
            given = base64.b64decode(encoded.strip(), validate=True)
        except binascii.Error as exc:
            raise WebhookRefused("Basic auth credentials not base64") from exc
        expected = f"{self.username}:{self.password}".encode()
        if not hmac.compare_digest(given, expected):
            raise WebhookRefused("wrong Basic auth credentials")
