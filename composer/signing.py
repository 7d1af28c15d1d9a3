"""Signed tokens, and the secret they are signed under.

A token is ``<payload>.<mac>``, both unpadded URL-safe base64; the MAC is HMAC-SHA256
over a purpose string and the payload, under a secret that never enters the
repository (``NEWSLETTER_SECRET``, else ``.newsletter-secret`` next to config.toml,
created with 0600 permissions on first use). Every kind of token (unsubscribe links,
and whatever else the service signs) has its own :class:`Signer` with its own
purpose, so a token made for one can never pass as another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from composer.errors import InvalidToken, SecretError

SECRET_ENV = "NEWSLETTER_SECRET"
SECRET_FILE = ".newsletter-secret"
MIN_SECRET_LENGTH = 32


class Signer:
    """Signs and verifies the tokens of one ``purpose`` (bytes naming the kind of token
    and its format, ending in a NUL so no purpose is a prefix of a payload). Each call
    costs one HMAC."""

    def __init__(self, secret: bytes, purpose: bytes) -> None:
        if len(secret) < MIN_SECRET_LENGTH:
            raise SecretError(f"the signing secret must be at least {MIN_SECRET_LENGTH} bytes")
        self._mac = hmac.new(secret, purpose, hashlib.sha256)

    def sign(self, payload: bytes) -> str:
        """The URL-safe token carrying ``payload``."""
        return f"{b64(payload)}.{b64(self.mac(payload))}"

    def verify(self, token: str) -> bytes:
        """The payload of ``token``, or :class:`InvalidToken` if it is not exactly one
        this signer made."""
        encoded_payload, dot, encoded_mac = token.partition(".")
        if not dot:
            raise InvalidToken("no signature")
        try:
            payload = unb64(encoded_payload)
            mac = unb64(encoded_mac)
        except (binascii.Error, ValueError) as exc:
            raise InvalidToken("not base64") from exc
        if not hmac.compare_digest(mac, self.mac(payload)):
            raise InvalidToken("bad signature")
        return payload

    def mac(self, payload: bytes) -> bytes:
        """The full HMAC of ``payload`` under this purpose (a caller may keep a prefix of
        it where a token must be short)."""
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


def b64(data: bytes) -> str:
    """``data`` as unpadded URL-safe base64."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    """The bytes of unpadded URL-safe base64 ``text``; ValueError if it is not that."""
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
