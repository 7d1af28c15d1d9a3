"""The signed token in every subscribe form: proof that the form came from this service,
when, and for which use.

The token carries the moment it was made and its kind: ``page`` for the form
``GET /subscribe`` shows, ``embed`` for the one ``newsletter embed`` prints for other
sites. A page token is accepted from :data:`MIN_FILL_SECONDS` after it was made (a
person takes longer than that to type an address; a script posting at once is
refused) until :data:`MAX_AGE_SECONDS` after. An embed token never expires, since
the page it sits on is pasted once and served for years, and no fill time can be
known for it: a post carrying one only opens this service's own form, prefilled, so
that sending any mail still takes a page token, a person's pause and the same origin.

The token binds nothing secret on the client (no cookie, no session): it is the
form's CSRF token in that a forged post needs one, and one cannot be made elsewhere.
"""

from __future__ import annotations

from typing import Literal

from composer.config import Config
from composer.errors import InvalidToken
from composer.signing import Signer, load_secret

FormKind = Literal["page", "embed"]
MIN_FILL_SECONDS = 2.0
MAX_AGE_SECONDS = 2 * 3600.0

_PURPOSE = b"newsletter subscribe form v1\0"


class FormTooFast(InvalidToken):
    """A page token posted sooner than :data:`MIN_FILL_SECONDS` after it was made."""


class FormExpired(InvalidToken):
    """A page token posted later than :data:`MAX_AGE_SECONDS` after it was made."""


class FormTokens:
    """Makes and checks the tokens of subscribe forms."""

    def __init__(self, secret: bytes) -> None:
        self._signer = Signer(secret, _PURPOSE)

    @classmethod
    def from_config(cls, config: Config) -> FormTokens:
        return cls(load_secret(config.path))

    def make(self, kind: FormKind, now: float) -> str:
        """A token of ``kind`` made at ``now`` (seconds since the epoch)."""
        return self._signer.sign(f"{kind}\n{int(now * 1000)}".encode())

    def check(self, token: str, now: float) -> FormKind:
        """The kind of ``token`` if it may be used at ``now``; else :class:`FormTooFast`,
        :class:`FormExpired` or :class:`InvalidToken`."""
        payload = self._signer.verify(token)
        kind, _, made = payload.decode("ascii", "replace").partition("\n")
        if kind not in ("page", "embed") or not made.isdigit():
            raise InvalidToken("not a form token")
        if kind == "embed":
            return "embed"
        age = now - int(made) / 1000
        if age < MIN_FILL_SECONDS:
            raise FormTooFast(f"posted {age:.1f} s after the form was made")
        if age > MAX_AGE_SECONDS:
            raise FormExpired(f"posted {age / 60:.0f} minutes after the form was made")
        return "page"
