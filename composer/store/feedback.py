"""Mail that comes back: bounces and complaints, and what each does to the list.

A relay takes almost every message at once; most failures come back later, as a
delivery status notification (DSN) to the envelope sender, and complaints as ARF
reports or an ESP's webhook. Whatever read one (the bounce mailbox, a webhook) turns
it into a :class:`Feedback`, and :meth:`SubscriberStore.record_feedback` applies it.
Auto-replies (vacation, out of office) never become a Feedback.

The policy, the same in every store (:func:`decide`):

- a permanent failure (``hard``) marks the reader bounced at once;
- a temporary one (``soft``) is counted; ``soft_limit`` of them (3 by default) for
  different dispatches since the reader was last (re)activated make a bounce;
- a complaint marks the reader complained, whatever they were: they are never mailed
  again, and no import brings them back (:func:`composer.store.classify` keeps every
  inactive reader as they are);
- only an active reader becomes bounced: an unsubscribe stays an unsubscribe;
- the copy's delivery moves to ``bounced`` (a hard failure, or the soft one that made
  the bounce) or ``complained``, so no rerun sends it again.

A report names its copy in up to three ways, tried in this order: the return token
of the VERP address it came back to (:mod:`composer.returnpath`), the copy's
Message-ID, the original recipient (their latest delivery). Every event is kept with
its raw reason, matched or not, under ``(source, event_id)``: the same event again
(a webhook retried, a mailbox read twice) changes nothing.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Literal, get_args

from composer.store import InactiveStatus, Status
from composer.store.deliveries import State

FeedbackKind = Literal["hard", "soft", "complaint"]
FEEDBACK_KINDS: tuple[FeedbackKind, ...] = get_args(FeedbackKind)
# Where a report came from: the bounce mailbox, or an ESP's webhook.
FeedbackSource = Literal["mailbox", "ses", "postmark", "mailgun", "sendgrid"]
FEEDBACK_SOURCES: tuple[FeedbackSource, ...] = get_args(FeedbackSource)
# What recording one event did. ``duplicate``: that event was recorded before, nothing
# changed; ``unmatched``: no copy or reader found, kept for the list; ``ignored``: the
# reader was already inactive (or already complained), the event is kept and nothing
# else changed.
FeedbackEffect = Literal["bounced", "complained", "counted", "duplicate", "unmatched", "ignored"]
FEEDBACK_EFFECTS: tuple[FeedbackEffect, ...] = get_args(FeedbackEffect)

SOFT_LIMIT = 3
MAX_REASON_CHARS = 1000
MAX_EVENT_ID_CHARS = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True, kw_only=True)
class Feedback:
    """One bounce or complaint as reported. ``event_id`` is unique within ``source``
    (for a mailbox report, its Message-ID or a digest of it). ``reason`` is the status
    and diagnostic as the report gave them, made one line and cut to
    :data:`MAX_REASON_CHARS`. ``message_id`` is the returned copy's Message-ID (angle
    brackets included), ``recipient`` the original recipient, ``return_token`` the
    token of the VERP address the report came back to, once whoever read the report
    has checked its signature (:meth:`composer.returnpath.ReturnPaths.token_of`): an
    unverified token must not be passed."""

    kind: FeedbackKind
    source: str
    event_id: str
    reason: str
    occurred_at: dt.datetime
    message_id: str | None = None
    recipient: str | None = None
    return_token: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in FEEDBACK_KINDS:
            raise ValueError(f"feedback kind must be one of {FEEDBACK_KINDS}, not {self.kind!r}")
        if not self.source or not self.event_id:
            raise ValueError("feedback needs a source and an event_id")
        if self.occurred_at.tzinfo is None:
            raise ValueError("feedback occurred_at must be an aware datetime")
        object.__setattr__(self, "event_id", self.event_id[:MAX_EVENT_ID_CHARS])
        object.__setattr__(self, "reason", one_line(self.reason)[:MAX_REASON_CHARS])


@dataclass(frozen=True, kw_only=True)
class FeedbackResult:
    """What recording ``feedback`` did, and what it matched: the reader's address
    (``email``, None when unmatched) and the dispatch's key (``dispatch``, None when no
    copy was found)."""

    feedback: Feedback
    effect: FeedbackEffect
    email: str | None = None
    dispatch: str | None = None


@dataclass(frozen=True, kw_only=True)
class FeedbackRecord:
    """One recorded event, as ``newsletter bounces list`` shows it."""

    feedback: Feedback
    effect: FeedbackEffect
    email: str | None
    dispatch: str | None
    recorded_at: dt.datetime


@dataclass(frozen=True, kw_only=True)
class FeedbackCounts:
    """The events recorded against one dispatch, by kind (duplicates not counted)."""

    hard: int = 0
    soft: int = 0
    complaint: int = 0

    @property
    def total(self) -> int:
        return self.hard + self.soft + self.complaint


@dataclass(frozen=True, kw_only=True)
class Decision:
    """What one matched event does: its effect, the status the reader moves to (None:
    unchanged) and the state their copy moves to (None: unchanged)."""

    effect: FeedbackEffect
    status: InactiveStatus | None = None
    delivery_state: State | None = None


def decide(kind: FeedbackKind, status: Status, soft_dispatches: int, soft_limit: int) -> Decision:
    """What an event of ``kind`` does to a reader now ``status`` whose soft failures,
    this one included, came from ``soft_dispatches`` different dispatches since they
    were last (re)activated."""
    if kind == "complaint":
        if status == "complained":
            return Decision(effect="ignored", delivery_state="complained")
        return Decision(effect="complained", status="complained", delivery_state="complained")
    if status != "active":
        return Decision(effect="ignored", delivery_state="bounced" if kind == "hard" else None)
    if kind == "hard" or soft_dispatches >= max(1, soft_limit):
        return Decision(effect="bounced", status="bounced", delivery_state="bounced")
    return Decision(effect="counted")


def moves_delivery(current: State, to: State) -> bool:
    """Whether a copy recorded as ``current`` moves to ``to``: a complaint outranks a
    bounce, and nothing moves a complaint back."""
    return current != to and current != "complained"


def feedback_reason(kind: FeedbackKind, source: str, dispatch: str | None, reason: str) -> str:
    """The status reason a reader moved by an event is marked with."""
    what = {"hard": "bounced", "soft": "soft-bounced", "complaint": "complained"}[kind]
    about = f" about {dispatch}" if dispatch else ""
    return f"{what} ({source}){about}: {reason}"[:500]


def one_line(text: str) -> str:
    """``text`` with every run of control characters (line breaks among them) made one
    space, and trimmed."""
    return _CONTROL.sub(" ", text).strip()
