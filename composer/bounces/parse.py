"""One message from the bounce mailbox read into a :class:`Report`: what it says, about
whom, and how sure we are.

Read in this order, the first that applies deciding:

1. an RFC 3464 delivery status notification (``multipart/report;
   report-type=delivery-status``: Postfix, Sendmail, Gmail, Exchange and Office 365,
   most relays): per recipient its Action, Status and Diagnostic-Code, the
   Original-Recipient (else Final-Recipient), and the returned copy's Message-ID;
2. an RFC 5965 complaint (``report-type=feedback-report``, ARF: Yahoo, AOL,
   Outlook.com's JMRP): Feedback-Type ``abuse`` (or ``fraud``, ``virus``,
   ``other``), Original-Rcpt-To, the returned copy's Message-ID;
3. an auto-reply (Auto-Submitted ``auto-replied``, X-Autoreply, X-Autorespond,
   Precedence ``auto_reply``, a vacation or out-of-office subject) that does not look
   like a bounce: never counted;
4. the non-standard bounces of Exim, qmail, Yahoo, older Exchange and others, by
   flufl.bounce's detectors (Mailman's), which give each address and whether its
   failure is permanent; the diagnostic and the Message-ID are then read from the text.

What none of these make sense of is ``not-understood``, and stays in the mailbox.

A failure is ``hard`` only when it is permanent and about the address (RFC 3463 codes
5.0.x, 5.1.x but 5.1.7 and 5.1.8, the sender's; 5.2.0, 5.2.1, 5.4.1, 5.4.4; or a
diagnostic that says there is no such user). Other permanent ones (a policy or
spam block, 5.7.x; a message too large, 5.2.3 or 5.3.4; a full mailbox, 5.2.2) are
about the message: ``soft``, so one issue a filter disliked does not wipe the list.
"""

from __future__ import annotations

import datetime as dt
import email
import email.parser
import hashlib
import logging
import re
from dataclasses import dataclass, replace
from email.message import Message
from email.utils import parseaddr, parsedate_to_datetime
from typing import Literal

from composer.store.feedback import FeedbackKind, one_line

ReportKind = Literal["failure", "complaint", "auto-reply", "not-understood"]

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
# A reply code, not part of an IP address or a number: "550 No such user", "554:".
_SMTP_REPLY = re.compile(r"(?<![\w.\[])[45]\d\d(?=[ :-])")
_NO_SUCH_USER = re.compile(
    r"no such (user|mailbox|recipient)|user unknown|unknown user|does not exist|doesn't exist"
    r"|recipient not found|address rejected|invalid (recipient|mailbox|address)"
    r"|mailbox unavailable|not a valid mailbox|account (is )?(disabled|closed)",
    re.IGNORECASE,
)
_AUTO_SUBJECT = re.compile(
    r"^\s*(auto(matic|matische)?[ -]?(reply|response|antwort|svar)\b|auto:|autoreply"
    r"|out of (the )?office|on vacation|vacation|away from (the )?office|abwesen"
    r"|r[ée]ponse automatique|risposta automatica|respuesta autom[áa]tica|fuera de la oficina"
    r"|afwezig|automatisch antwoord)",
    re.IGNORECASE,
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|delivery (status notification|failure|has failed|failed)"
    r"|mail delivery (failed|failure|system)|returned mail|failure notice"
    r"|could not be delivered|non.?delivery|delivery problem|message not delivered",
    re.IGNORECASE,
)
_MAILER = re.compile(r"mailer-daemon|postmaster|mail delivery", re.IGNORECASE)
_MESSAGE_ID_LINE = re.compile(r"^message-id:\s*(<[^>\s]+>)", re.IGNORECASE | re.MULTILINE)
_COMPLAINT_TYPES = ("abuse", "fraud", "virus", "other")
# Headers a report's envelope recipient (the VERP address it came back to) may be in.
_DELIVERED_TO = ("delivered-to", "x-original-to", "envelope-to", "x-envelope-to", "to")
# What of a message is parsed: the report comes first, the returned copy (maybe a whole
# issue) last; a copy cut short still gives its headers.
_PARSE_LIMIT = 128 * 1024
_ADDRESS = re.compile(r"[^\s<>,;:\"()\[\]]+@[^\s<>,;:\"()\[\]]+")
# Enough of a long non-standard bounce to find its diagnostic and the copy's headers.
_TEXT_LIMIT = 64 * 1024


@dataclass(frozen=True, kw_only=True)
class Finding:
    """One recipient's failure, or one complaint, as a report states it."""

    kind: FeedbackKind
    recipient: str | None
    reason: str


@dataclass(frozen=True, kw_only=True)
class Report:
    """What one message in the bounce mailbox says. ``event_id`` is its Message-ID (a
    digest of its bytes without one); ``delivered_to`` the addresses it came to (where
    a VERP token is looked for); ``message_id`` the returned copy's Message-ID;
    ``summary`` names the message for people (its sender and subject)."""

    kind: ReportKind
    event_id: str
    occurred_at: dt.datetime
    summary: str
    delivered_to: tuple[str, ...] = ()
    message_id: str | None = None
    findings: tuple[Finding, ...] = ()


