"""The queue of transactional mail (confirmations and welcomes): its vocabulary and rules.

Each message a signup calls for is a row, inserted in the same transaction as the
signup itself, so a reader is never left pending without their link. ``serve``
drains the queue in the background (:mod:`composer.sending.transactional`) by the
rules of a dispatch: the row is marked ``sending`` before the SMTP transaction and
``sent`` only after the server's 250, durably; a temporary failure goes back to
``queued`` with its next attempt later; a permanent one, or the last attempt, is
``failed`` with the server's reply. A row left ``sending`` by a process that was
killed is queued again when the next one starts: it may have arrived, so at most one
message per connection can arrive twice (with the same Message-ID), and none is lost.

The rules here are the same for every store; a backend only reads and writes rows.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal, get_args

from composer.model import Tier

# What a message is: the link to confirm a signup, or the welcome once confirmed.
MailKind = Literal["confirm", "welcome"]
MAIL_KINDS: tuple[MailKind, ...] = get_args(MailKind)
MailState = Literal["queued", "sending", "sent", "failed"]
MAIL_STATES: tuple[MailState, ...] = get_args(MailState)

# A confirmation link works this long, and a pending reader is kept this long.
CONFIRM_DAYS = 7
# At most one confirmation to an address within this long, whatever is submitted.
CONFIRMATION_INTERVAL = dt.timedelta(days=1)


@dataclass(frozen=True, kw_only=True)
class NewMail:
    """A message to queue for the reader ``key`` at ``email``."""

    kind: MailKind
    key: str
    email: str
    name: str = ""
    tier: Tier = "free"


@dataclass(frozen=True, kw_only=True)
class QueuedMail:
    """A queued message as stored: what is needed to build it, and where it stands.
    ``created_at`` dates a confirmation link (it expires :data:`CONFIRM_DAYS` later)."""

    id: int
    kind: MailKind
    key: str
    email: str
    name: str
    tier: Tier
    state: MailState
    attempts: int
    created_at: dt.datetime

    @property
    def expires_at(self) -> dt.datetime:
        """When a confirmation link in this message stops working."""
        return self.created_at + dt.timedelta(days=CONFIRM_DAYS)


@dataclass(frozen=True, kw_only=True)
class MailOutcome:
    """Where message ``id`` stands now. ``attempts`` counts this one (``sending``
    starts an attempt); ``next_attempt_at`` is when a ``queued`` one is tried again."""

    id: int
    state: MailState
    attempts: int
    reply: str = ""
    next_attempt_at: dt.datetime | None = None
