"""Signed links that confirm a signup: the one way a reader's signup becomes a
subscription when double opt-in is on, and the one way back for an address that left.

A token (:mod:`composer.signing`, a purpose of its own) carries the reader's key, the
address as they typed it and when the link expires; it proves that whoever opens it
reads that mailbox. The sending side builds the link into the confirmation email;
``serve`` checks it with :meth:`ConfirmLinks.verify`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from composer.config import Config
from composer.errors import InvalidToken
from composer.signing import Signer, load_secret

_PURPOSE = b"newsletter confirm signup v1\0"


@dataclass(frozen=True)
class ConfirmToken:
    """What a genuine confirmation token says."""

    key: str
    email: str
    expires_at: dt.datetime

    def expired(self, now: dt.datetime) -> bool:
        return now >= self.expires_at


class ConfirmLinks:
    """Signs and verifies confirmation tokens; builds the links at ``base_url/confirm``."""

    def __init__(self, base_url: str, secret: bytes) -> None:
        self.endpoint = base_url.rstrip("/") + "/confirm"
        self._signer = Signer(secret, _PURPOSE)

    @classmethod
    def from_config(cls, config: Config) -> ConfirmLinks:
        """Links for ``config``'s base_url, under :func:`load_secret`."""
        return cls(config.newsletter.base_url, load_secret(config.path))

    def url(self, key: str, email: str, expires_at: dt.datetime) -> str:
        """The link that confirms ``email`` (key ``key``) until ``expires_at``."""
        if "\n" in key or "\n" in email:
            raise ValueError("an address cannot contain a newline")
        payload = f"{key}\n{email}\n{int(expires_at.timestamp())}".encode()
        return f"{self.endpoint}?token={self._signer.sign(payload)}"

    def verify(self, token: str) -> ConfirmToken:
        """What ``token`` says (expired or not), or :class:`InvalidToken` if it is not
        exactly one we signed."""
        payload = self._signer.verify(token)
        try:
            key, email, expires = payload.decode("utf-8").split("\n")
            expires_at = dt.datetime.fromtimestamp(int(expires), dt.UTC)
        except ValueError as exc:
            raise InvalidToken("not a confirmation token") from exc
        return ConfirmToken(key=key, email=email, expires_at=expires_at)
