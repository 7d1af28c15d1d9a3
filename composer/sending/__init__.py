"""Sending: the outbox, send-test and the dispatch to the whole list.

    personalise (compose once, serialise once, substitute per recipient)
      → transport (one SMTP connection; the only module that talks to aiosmtplib)
      → dispatch (a pool of connections, retries, rate, journal, progress)

The values passed between them live here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from composer.model import Tier

# The closed vocabulary of what happened to one recipient, as the journal records it.
State = Literal["pending", "sending", "sent", "deferred", "failed"]
STATES: tuple[State, ...] = ("pending", "sending", "sent", "deferred", "failed")


@dataclass(frozen=True)
class Recipient:
    """Who one message goes to. ``key`` is the subscriber's normalised address (what the
    unsubscribe link carries); ``subscriber_id`` is None for a test address."""

    email: str
    name: str = ""
    key: str = ""
    tier: Tier = "paid"
    subscriber_id: int | None = None

    @property
    def journal_id(self) -> int:
        """The id the dispatch journal records this recipient under."""
        if self.subscriber_id is None:
            raise ValueError(f"{self.email} is not a subscriber")
        return self.subscriber_id


@dataclass(frozen=True)
class Outcome:
    """What one attempt (or the last attempt) at one recipient came to.

    ``retryable`` says whether ``send --retry-failed`` may try a failed recipient again:
    true for a temporary cause that ran out of attempts or a server error about the
    message, false for a refused or bounced address. ``bounced`` marks a 5.1.x reply.
    """

    recipient: Recipient
    state: State
    attempts: int
    code: int | None = None
    reply: str = ""
    retryable: bool = False
    bounced: bool = False
