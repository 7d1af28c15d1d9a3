"""Joining and leaving the list: address checks, ``subscribers add`` and ``remove``, and a
reader's own unsubscribe."""

from __future__ import annotations

from email_validator import EmailNotValidError, caching_resolver, validate_email

from composer.errors import AddressRejected, SubscriberError
from composer.model import Tier
from composer.store import Change, NewSubscriber, Subscriber, SubscriberStore, address_key


class AddressChecker:
    """Validates addresses with email-validator and returns their key
    (:func:`composer.store.address_key`).

    Syntax only by default; with ``check_deliverability`` the domain's MX records are
    looked up too, through one caching resolver so a list with thousands of
    addresses at the same provider asks the DNS once.
    """

    def __init__(self, *, check_deliverability: bool = False, dns_timeout: int = 5) -> None:
        self.check_deliverability = check_deliverability
        self._resolver = caching_resolver(timeout=dns_timeout) if check_deliverability else None

    def key(self, value: str) -> str:
        """The address's key (email-validator's normalised form, lower-cased), or
        :class:`AddressRejected`."""
        try:
            checked = validate_email(
                value,
                check_deliverability=self.check_deliverability,
                dns_resolver=self._resolver,
            )
        except EmailNotValidError as exc:
            raise AddressRejected(value, str(exc)) from exc
        return address_key(checked.normalized)


def checked_key(email: str, checker: AddressChecker | None = None) -> str:
    """The key of ``email`` as the editor typed it (surrounding spaces ignored), or
    :class:`SubscriberError` saying why it is not an address."""
    email = email.strip()
    try:
        return (checker or AddressChecker()).key(email)
    except AddressRejected as exc:
        raise SubscriberError(f"{email!r} is not a valid address: {exc.reason}") from exc


def add_subscriber(
    store: SubscriberStore,
    email: str,
    *,
    name: str | None = None,
    tier: Tier | None = None,
    resubscribe: bool = False,
    checker: AddressChecker | None = None,
) -> tuple[Subscriber, Change]:
    """Add ``email`` or update its name and tier; an unsubscribed, bounced or complained
    address is refused unless ``resubscribe`` says the person asked to come back."""
    email = email.strip()
    key = checked_key(email, checker)
    new = NewSubscriber(email=email, key=key, name=name, tier=tier)
    reason = "added by the editor" + (" with --resubscribe" if resubscribe else "")
    subscriber, change = store.save(new, resubscribe=resubscribe, reason=reason)
    if change == "kept_inactive":
        raise SubscriberError(
            f"{subscriber.email} is {subscriber.status} since"
            f" {subscriber.status_changed_at:%Y-%m-%d} ({subscriber.status_reason});"
            " left as it is: pass --resubscribe only if they asked to come back"
        )
    return subscriber, change


def remove_subscriber(store: SubscriberStore, email: str) -> tuple[Subscriber, bool]:
    """Unsubscribe ``email``, active or pending (the row stays, so no import can bring it
    back); returns the subscriber and whether anything changed (False when it was already
    inactive)."""
    email = email.strip()
    key = checked_key(email)
    subscriber = store.get(key)
    if subscriber is None:
        raise SubscriberError(f"{email} is not on the list; nothing to remove")
    if subscriber.status not in ("active", "pending"):
        return subscriber, False
    marked = store.mark_status(key, "unsubscribed", "removed by the editor")
    assert marked is not None
    return marked, True


def record_unsubscribe(
    store: SubscriberStore, key: str, email: str, reason: str
) -> Subscriber | None:
    """Record that the reader ``key`` (``email`` as their link carries it) asked to leave.
    An address no longer on the list (a database rebuilt from an old export) is added
    unsubscribed, so that no later import can add it back; an erased one, already
    suppressed, is left alone (None). Doing it twice changes nothing."""
    subscriber = store.mark_status(key, "unsubscribed", reason)
    if subscriber is not None or store.is_suppressed(key):
        return subscriber
    new = NewSubscriber(email=email, key=key, status="unsubscribed", status_reason=reason)
    return store.save(new)[0]