def read_report(raw: bytes) -> Report:
    """What the message ``raw`` says (see the module's docstring for the order)."""
    message = email.message_from_bytes(raw[:_PARSE_LIMIT])
    parts = _parts(message)
    base = _unread(message, raw, parts)
    if message.get_content_type() == "multipart/report":
        status = parts.get("message/delivery-status")
        if status is not None:
            findings = _delivery_status(status)
            if findings:
                return replace(base, kind="failure", findings=findings)
        feedback = parts.get("message/feedback-report")
        if feedback is not None:
            findings = _complaint(feedback, parts)
            if findings:
                return replace(base, kind="complaint", findings=findings)
    automatic = _is_auto_reply(message)
    if automatic and not _looks_like_bounce(message):
        return replace(base, kind="auto-reply")
    findings = _non_standard(message)
    if findings:
        if base.message_id is None:
            # No part returns the copy's headers: look for them in the bounce's text.
            quoted = _MESSAGE_ID_LINE.search(_text(message))
            base = replace(base, message_id=quoted[1] if quoted else None)
        return replace(base, kind="failure", findings=findings)
    return replace(base, kind="auto-reply" if automatic else "not-understood")


def _unread(message: Message, raw: bytes, parts: dict[str, Message]) -> Report:
    """The fields every report has, whatever it says, as a report not understood."""
    own_id = str(message.get("message-id", "")).strip()
    headers = " ".join(str(value) for name in _DELIVERED_TO for value in message.get_all(name, []))
    summary = f"from {message.get('from', '?')}: {message.get('subject', '')}"
    return Report(
        kind="not-understood",
        event_id=own_id or "sha256:" + hashlib.sha256(raw).hexdigest()[:32],
        occurred_at=_date(message),
        summary=one_line(summary)[:200],
        delivered_to=tuple(_ADDRESS.findall(headers)),
        message_id=_returned_message_id(parts),
    )


