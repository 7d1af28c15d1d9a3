"""Wrap a composed issue into a standards-correct MIME message.

``multipart/alternative`` with the plain text first and the HTML last (clients show
the last part they understand), both UTF-8 in quoted-printable, with the headers a
newsletter needs. Header values go through :mod:`email.headerregistry`, which
refuses CR and LF, and the issue loader has already folded whitespace in the title.
"""

from __future__ import annotations

import datetime as dt
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from composer.composing.pipeline import ComposedIssue
from composer.config import Config

# CRLF line endings and strict header folding, as on the wire.
WIRE_POLICY = policy.SMTP.clone(raise_on_defect=True)


def build_message(
    composed: ComposedIssue, config: Config, *, to: str | None = None, subject_prefix: str = ""
) -> EmailMessage:
    """The email for ``composed``, addressed to ``to`` when given."""
    message = EmailMessage(policy=WIRE_POLICY)
    message["Subject"] = f"{subject_prefix}{composed.subject}"
    message["From"] = config.newsletter.sender
    if to is not None:
        message["To"] = to
    if config.newsletter.reply_to is not None:
        message["Reply-To"] = config.newsletter.reply_to
    message["Date"] = format_datetime(dt.datetime.now(dt.UTC))
    message["Message-ID"] = make_msgid(domain=config.newsletter.sender.domain)
    message.set_content(composed.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    message.add_alternative(composed.html, subtype="html", charset="utf-8", cte="quoted-printable")
    return message
