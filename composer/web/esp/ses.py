"""Amazon SES's bounce and complaint notifications, as an SNS topic delivers them to
``/webhooks/ses``.

The SNS message is verified first (:mod:`composer.web.esp.sns`), for the one topic
configured: SNS signs for every AWS account alike, so only the topic tells our
notifications from anyone else's. A ``SubscriptionConfirmation`` is confirmed by
fetching its ``SubscribeURL``. A ``Notification`` carries the SES notification as JSON
in its ``Message``: a bounce (``Permanent``: hard; ``Transient`` and ``Undetermined``:
soft) or a complaint (except one whose feedback type is ``not-spam``), one
:class:`Feedback` per recipient, keyed by the SES ``feedbackId`` and the recipient.
Deliveries and every other type record nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from composer.store.feedback import Feedback, FeedbackKind
from composer.web.esp import (
    angle_bracketed,
    iso_moment,
    optional_section,
    optional_text,
    parse_json,
    required,
)
from composer.web.esp.sns import SnsFetcher, verify

log = logging.getLogger(__name__)

BOUNCE_KINDS: dict[str, FeedbackKind] = {
    "Permanent": "hard",
    "Transient": "soft",
    "Undetermined": "soft",
}


@dataclass(frozen=True)
class SesWebhook:
    """SES notifications from the SNS topic ``topic_arn``."""

    topic_arn: str
    max_age: float
    fetcher: SnsFetcher
    source: Literal["ses"] = "ses"

    def read(self, body: bytes, headers: Mapping[str, str], now: float) -> list[Feedback]:
        message = parse_json(body)
        if not isinstance(message, dict):
            message = {}
        verify(message, self.fetcher, self.topic_arn, now, self.max_age)
        if message["Type"] == "SubscriptionConfirmation":
            self.fetcher.get(required(message, "SubscribeURL"))
            log.info("confirmed the SNS subscription to %s", self.topic_arn)
            return []
        if message["Type"] != "Notification":
            return []
        return notification_feedback(parse_json(required(message, "Message").encode()))


def notification_feedback(notification: Any) -> list[Feedback]:
    """The bounces and complaints of one SES notification (event publishing names its
    type ``eventType``, notifications ``notificationType``)."""
    if not isinstance(notification, dict):
        return []
    kind = notification.get("notificationType") or notification.get("eventType")
    mail = optional_section(notification, "mail")
    headers = optional_section(mail, "commonHeaders")
    message_id = angle_bracketed(optional_text(headers, "messageId"))
    if kind == "Bounce":
        return _bounces(required(notification, "bounce", dict), mail, message_id)
    if kind == "Complaint":
        return _complaints(required(notification, "complaint", dict), mail, message_id)
    return []


def _bounces(
    bounce: dict[str, Any], mail: Mapping[str, Any], message_id: str | None
) -> list[Feedback]:
    bounce_type = optional_text(bounce, "bounceType")
    kind = BOUNCE_KINDS.get(bounce_type, "soft")
    event = optional_text(bounce, "feedbackId") or f"{optional_text(mail, 'messageId')}/bounce"
    occurred = iso_moment(required(bounce, "timestamp"))
    found = []
    for recipient in required(bounce, "bouncedRecipients", list):
        address = required(recipient, "emailAddress")
        found.append(
            Feedback(
                kind=kind,
                source="ses",
                event_id=f"{event}/{address}",
                reason=" ".join(
                    part
                    for part in (
                        f"{bounce_type}/{optional_text(bounce, 'bounceSubType')}:",
                        optional_text(recipient, "status"),
                        optional_text(recipient, "diagnosticCode"),
                    )
                    if part
                ),
                occurred_at=occurred,
                message_id=message_id,
                recipient=address,
            )
        )
    return found


def _complaints(
    complaint: dict[str, Any], mail: Mapping[str, Any], message_id: str | None
) -> list[Feedback]:
    feedback_type = optional_text(complaint, "complaintFeedbackType")
    if feedback_type == "not-spam":
        return []  # the reader says it is not spam: the opposite of a complaint
    event = (
        optional_text(complaint, "feedbackId") or f"{optional_text(mail, 'messageId')}/complaint"
    )
    occurred = iso_moment(required(complaint, "timestamp"))
    reason = f"complaint ({feedback_type or 'no feedback type'})"
    if agent := optional_text(complaint, "userAgent"):
        reason += f" via {agent}"
    return [
        Feedback(
            kind="complaint",
            source="ses",
            event_id=f"{event}/{address}",
            reason=reason,
            occurred_at=occurred,
            message_id=message_id,
            recipient=address,
        )
        for recipient in required(complaint, "complainedRecipients", list)
        if (address := required(recipient, "emailAddress"))
    ]