def _date(message: Message) -> dt.datetime:
    try:
        moment = parsedate_to_datetime(str(message.get("date", "")))
    except (TypeError, ValueError, IndexError):
        return dt.datetime.now(dt.UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _parts(message: Message) -> dict[str, Message]:
    """The first part of each content type in ``message``, found in one walk."""
    found: dict[str, Message] = {}
    for part in message.walk():
        found.setdefault(part.get_content_type(), part)
    return found


def _fields(part: Message) -> list[Message]:
    """The blocks of a ``message/delivery-status`` or ``message/feedback-report`` part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        blocks = [block for block in payload if isinstance(block, Message)]
        if blocks:
            return blocks
    text = part.get_payload(decode=True) or b""
    return [
        email.parser.HeaderParser().parsestr(chunk)
        for chunk in re.split(r"\r?\n\s*\r?\n", bytes(text).decode("utf-8", "replace"))
        if chunk.strip()
    ]


def _delivery_status(part: Message) -> tuple[Finding, ...]:
    findings = []
    for block in _fields(part)[1:] or _fields(part):
        recipient = _address_field(block.get("original-recipient")) or _address_field(
            block.get("final-recipient")
        )
        action = str(block.get("action", "")).strip().lower()
        status = str(block.get("status", "")).strip()
        diagnostic = one_line(str(block.get("diagnostic-code", "")))
        if recipient is None or action in ("delivered", "relayed", "expanded"):
            continue
        code = _STATUS.search(status)
        if action == "delayed" or (code is not None and code[1] == "4"):
            kind: FeedbackKind = "soft"
        elif action == "failed" or (code is not None and code[1] == "5"):
            kind = _failure_kind(status, diagnostic)
        else:
            continue
        findings.append(
            Finding(kind=kind, recipient=recipient, reason=one_line(f"{status} {diagnostic}"))
        )
    return tuple(findings)


def _complaint(part: Message, parts: dict[str, Message]) -> tuple[Finding, ...]:
    blocks = _fields(part)
    if not blocks:
        return ()
    fields = blocks[0]
    feedback_type = str(fields.get("feedback-type", "")).strip().lower()
    if feedback_type not in _COMPLAINT_TYPES:
        return ()
    recipient = _address_field(fields.get("original-rcpt-to"))
    if recipient is None:
        returned = _returned_headers(parts)
        recipient = parseaddr(str(returned.get("to", "")))[1] or None if returned else None
    agent = one_line(str(fields.get("user-agent", "")))
    reason = f"complaint: feedback-type {feedback_type}" + (f" ({agent})" if agent else "")
    return (Finding(kind="complaint", recipient=recipient, reason=reason),)


def _non_standard(message: Message) -> tuple[Finding, ...]:
    from flufl.bounce import all_failures

    # Its heuristic detectors raise on some malformed messages (and log each time):
    # such a message is one we do not understand, nothing more.
    logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)
    try:
        temporary, permanent = all_failures(message)
    except Exception:
        return ()
    if not temporary and not permanent:
        return ()
    text = _text(message)
    findings = []
    for failed, is_permanent in [(a, True) for a in sorted(permanent)] + [
        (a, False) for a in sorted(temporary - permanent)
    ]:
        address = failed.decode("ascii", "replace")
        reason = _diagnostic(text, address)
        kind: FeedbackKind = _failure_kind(reason, reason) if is_permanent else "soft"
        findings.append(Finding(kind=kind, recipient=address, reason=reason))
    return tuple(findings)


def _failure_kind(status: str, diagnostic: str) -> FeedbackKind:
    """``hard`` for a permanent failure of the address, ``soft`` for one of the message."""
    code = _STATUS.search(status) or _STATUS.search(diagnostic)
    if code is None or code[1] != "5":
        return "hard" if code is None or _NO_SUCH_USER.search(diagnostic) else "soft"
    subject, detail = code[2], code[3]
    about_address = (
        subject == "0"
        or (subject == "1" and detail not in ("7", "8"))
        or (subject == "2" and detail in ("0", "1"))
        or (subject == "4" and detail in ("1", "4"))
    )
    return "hard" if about_address or _NO_SUCH_USER.search(diagnostic) else "soft"


def _diagnostic(text: str, address: str) -> str:
    """The server's words about ``address`` in a non-standard bounce's text: the first
    line with an SMTP reply code or an enhanced status in the dozen after the address is
    named (else anywhere), else the line naming it."""
    lines = text.splitlines()
    named = next((n for n, line in enumerate(lines) if address.lower() in line.lower()), None)
    near = lines[named : named + 12] if named is not None else []
    for line in near + lines:
        reply = _SMTP_REPLY.search(line)
        if reply is not None:
            return one_line(line[reply.start() :])
        if _STATUS.search(line):
            return one_line(line)
    return one_line(lines[named]) if named is not None else "(no diagnostic given)"


def _text(message: Message) -> str:
    """The message's text parts and returned headers, decoded, up to a limit."""
    chunks: list[str] = []
    size = 0
    for part in message.walk():
        if part.get_content_maintype() == "multipart":
            continue
        if part.get_content_type() in ("text/plain", "text/rfc822-headers", "message/rfc822"):
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                chunk = payload.decode(part.get_content_charset() or "utf-8", "replace")
            elif isinstance(payload, list):
                chunk = "\n".join(str(p) for p in payload)
            else:
                continue
        elif isinstance(part.get_payload(), Message) or part.get_content_maintype() == "message":
            chunk = str(part)
        else:
            continue
        chunks.append(chunk[: _TEXT_LIMIT - size])
        size += len(chunks[-1])
        if size >= _TEXT_LIMIT:
            break
    return "\n".join(chunks)


def _returned_headers(parts: dict[str, Message]) -> Message | None:
    """The headers of the copy a report returns (``message/rfc822`` or
    ``text/rfc822-headers``), None when it returns none."""
    for kind in ("message/rfc822", "message/rfc822-headers"):
        payload = parts[kind].get_payload() if kind in parts else None
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            return payload[0]
    if "text/rfc822-headers" in parts:
        text = parts["text/rfc822-headers"].get_payload(decode=True) or b""
        return email.parser.HeaderParser().parsestr(bytes(text).decode("utf-8", "replace"))
    return None


def _returned_message_id(parts: dict[str, Message]) -> str | None:
    returned = _returned_headers(parts)
    if returned is None:
        return None
    value = str(returned.get("message-id", "")).strip()
    return value or None


def _address_field(value: object) -> str | None:
    """The address of a ``rfc822; ann@example.org`` field (its type may be missing)."""
    if value is None:
        return None
    text = str(value)
    kind, semicolon, address = text.partition(";")
    if not semicolon:
        address = kind
    elif kind.strip().lower() not in ("rfc822", "utf-8"):
        return None
    address = address.strip().strip("<>").strip()
    return address if "@" in address else None


def _is_auto_reply(message: Message) -> bool:
    auto = str(message.get("auto-submitted", "")).strip().lower()
    if auto.startswith("auto-replied"):
        return True
    if message.get("x-autoreply") is not None or message.get("x-autorespond") is not None:
        return True
    if str(message.get("precedence", "")).strip().lower() == "auto_reply":
        return True
    return bool(_AUTO_SUBJECT.search(str(message.get("subject", ""))))


def _looks_like_bounce(message: Message) -> bool:
    return (
        message.get("x-failed-recipients") is not None
        or bool(_BOUNCE_SUBJECT.search(str(message.get("subject", ""))))
        or bool(_MAILER.search(str(message.get("from", ""))))
    )
