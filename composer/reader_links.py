"""Signed links that take a reader to their own pages on ``newsletter serve``:
``/manage?token=…`` (their subscription) and ``/issues/<slug>?token=…`` (the web
version as their tier reads it).

Each kind of token has its own :class:`~composer.signing.Signer` purpose, so a manage
token never opens the paid edition, and neither passes as an unsubscribe token. A
token carries the reader's key (:func:`composer.store.address_key`) and nothing else:
what it opens is decided when it is used, from the reader's row as it is then, so a
reader who stops paying loses the paid edition in old emails too, and an erased
reader's links find no one. Like unsubscribe links, they never expire: a link in last
year's email still works.
"""

from __future__ import annotations

from composer.config import Config
from composer.signing import Signer, load_secret

_MANAGE_PURPOSE = b"newsletter manage v1\0"
_READ_PURPOSE = b"newsletter read v1\0"


class ReaderLinks:
    """Signs and verifies manage and read tokens. Build it once per dispatch; each
    link costs one HMAC."""

    def __init__(self, base_url: str, secret: bytes) -> None:
        self.base = base_url.rstrip("/")
        self._manage = Signer(secret, _MANAGE_PURPOSE)
        self._read = Signer(secret, _READ_PURPOSE)

    @classmethod
    def from_config(cls, config: Config) -> ReaderLinks:
        """Links for ``config``'s base_url, under :func:`load_secret`."""
        return cls(config.newsletter.base_url, load_secret(config.path))

    def manage_url(self, key: str) -> str:
        """The reader ``key``'s "Manage your subscription" link."""
        return f"{self.base}/manage?token={self._manage.sign(key.encode())}"

    def web_url(self, key: str, slug: str) -> str:
        """Issue ``slug``'s web version as the reader ``key`` may read it."""
        return f"{self.base}/issues/{slug}?token={self._read.sign(key.encode())}"

    def manage_key(self, token: str) -> str:
        """The key a manage token carries, or :class:`~composer.errors.InvalidToken`."""
        return self._manage.verify(token).decode("utf-8")

    def reader_key(self, token: str) -> str:
        """The key a read token carries, or :class:`~composer.errors.InvalidToken`."""
        return self._read.verify(token).decode("utf-8")
