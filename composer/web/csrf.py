"""Cross-site request forgery defence for the forms of ``newsletter serve``.

A form carries a token (:class:`FormTokens`) signed for the reader it was shown to and
the time it was shown; a POST is taken only with a token that verifies, names the same
reader and is at most :data:`MAX_AGE_SECONDS` old. A site elsewhere can make a browser
post, but cannot read the page to learn a token. Besides, a POST whose ``Origin`` (or,
without one, ``Referer``) names another site than ``base_url`` is refused before its
token is looked at (:func:`same_site`); a request with neither header (an old browser,
a privacy extension) relies on the token alone.
"""

from __future__ import annotations

import time

from starlette.datastructures import Headers

from composer.errors import InvalidToken
from composer.signing import Signer
from composer.web.site import origin_of

_PURPOSE = b"newsletter form v1\0"
# A page left open for a day can still be used; an older one is shown afresh.
MAX_AGE_SECONDS = 24 * 3600
# Clocks of several service processes may differ a little.
CLOCK_SKEW_SECONDS = 300


class FormTokens:
    """Signs and checks the CSRF tokens of one service; one HMAC a call."""

    def __init__(self, secret: bytes) -> None:
        self._signer = Signer(secret, _PURPOSE)

    def token(self, key: str, now: float | None = None) -> str:
        """A token for a form shown to reader ``key`` now."""
        issued = int(time.time() if now is None else now)
        return self._signer.sign(f"{issued}\n{key}".encode())

    def valid(self, token: str, key: str, now: float | None = None) -> bool:
        """Whether ``token`` was signed here for reader ``key`` and is still fresh."""
        try:
            issued, _, signed_key = self._signer.verify(token).decode("utf-8").partition("\n")
        except InvalidToken:
            return False
        age = (time.time() if now is None else now) - int(issued)
        return signed_key == key and -CLOCK_SKEW_SECONDS <= age <= MAX_AGE_SECONDS


def same_site(headers: Headers, origin: str) -> bool:
    """Whether a request's ``Origin``, or without it its ``Referer``, is ``origin`` (or
    the request names neither)."""
    sender = headers.get("origin")
    if sender is not None:
        return sender == origin
    referer = headers.get("referer")
    if referer is None:
        return True
    try:
        return origin_of(referer) == origin
    except ValueError:  # not a URL (a port out of range): not from us
        return False
