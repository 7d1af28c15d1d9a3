"""Amazon SNS messages to an HTTPS endpoint: their signatures, and the one place the
webhooks reach the network (:class:`SnsFetcher`).

A message is signed with SNS's RSA key over a canonical string of its fields, each as
``Name\\nvalue\\n`` in a fixed order (:func:`string_to_sign`), with SHA1
(``SignatureVersion`` 1) or SHA256 (2). The certificate holding the key is fetched from
the message's ``SigningCertURL``, but only over HTTPS from ``sns.<region>.amazonaws.com``:
any other place is refused before a connection is made, since a certificate from
anywhere else would prove nothing. A subscription is confirmed by fetching its
``SubscribeURL``, under the same rule.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
import ssl
import threading
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from composer.errors import MalformedWebhook, WebhookRefused
from composer.web.esp import check_fresh, iso_moment, required

# Where SNS keeps its signing certificates and subscription endpoints: the whole host
# and port part of the URL, so no port, user or other host passes.
SNS_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com")
# The fields signed, in the order signed; a field the message lacks is left out.
NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_FIELDS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
MESSAGE_TYPES = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")
DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
# A certificate is a few kilobytes; a subscription's confirmation reply less.
MAX_FETCH_BYTES = 64 * 1024
CACHED_CERTIFICATES = 16


class SnsFetcher:
    """GETs over HTTPS from the hosts SNS uses, and from nowhere else: a URL whose
    scheme is not https, or whose host (and port) part does not wholly match ``hosts``
    (by default ``sns.<region>.amazonaws.com``), is :class:`WebhookRefused` before any
    connection. Signing certificates are cached by URL. Tests give their own ``hosts``
    and ``context`` to reach a local server; nothing else about it changes."""

    def __init__(
        self,
        *,
        hosts: re.Pattern[str] = SNS_HOST,
        context: ssl.SSLContext | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.hosts = hosts
        self.timeout = timeout
        # Redirects are not followed: each URL is checked, not wherever it leads.
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=context or ssl.create_default_context()),
            _NoRedirects(),
        )
        self._keys: OrderedDict[str, rsa.RSAPublicKey] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, url: str) -> None:
        """Refuse ``url`` unless it is https on an allowed host."""
        parts = urlsplit(url)
        if parts.scheme != "https" or not self.hosts.fullmatch(parts.netloc):
            raise WebhookRefused(f"not an SNS address: {url[:200]!r}")

    def get(self, url: str) -> bytes:
        """The body at ``url`` (checked first); :class:`WebhookRefused` when it cannot be
        had, so the service tries again later."""
        self.check(url)
        try:
            with self._opener.open(url, timeout=self.timeout) as response:
                body: bytes = response.read(MAX_FETCH_BYTES + 1)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise WebhookRefused(f"cannot fetch {url[:200]}: {exc}") from exc
        if len(body) > MAX_FETCH_BYTES:
            raise WebhookRefused(f"{url[:200]}: more than {MAX_FETCH_BYTES} bytes")
        return body

    def signing_key(self, url: str, now: dt.datetime) -> rsa.RSAPublicKey:
        """The RSA key of the certificate at ``url``, fetched once and then cached; a
        certificate out of its validity at ``now`` is refused."""
        with self._lock:
            key = self._keys.get(url)
            if key is not None:
                self._keys.move_to_end(url)
                return key
        try:
            certificate = x509.load_pem_x509_certificate(self.get(url))
        except ValueError as exc:
            raise WebhookRefused(f"{url[:200]}: not a PEM certificate") from exc
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise WebhookRefused(f"{url[:200]}: the certificate is not valid now")
        public_key = certificate.public_key()
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise WebhookRefused(f"{url[:200]}: not an RSA certificate")
        with self._lock:
            self._keys[url] = public_key
            while len(self._keys) > CACHED_CERTIFICATES:
                self._keys.popitem(last=False)
        return public_key


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def string_to_sign(message: Mapping[str, Any]) -> bytes:
    """The canonical string SNS signs for ``message``."""
    fields = NOTIFICATION_FIELDS if message["Type"] == "Notification" else CONFIRMATION_FIELDS
    return "".join(
        f"{name}\n{message[name]}\n" for name in fields if message.get(name) is not None
    ).encode("utf-8")


def verify(
    message: Mapping[str, Any], fetcher: SnsFetcher, topic_arn: str, now: float, max_age: float
) -> None:
    """Refuse ``message`` unless SNS signed it, for ``topic_arn``, within ``max_age``
    seconds of ``now``."""
    kind = required(message, "Type")
    if kind not in MESSAGE_TYPES:
        raise MalformedWebhook(f"not an SNS message type: {kind!r}")
    digest = DIGESTS.get(str(message.get("SignatureVersion")))
    if digest is None:
        raise WebhookRefused(f"unknown SignatureVersion {message.get('SignatureVersion')!r}")
    try:
        signature = base64.b64decode(required(message, "Signature"), validate=True)
    except (binascii.Error, MalformedWebhook) as exc:
        raise WebhookRefused("no base64 Signature") from exc
    # The topic before the certificate: a message for another topic costs no fetch.
    if message.get("TopicArn") != topic_arn:
        raise WebhookRefused(f"from topic {str(message.get('TopicArn'))[:200]!r}, not ours")
    signed_at = iso_moment(required(message, "Timestamp"))
    check_fresh(signed_at.timestamp(), now, max_age)
    key = fetcher.signing_key(
        required(message, "SigningCertURL"), dt.datetime.fromtimestamp(now, dt.UTC)
    )
    try:
        key.verify(signature, string_to_sign(message), padding.PKCS1v15(), digest())
    except InvalidSignature as exc:
        raise WebhookRefused("the SNS signature does not verify") from exc
