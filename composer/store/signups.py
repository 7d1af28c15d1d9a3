"""A reader's own signup and confirmation: the rules every store applies.

``POST /subscribe`` on ``serve`` becomes a :class:`Signup`; the store reads the
address's row and when it was last sent a confirmation, asks :func:`plan_signup`
what to do, and writes that with the mail it calls for, in one transaction. The
rules, made so that a form can neither reveal nor change who is subscribed:

- a new address is ``pending`` and gets a link to confirm (with double opt-in off,
  it is ``active`` at once and welcomed);
- an active reader is left as they are and sent nothing;
- a pending reader, or one who unsubscribed, bounced or complained, gets a link to
  confirm, and nothing else changes: only following that link brings back someone
  who left, whether double opt-in is on or off (off, a pending reader is made active);
- no address gets more than one confirmation within :data:`CONFIRMATION_INTERVAL`,
  however often it is submitted.

Following the link (:func:`plan_confirmation`) makes the reader active and queues
their welcome; doing it twice changes nothing. A reader who never confirms is
deleted :data:`CONFIRM_DAYS` after signing up, so a later signup starts afresh.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from composer.store import Status, Subscriber
from composer.store.mailqueue import CONFIRMATION_INTERVAL, MailKind

# What one signup did, for the service's log and the tests; never shown to the client.
SignupAction = Literal["pending", "subscribed", "confirm_again", "nothing", "limited"]


@dataclass(frozen=True, kw_only=True)
class Signup:
    """A signup as the form gave it: the address as typed, its key, and a name."""

    email: str
    key: str
    name: str = ""


@dataclass(frozen=True, kw_only=True)
class SignupPlan:
    """What a signup does: the status to write (None: the row stays as it is) and the
    mail to queue (None: none)."""

    action: SignupAction
    status: Status | None = None
    mail: MailKind | None = None


@dataclass(frozen=True, kw_only=True)
class SignupResult:
    """What came of one signup."""

    key: str
    action: SignupAction


@dataclass(frozen=True, kw_only=True)
class Confirmation:
    """A verified confirmation link: whose it is, as they typed it at signup."""

    key: str
    email: str


def plan_signup(
    old: Subscriber | None,
    *,
    double_opt_in: bool,
    last_confirmation: dt.datetime | None,
    now: dt.datetime,
    suppressed: bool = False,
) -> SignupPlan:
    """What a signup of the address whose row is ``old`` does; ``last_confirmation`` is
    when a confirmation was last queued for it (None: never); ``suppressed``, whether the
    address is an erased reader's (:mod:`composer.store.personal`), who, like one who
    left, comes back only by confirming, and until then has no row."""
    limited = last_confirmation is not None and now - last_confirmation < CONFIRMATION_INTERVAL
    if old is None and suppressed:
        return SignupPlan(
            action="limited" if limited else "confirm_again", mail=None if limited else "confirm"
        )
    if old is None:
        if not double_opt_in:
            return SignupPlan(action="subscribed", status="active", mail="welcome")
        return SignupPlan(action="pending", status="pending", mail=None if limited else "confirm")
    if old.status == "active":
        return SignupPlan(action="nothing")
    if old.status == "pending" and not double_opt_in:
        return SignupPlan(action="subscribed", status="active", mail="welcome")
    if limited:
        return SignupPlan(action="limited")
    return SignupPlan(action="confirm_again", mail="confirm")


def plan_confirmation(old: Subscriber | None) -> Literal["add", "activate", "already"]:
    """What following a valid confirmation link does for the reader whose row is ``old``:
    add them active (their pending row expired meanwhile, or the list was rebuilt),
    make them active (pending, or back after leaving), or nothing."""
    if old is None:
        return "add"
    return "already" if old.status == "active" else "activate"
