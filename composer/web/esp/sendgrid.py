"""SendGrid's Signed Event Webhook at ``/webhooks/sendgrid``.

SendGrid signs each request with its ECDSA P-256 key: the signature (base64, DER) in
``X-Twilio-Email-Event-Webhook-Signature`` is over the bytes of
``X-Twilio-Email-Event-Webhook-Timestamp`` followed by the body exactly as sent, and is
checked with the public key SendGrid shows when signing is turned on (base64 DER, or
PEM). A missing or wrong signature, or a timestamp older than ``max_age``, is refused.
The body is a JSON array of events: ``bounce`` (hard; soft when its ``type`` is
``blocked``), ``deferred`` (soft), ``spamreport`` (a complaint) and ``dropped`` when its
reason is about the address (below); every other event records nothing. Each is keyed
by its ``sg_event_id``; ``smtp-id`` is the copy's Message-ID.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from composer.errors import MalformedWebhook, WebhookRefused
from composer.store.feedback import Feedback, FeedbackKind
from composer.web.esp import (
    angle_bracketed,
    check_fresh,
    epoch_moment,
    optional_text,
    parse_json,
    required,
)

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
# Why SendGrid dropped a copy without trying, when the reason is the address.
DROPPED_KINDS: dict[str, FeedbackKind] = {
    "Bounced Address": "hard",
    "Invalid": "hard",
    "Spam Reporting Address": "complaint",
}


@dataclass(frozen=True)
class SendgridWebhook:
    """SendGrid's events, signed with the key whose public half is ``public_key``."""

    public_key: ec.EllipticCurvePublicKey
    max_age: float
    source: Literal["sendgrid"] = "sendgrid"

    def read(self, body: bytes, headers: Mapping[str, str], now: float) -> list[Feedback]:
        self.verify(body, headers.get(SIGNATURE_HEADER, ""), headers.get(TIMESTAMP_HEADER, ""), now)
        events = parse_json(body)
        if not isinstance(events, list):
            raise MalformedWebhook("not a JSON array of events")
        return [found for event in events if (found := event_feedback(event)) is not None]

    def verify(self, body: bytes, signature: str, timestamp: str, now: float) -> None:
        """Refuse unless ``signature`` signs ``timestamp`` and ``body``, and the timestamp
        is recent."""
        if not signature or not timestamp:
            raise WebhookRefused(f"no {SIGNATURE_HEADER} or {TIMESTAMP_HEADER}")
        try:
            der = base64.b64decode(signature, validate=True)
            self.public_key.verify(der, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        except (binascii.Error, InvalidSignature) as exc:
            raise WebhookRefused("the SendGrid signature does not verify") from exc
        try:
            signed_at = float(timestamp)
        except ValueError as exc:
            raise WebhookRefused(f"not a timestamp: {timestamp[:50]!r}") from exc
        check_fresh(signed_at, now, self.max_age)


def load_public_key(text: str) -> ec.EllipticCurvePublicKey:
    """The verification key as SendGrid shows it (base64 DER) or as PEM; ValueError when
    it is neither, or not a P-256 key."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not a public key in base64 DER or PEM") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("not an ECDSA P-256 public key")
    return key


def event_feedback(event: Any) -> Feedback | None:
    """The bounce or complaint one SendGrid event reports, if it is one."""
    name = required(event, "event")
    reason = optional_text(event, "reason") or optional_text(event, "response")
    kind: FeedbackKind | None
    match name:
        case "bounce":
            kind = "soft" if optional_text(event, "type") == "blocked" else "hard"
        case "deferred":
            kind = "soft"
        case "spamreport":
            kind = "complaint"
        case "dropped":
            kind = DROPPED_KINDS.get(reason)
        case _:
            kind = None
    if kind is None:
        return None
    timestamp = event.get("timestamp")
    if not isinstance(timestamp, int | float) or isinstance(timestamp, bool):
        raise MalformedWebhook("an event without a timestamp")
    status = optional_text(event, "status")
    return Feedback(
        kind=kind,
        source="sendgrid",
        event_id=required(event, "sg_event_id"),
        reason=" ".join(part for part in (f"{name}:", status, reason) if part),
        occurred_at=epoch_moment(timestamp),
        message_id=angle_bracketed(optional_text(event, "smtp-id")),
        recipient=required(event, "email"),
    )
