"""VERP return paths: each copy's envelope sender names the copy, signed.

With ``[bounces] address = "bounces@news.example.com"``, the copy of dispatch ``D``
to subscriber ``S`` goes out with ``MAIL FROM:<bounces+TOKEN@news.example.com>``,
where ``TOKEN`` is ``<S in hex>-<tag of D>-<mac>``: the dispatch's tag is 40 bits of
the SHA-256 of its key, the MAC 80 bits of a keyed BLAKE2s of the rest, all in
lower-case hex, so a relay that folds the local part's case does not break it (and the
local part stays under 50 characters, well within the 64 allowed). A bounce comes
back to that address whatever the remote server's report looks like, and
:meth:`ReturnPaths.token_of` reads and checks it.

The MAC's key is derived from the secret that signs unsubscribe links
(:func:`composer.signing.load_secret`) by an HMAC of this purpose's own label, so
an unsubscribe token is never a valid return token, nor the other way round. Keyed
BLAKE2s is a MAC in one pass (HMAC takes two hashes and a copy): each copy's return
path costs about 2 µs.
A token only names a copy; it gives no access to anything.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from composer.config import Config

_PURPOSE = b"newsletter return path v1\0"
_TAG_BYTES = 5
_MAC_BYTES = 10
_TOKEN = re.compile(r"([0-9a-f]{1,12})-([0-9a-f]{10})-([0-9a-f]{20})")


@dataclass(frozen=True)
class ReturnToken:
    """What a return token names: the subscriber's id and the tag of the dispatch
    (:func:`dispatch_tag` of its key)."""

    subscriber_id: int
    dispatch_tag: str


class ReturnPaths:
    """Makes and checks the VERP addresses under one bounce ``address``."""

    def __init__(self, address: str, secret: bytes) -> None:
        local, _, domain = address.rpartition("@")
        if not local or not domain:
            raise ValueError(f"not an address: {address!r}")
        self.local = local
        self.domain = domain
        self._key = hmac.new(secret, _PURPOSE, hashlib.sha256).digest()

    @classmethod
    def from_config(cls, config: Config) -> ReturnPaths | None:
        """The return paths under ``[bounces] address``; None when it is not set."""
        if not config.bounces.address:
            return None
        from composer.signing import load_secret

        return cls(config.bounces.address, load_secret(config.path))

    def for_dispatch(self, key: str) -> DispatchReturnPath:
        """The return paths of the copies of the dispatch keyed ``key``."""
        return DispatchReturnPath(self, dispatch_tag(key))

    def sign(self, payload: str) -> str:
        """The MAC of ``payload`` under this purpose's key, in hex."""
        mac = hashlib.blake2s(payload.encode("ascii"), key=self._key, digest_size=_MAC_BYTES)
        return mac.hexdigest()

    def token_of(self, address: str) -> str | None:
        """The token of ``address`` when it is one of these VERP addresses (in any letter
        case) and its signature holds; else None."""
        local, _, domain = address.strip().strip("<>").rpartition("@")
        base, plus, token = local.partition("+")
        if not plus or base.lower() != self.local.lower() or domain.lower() != self.domain.lower():
            return None
        token = token.lower()
        match = _TOKEN.fullmatch(token)
        if match is None:
            return None
        payload = f"{match[1]}-{match[2]}"
        if not hmac.compare_digest(self.sign(payload), match[3]):
            return None
        return token


class DispatchReturnPath:
    """The VERP addresses of one dispatch; :meth:`address` is on the per-copy hot path:
    one keyed hash of a few bytes."""

    __slots__ = ("_paths", "_prefix", "_suffix", "_tag")

    def __init__(self, paths: ReturnPaths, tag: str) -> None:
        self._paths = paths
        self._tag = tag
        self._prefix = f"{paths.local}+"
        self._suffix = f"@{paths.domain}"

    def address(self, subscriber_id: int) -> str:
        """The envelope sender of ``subscriber_id``'s copy."""
        payload = f"{subscriber_id:x}-{self._tag}"
        return f"{self._prefix}{payload}-{self._paths.sign(payload)}{self._suffix}"


def dispatch_tag(key: str) -> str:
    """The short tag a return token names the dispatch keyed ``key`` by."""
    return hashlib.sha256(key.encode("utf-8")).digest()[:_TAG_BYTES].hex()


def read_token(token: str) -> ReturnToken | None:
    """What a token already checked by :meth:`ReturnPaths.token_of` names; None when it
    is not a token's shape."""
    match = _TOKEN.fullmatch(token.lower())
    if match is None:
        return None
    return ReturnToken(subscriber_id=int(match[1], 16), dispatch_tag=match[2])
