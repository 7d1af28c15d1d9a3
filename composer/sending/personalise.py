"""Serialise a composed issue once, then make each recipient's copy by substitution.

Building a message with the :mod:`email` package costs about 11 ms for a 60 KB issue;
a dispatch cannot afford that per recipient. :class:`MessageTemplate` writes the
MIME structure itself, once per issue and tier, as a list of byte strings with holes
for the values that differ per recipient: ``To``, ``Message-ID``, the
``List-Unsubscribe`` headers, and in both bodies the reader's links that the composed
issue holds placeholders for (unsubscribe, manage, their own web version: see
:class:`~composer.composing.pipeline.ReaderUrls`). Each link costs one HMAC and one
short quoted-printable encoding per copy, however often it appears.

Each body is quoted-printable. A hole always starts on a fresh line (the text before
it ends in a soft line break, ``=`` CRLF), and the value is quoted-printable encoded
on its own, wrapped to 76 characters and ended by another soft line break. Soft
breaks vanish when a client decodes the part, so the decoded text is exactly the
composed text with the link in place, and no line of the message passes 76
characters whatever the link's length.

An address with an international domain goes out with the domain in its ASCII
(punycode) form; one whose local part is not ASCII goes out as UTF-8, in the
envelope and in ``To`` (RFC 6531 and 6532), which only a server offering SMTPUTF8
takes (the transport checks).

Headers cannot be injected. This Python (3.11.7) predates the fix for CVE-2024-6923,
so nothing here trusts the :mod:`email` generator with a newline: every value is
flattened to one line before it is used (CR, LF and other control characters
become spaces), and each header block is checked, once for the shared part and
per message for the personal part, to hold exactly the fields written here.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import html
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Literal, NamedTuple

from email_validator import EmailNotValidError, validate_email

from composer.composing.message import WIRE_POLICY
from composer.composing.pipeline import ComposedIssue, ReaderUrls, generic_urls
from composer.composing.render import MANAGE_URL, PLACEHOLDERS, READER_WEB_URL, UNSUBSCRIBE_URL
from composer.config import Config
from composer.errors import UnsendableAddress
from composer.reader_links import ReaderLinks
from composer.returnpath import DispatchReturnPath
from composer.store.deliveries import Recipient
from composer.unsubscribe import UnsubscribeLinks

CRLF = b"\r\n"
SOFT_BREAK = b"=\r\n"
# "=_" can never occur in quoted-printable text ("=" is always followed by two hex
# digits or a line break), so this boundary cannot collide with either body.
BOUNDARY_PREFIX = "=_newsletter_"
MAX_NAME_CHARS = 100
# Room for an encoded word: "=?utf-8?b?" + base64 of 45 bytes (60 chars) + "?=" is 72.
_WORD_BYTES = 45
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
# What an address on the wire may not hold: controls, spaces, brackets, quotes.
_NOT_PLAIN = re.compile(r'[\x00-\x20\x7f<>"(),;:\\\[\]]')
_ATEXT_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]*")
_FIELD_NAME = re.compile(rb"[!-9;-~]+")
_SHARED_FIELDS = {"subject", "from", "reply-to", "date", "mime-version", "content-type"}
_PERSONAL_FIELDS = {"to", "message-id", "list-unsubscribe", "list-unsubscribe-post"}

# How the link in a hole is encoded: as it is, or HTML-escaped.
HoleKind = Literal["text", "html"]
# A hole: the placeholder it replaces and how its link is encoded.
Hole = tuple[str, HoleKind]
_PLACEHOLDER = re.compile("(" + "|".join(re.escape(p) for p in PLACEHOLDERS) + ")")


class PersonalCopy(NamedTuple):
    """One reader's message, ready for DATA; the Message-ID it carries (which the
    delivery record keeps, to join a bounce or a complaint to the reader); the
    address it goes to in ``RCPT TO``, as :func:`envelope_address` writes it; and its
    own ``MAIL FROM`` when it has one (a VERP return path; empty: the dispatch's sender)."""

    message_id: str
    envelope_address: str
    data: bytes
    return_path: str = ""


@dataclass(frozen=True)
class MessageTemplate:
    """One composed variant, serialised once. :meth:`render` makes a recipient's copy."""

    shared_headers: bytes
    bodies: tuple[bytes, ...]  # text around the holes, in order; the holes alternate
    holes: tuple[Hole, ...]  # which link fills each hole, and how it is encoded
    domain: str
    issue: str
    links: UnsubscribeLinks | None
    reader_links: ReaderLinks | None
    generic: ReaderUrls
    unique_ids: bool
    # The dispatch's VERP return paths ([bounces] address): each subscriber's copy goes
    # out from its own signed address, so a bounce names it whatever the report says.
    return_path: DispatchReturnPath | None = None

    @classmethod
    def build(
        cls,
        composed: ComposedIssue,
        config: Config,
        *,
        links: UnsubscribeLinks | None,
        reader_links: ReaderLinks | None = None,
        subject_prefix: str = "",
        unique_ids: bool = False,
    ) -> MessageTemplate:
        """Serialise ``composed``. With ``links`` each copy gets its reader's own signed
        unsubscribe link and List-Unsubscribe headers, with ``reader_links`` their own
        manage link and web version; without, the generic pages.
        ``unique_ids`` gives every copy a random Message-ID (for tests); otherwise a
        reader's Message-ID is the same on every attempt, so a receiver that keeps
        Message-IDs can fold the rare duplicate a crash may cause."""
        boundary = BOUNDARY_PREFIX + secrets.token_hex(12)
        headers = EmailMessage(policy=WIRE_POLICY)
        headers["Subject"] = one_line(f"{subject_prefix}{composed.subject}")
        headers["From"] = config.newsletter.sender
        if config.newsletter.reply_to is not None:
            headers["Reply-To"] = config.newsletter.reply_to
        headers["Date"] = format_datetime(dt.datetime.now(dt.UTC))
        headers["MIME-Version"] = "1.0"
        headers["Content-Type"] = f'multipart/alternative; boundary="{boundary}"'
        shared = headers.as_bytes().split(CRLF + CRLF, 1)[0] + CRLF
        check_header_block(shared, _SHARED_FIELDS)

        pieces: list[bytes] = [b""]
        holes: list[Hole] = []
        for subtype, content in (("plain", composed.text), ("html", composed.html)):
            pieces[-1] += (
                f"--{boundary}\r\n"
                f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
                "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
            ).encode("ascii")
            # re.split with a group: text, placeholder, text, …, text.
            parts = _PLACEHOLDER.split(content)
            for segment, placeholder in zip(parts[::2], [*parts[1::2], None], strict=True):
                encoded = quoted_printable(segment)
                if placeholder is not None:
                    pieces[-1] += soft_break_after(encoded)
                    pieces.append(b"")
                    holes.append((placeholder, "html" if subtype == "html" else "text"))
                else:
                    pieces[-1] += encoded + CRLF
        pieces[-1] += f"--{boundary}--\r\n".encode("ascii")
        return cls(
            shared_headers=shared,
            bodies=tuple(pieces),
            holes=tuple(holes),
            domain=config.newsletter.sender.domain,
            issue=composed.issue.slug,
            links=links,
            reader_links=reader_links,
            generic=generic_urls(composed.issue, config),
            unique_ids=unique_ids,
        )

    def render(self, recipient: Recipient) -> PersonalCopy:
        """``recipient``'s copy; :class:`UnsendableAddress` if their address cannot be
        written safely."""
        key = recipient.link_key
        urls = self.generic.by_placeholder()
        unsubscribe: dict[str, str] = {}
        if self.links is not None:
            urls[UNSUBSCRIBE_URL] = self.links.url(key, self.issue)
            unsubscribe = self.links.headers_for(urls[UNSUBSCRIBE_URL])
        if self.reader_links is not None:
            urls[MANAGE_URL] = self.reader_links.manage_url(key)
            urls[READER_WEB_URL] = self.reader_links.web_url(key, self.issue)
        message_id = self.message_id(recipient)
        address = envelope_address(recipient.email)
        personal = [
            b"To: " + to_header(recipient.name, address),
            b"Message-ID: " + message_id.encode("ascii"),
        ]
        for name, value in unsubscribe.items():
            personal.append(name.encode("ascii") + b": " + header_value(value))
        personal_block = CRLF.join(personal) + CRLF
        check_header_block(personal_block, _PERSONAL_FIELDS)

        encoded: dict[Hole, bytes] = {}
        out = [personal_block, self.shared_headers, CRLF, self.bodies[0]]
        for hole, body in zip(self.holes, self.bodies[1:], strict=True):
            if hole not in encoded:
                placeholder, kind = hole
                url = urls[placeholder]
                encoded[hole] = soft_break_after(
                    quoted_printable(html.escape(url, quote=True) if kind == "html" else url)
                )
            out.append(encoded[hole])
            out.append(body)
        return_path = ""
        if self.return_path is not None and recipient.subscriber_id is not None:
            return_path = self.return_path.address(recipient.subscriber_id)
        return PersonalCopy(
            message_id=message_id,
            envelope_address=address,
            data=b"".join(out),
            return_path=return_path,
        )

    def message_id(self, recipient: Recipient) -> str:
        """A Message-ID unique to this issue and reader (random with ``unique_ids``)."""
        if self.unique_ids:
            tag = secrets.token_hex(10)
        else:
            tag = hashlib.sha256(recipient.link_key.encode()).hexdigest()[:20]
        slug = re.sub(r"[^A-Za-z0-9.-]", "-", self.issue) or "issue"
        return f"<{slug}.{tag}@{self.domain}>"


def one_line(value: str) -> str:
    """``value`` with every run of control characters (CR and LF among them) made a space."""
    return _CONTROL.sub(" ", value).strip()


def envelope_address(email: str) -> str:
    """``email`` as it goes into ``RCPT TO`` and ``To``: one ``@``, no spaces, angle
    brackets or control characters, and an international domain in its ASCII
    (punycode) form. A local part that is not ASCII is kept as it is."""
    if email.count("@") != 1 or _NOT_PLAIN.search(email):
        raise UnsendableAddress(f"cannot send to {email!r}: not a plain address")
    if email.isascii():
        return email
    # The rules the address was imported under (IDNA 2008, no unsafe characters), so
    # the domain is the one its punycode twin was folded with.
    try:
        checked = validate_email(email, check_deliverability=False)
    except EmailNotValidError as exc:
        raise UnsendableAddress(f"cannot send to {email!r}: {exc}") from exc
    return f"{checked.local_part}@{checked.ascii_domain}"


def to_header(name: str, address: str) -> bytes:
    """The ``To`` value: the reader's ``name`` (quoted, or RFC 2047 encoded when not
    ASCII, folded at 76 characters) and ``address`` as :func:`envelope_address` wrote
    it (UTF-8 only when its local part is not ASCII), on lines that cannot start a new
    header."""
    name = one_line(name)[:MAX_NAME_CHARS]
    if not name:
        return address.encode()
    if name.isascii():
        if _ATEXT_PHRASE.fullmatch(name):
            phrase = name
        else:
            phrase = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{phrase} <{address}>".encode()
    return b"\r\n ".join([*_encoded_words(name), f"<{address}>".encode()])


def _encoded_words(text: str) -> Iterable[bytes]:
    chunk = b""
    for char in text:
        encoded = char.encode("utf-8")
        if len(chunk) + len(encoded) > _WORD_BYTES:
            yield b"=?utf-8?b?" + base64.b64encode(chunk) + b"?="
            chunk = b""
        chunk += encoded
    if chunk:
        yield b"=?utf-8?b?" + base64.b64encode(chunk) + b"?="


def header_value(value: str) -> bytes:
    """A header value known to be one line of ASCII, folded after commas when long."""
    flat = one_line(value)
    if not flat.isascii():
        raise ValueError(f"header value is not ASCII: {flat!r}")
    return flat.replace(", ", ",\r\n ").encode("ascii") if len(flat) > 76 else flat.encode()


def check_header_block(block: bytes, allowed: set[str]) -> None:
    """Raise ValueError unless every line of ``block`` (CRLF-terminated) is a field named
    in ``allowed`` or a folded continuation of one: no line break may start anything else."""
    if not block.endswith(CRLF):
        raise ValueError("header block must end with CRLF")
    for line in block[:-2].split(CRLF):
        if b"\r" in line or b"\n" in line or not line:
            raise ValueError(f"bare line break in header block: {line!r}")
        if line[:1] in (b" ", b"\t"):
            continue
        name, colon, _ = line.partition(b":")
        if not colon or not _FIELD_NAME.fullmatch(name):
            raise ValueError(f"malformed header line: {line!r}")
        if name.decode("ascii").lower() not in allowed:
            raise ValueError(f"unexpected header field {name!r}")


def soft_break_after(encoded: bytes) -> bytes:
    """``encoded`` (quoted-printable) ended by a soft line break. binascii ends its
    output with a line of up to 76 characters, so a last line that long is split
    first (never inside an ``=XX`` escape), for the ``=`` not to make it 77."""
    last = encoded.rsplit(CRLF, 1)[-1]
    if len(last) < 76:
        return encoded + SOFT_BREAK
    cut = 75
    if last[cut - 1 : cut] == b"=":
        cut -= 1
    elif last[cut - 2 : cut - 1] == b"=":
        cut -= 2
    head = encoded[: len(encoded) - len(last)]
    return head + last[:cut] + SOFT_BREAK + last[cut:] + SOFT_BREAK


def quoted_printable(text: str) -> bytes:
    """``text`` as quoted-printable with CRLF line breaks and lines of at most 76 characters."""
    normalised = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    return binascii.b2a_qp(normalised, quotetabs=False, istext=True).replace(b"\n", CRLF)
