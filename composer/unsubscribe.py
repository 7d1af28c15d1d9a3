"""Signed one-click unsubscribe links and the headers bulk senders must carry.

A token (:mod:`composer.signing`) carries the subscriber's key
(:func:`composer.store.address_key`; links signed before keys were lower-cased carry
the local part as written, so ``serve`` looks up the key of what a token carries)
and, optionally, the issue slug. The sending side builds one
:class:`UnsubscribeLinks` per dispatch and asks it, per recipient, for
:meth:`~UnsubscribeLinks.headers` and :meth:`~UnsubscribeLinks.url`; ``serve``
checks incoming tokens with :meth:`~UnsubscribeLinks.verify`.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from composer.config import Config
from composer.signing import Signer, load_secret

ONE_CLICK = "List-Unsubscribe=One-Click"
# Binds every MAC to this purpose and format, so a MAC made for anything else under
# the same secret (a later feature) can never pass as an unsubscribe token.
_PURPOSE = b"newsletter unsubscribe v1\0"


@dataclass(frozen=True)
class UnsubscribeToken:
    """What a verified token says: whose link it is and, if bound, from which issue."""

    key: str
    issue: str | None = None


class UnsubscribeLinks:
    """Signs and verifies unsubscribe tokens and builds the per-recipient values a
    message needs. Build it once per dispatch; each call costs one HMAC."""

    def __init__(self, base_url: str, secret: bytes, mailto: str = "") -> None:
        self.endpoint = base_url.rstrip("/") + "/unsubscribe"
        self.mailto = mailto
        self._signer = Signer(secret, _PURPOSE)

    @classmethod
    def from_config(cls, config: Config) -> UnsubscribeLinks:
        """Links for ``config``'s base_url and unsubscribe_mailto, under :func:`load_secret`."""
        return cls(
            config.newsletter.base_url,
            load_secret(config.path),
            config.newsletter.unsubscribe_mailto,
        )

    def token(self, key: str, issue: str | None = None) -> str:
        """The signed, URL-safe token for subscriber ``key`` (and ``issue``, if given)."""
        if "\n" in key or (issue and "\n" in issue):
            raise ValueError("a subscriber key or issue slug cannot contain a newline")
        return self._signer.sign(f"{key}\n{issue or ''}".encode())

    def verify(self, token: str) -> UnsubscribeToken:
        """What ``token`` says, or :class:`InvalidToken` if it is not exactly one we signed."""
        payload = self._signer.verify(token)
        key, _, issue = payload.decode("utf-8").partition("\n")
        return UnsubscribeToken(key=key, issue=issue or None)

    def url(self, key: str, issue: str | None = None) -> str:
        """The https link for the footer and the List-Unsubscribe header."""
        return f"{self.endpoint}?token={self.token(key, issue)}"

    def headers(self, key: str, issue: str | None = None) -> dict[str, str]:
        """``List-Unsubscribe`` (the link, and the mailto when configured) and
        ``List-Unsubscribe-Post``, as RFC 2369 and RFC 8058 spell them."""
        return self.headers_for(self.url(key, issue))

    def headers_for(self, url: str) -> dict[str, str]:
        """:meth:`headers` around ``url``, a link :meth:`url` made (one HMAC saved)."""
        targets = [f"<{url}>"]
        if self.mailto:
            targets.append(f"<mailto:{self.mailto}?subject={quote('unsubscribe')}>")
        return {"List-Unsubscribe": ", ".join(targets), "List-Unsubscribe-Post": ONE_CLICK}
