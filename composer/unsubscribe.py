"""Signed one-click unsubscribe links and the headers bulk senders must carry.

A token is ``<payload>.<mac>``, both unpadded URL-safe base64: the payload is the
subscriber's key (:func:`composer.store.address_key`; links signed before keys were
lower-cased carry the local part as written, so ``serve`` looks up the key of what
a token carries) and, optionally, the issue slug; the MAC is
HMAC-SHA256 over it under a secret that never enters the repository
(``NEWSLETTER_SECRET``, else ``.newsletter-secret`` next to config.toml, created
with 0600 permissions on first use). The sending side builds one
:class:`UnsubscribeLinks` per dispatch and asks it, per recipient, for
:meth:`~UnsubscribeLinks.headers` and :meth:`~UnsubscribeLinks.url`; ``serve``
checks incoming tokens with :meth:`~UnsubscribeLinks.verify`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from composer.config import Config
from composer.errors import InvalidToken, SecretError

SECRET_ENV = "NEWSLETTER_SECRET"
SECRET_FILE = ".newsletter-secret"
MIN_SECRET_LENGTH = 32
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
        if len(secret) < MIN_SECRET_LENGTH:
            raise SecretError(f"the unsubscribe secret must be at least {MIN_SECRET_LENGTH} bytes")
        self.endpoint = base_url.rstrip("/") + "/unsubscribe"
        self.mailto = mailto
        self._mac = hmac.new(secret, _PURPOSE, hashlib.sha256)

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
        payload = f"{key}\n{issue or ''}".encode()
        return f"{_b64(payload)}.{_b64(self._sign(payload))}"

    def verify(self, token: str) -> UnsubscribeToken:
        """What ``token`` says, or :class:`InvalidToken` if it is not exactly one we signed."""
        encoded_payload, dot, encoded_mac = token.partition(".")
        if not dot:
            raise InvalidToken("no signature")
        try:
            payload = _unb64(encoded_payload)
            mac = _unb64(encoded_mac)
        except (binascii.Error, ValueError) as exc:
            raise InvalidToken("not base64") from exc
        if not hmac.compare_digest(mac, self._sign(payload)):
            raise InvalidToken("bad signature")
        key, _, issue = payload.decode("utf-8").partition("\n")
        return UnsubscribeToken(key=key, issue=issue or None)

    def url(self, key: str, issue: str | None = None) -> str:
        """The https link for the footer and the List-Unsubscribe header."""
        return f"{self.endpoint}?token={self.token(key, issue)}"

    def headers(self, key: str, issue: str | None = None) -> dict[str, str]:
        """``List-Unsubscribe`` (the link, and the mailto when configured) and
        ``List-Unsubscribe-Post``, as RFC 2369 and RFC 8058 spell them."""
        targets = [f"<{self.url(key, issue)}>"]
        if self.mailto:
            targets.append(f"<mailto:{self.mailto}?subject={quote('unsubscribe')}>")
        return {"List-Unsubscribe": ", ".join(targets), "List-Unsubscribe-Post": ONE_CLICK}

    def _sign(self, payload: bytes) -> bytes:
        mac = self._mac.copy()
        mac.update(payload)
        return mac.digest()


def load_secret(config_path: Path) -> bytes:
    """The signing secret: ``$NEWSLETTER_SECRET``, else the key file next to
    ``config_path``, created (0600) on first use."""
    from_env = os.environ.get(SECRET_ENV)
    if from_env is not None:
        if len(from_env) < MIN_SECRET_LENGTH:
            raise SecretError(
                f"{SECRET_ENV} is shorter than {MIN_SECRET_LENGTH} characters; set it to"
                ' the output of `python -c "import secrets; print(secrets.token_urlsafe(32))"`'
            )
        return from_env.encode()
    path = config_path.resolve().parent / SECRET_FILE
    if not path.exists():
        _create_secret_file(path)
    if os.name == "posix" and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretError(f"{path}: readable by other users; run `chmod 600 {path}`")
    secret = path.read_text(encoding="utf-8").strip()
    if len(secret) < MIN_SECRET_LENGTH:
        raise SecretError(
            f"{path}: shorter than {MIN_SECRET_LENGTH} characters; delete it to have a new one"
            " made (every unsubscribe link already sent stops working)"
        )
    return secret.encode()


def _create_secret_file(path: Path) -> None:
    # Written under a temporary name, then linked into place: a second process starting
    # at the same moment either wins the link or reads the complete file, never half.
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as file:
            file.write(secrets.token_urlsafe(32) + "\n")
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        temporary.unlink()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
