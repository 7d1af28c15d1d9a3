"""A reader's own data: what they download (:class:`PersonalData`), and what erasing it
leaves behind (:func:`suppression_digest`).

Erasure removes the subscriber row, its status history, its deliveries, the bounces and
complaints matched to it and its confirmations and welcomes, and keeps
only a suppression: a one-way digest of the address key, so that no import and no
``subscribers add`` brings the address back (they report it suppressed), while the
address itself is gone. Only the person, signing up again and confirming it, lifts
the suppression (:meth:`~composer.store.SubscriberStore.confirm`).

The digest is a plain SHA-256 of the key under a fixed prefix, not an HMAC under the
newsletter's secret: a suppression must keep working when the secret is rotated or
lost, on a machine that imports without it, and in a copy of the store on another
database, since a suppression that silently stops matching lets an erased reader be
mailed again. What it gives away is only whether an address someone already holds was
erased from this list.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import asdict, dataclass

from composer.store import Status, Subscriber
from composer.store.deliveries import Delivery

# Names what the digest is of, so it matches no other SHA-256 of an address.
_SUPPRESSION_PREFIX = b"newsletter suppression v1\0"


@dataclass(frozen=True, kw_only=True)
class StatusChange:
    """One row of a subscriber's status history."""

    status: Status
    changed_at: dt.datetime
    reason: str


@dataclass(frozen=True, kw_only=True)
class PersonalData:
    """Everything the store holds about one reader."""

    subscriber: Subscriber
    history: tuple[StatusChange, ...]
    deliveries: tuple[Delivery, ...]

    def to_json(self) -> bytes:
        """The data as an indented UTF-8 JSON document (times in ISO 8601)."""
        document = {
            "subscriber": asdict(self.subscriber),
            "status_history": [asdict(change) for change in self.history],
            "deliveries": [asdict(delivery) for delivery in self.deliveries],
        }
        text = json.dumps(document, indent=2, ensure_ascii=False, default=_iso)
        return (text + "\n").encode("utf-8")


def suppression_digest(key: str) -> str:
    """The one-way digest an erasure keeps of address key ``key`` (hex SHA-256)."""
    return hashlib.sha256(_SUPPRESSION_PREFIX + key.encode("utf-8")).hexdigest()


def _iso(value: object) -> str:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")
