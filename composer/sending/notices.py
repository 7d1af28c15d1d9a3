"""The messages a reader's signup calls for, each built for one queued row
(:class:`~composer.store.mailqueue.QueuedMail`):

- the **confirmation**: plain text with the signed link (:mod:`composer.confirm_links`)
  and a line for whoever did not ask. It carries no List-Unsubscribe: the reader is on
  no list until they confirm. Nothing typed into the form is echoed in it but the
  address it goes to, so a stranger's signup cannot put words in the reader's inbox;
- the **welcome**: the editor's ``welcome.md`` (the shipped one when there is none),
  composed like an issue for the reader's tier and dated the day it is sent, with
  their own unsubscribe and manage links and List-Unsubscribe headers. ``serve`` does
  not publish it, so it links to no web version and has no share links.

A row's Message-ID is the same on every attempt, so a receiver that folds duplicates
by Message-ID folds the rare copy a crash sends twice.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

from composer.composing.folder import DEFAULT_WELCOME
from composer.composing.load import load_issue
from composer.composing.message import WIRE_POLICY
from composer.composing.pipeline import compose
from composer.config import Config
from composer.confirm_links import ConfirmLinks
from composer.errors import NewsletterError
from composer.model import TIERS, Tier
from composer.reader_links import ReaderLinks
from composer.sending.personalise import (
    CRLF,
    MessageTemplate,
    PersonalCopy,
    check_header_block,
    envelope_address,
    one_line,
    quoted_printable,
    to_header,
)
from composer.store.deliveries import Recipient
from composer.store.mailqueue import QueuedMail
from composer.unsubscribe import UnsubscribeLinks

CONFIRMATION_TEXT = """\
Someone, probably you, asked to subscribe {email} to {newsletter}.

To confirm, open this link and press the Confirm button:

{url}

The link works until {expires:%d %B %Y}.

You did not ask? Ignore this email: without your confirmation this address is not
subscribed, and nothing more comes of it.

--
{newsletter}{address}
"""


class Notices:
    """Builds the confirmation and welcome messages of ``config``'s newsletter. The
    welcome is composed once per tier and day, and again when its file changes."""

    def __init__(
        self,
        config: Config,
        confirm_links: ConfirmLinks,
        unsubscribe_links: UnsubscribeLinks,
        reader_links: ReaderLinks,
    ) -> None:
        self.config = config
        self.confirm_links = confirm_links
        self.unsubscribe_links = unsubscribe_links
        self.reader_links = reader_links
        self._welcomes: dict[Tier, tuple[tuple[Path, int, dt.date], MessageTemplate]] = {}
        # What every confirmation shares, serialised once; each adds To, Date, Message-ID.
        headers = EmailMessage(policy=WIRE_POLICY)
        headers["Subject"] = one_line(f"Confirm your subscription to {config.newsletter.name}")
        headers["From"] = config.newsletter.sender
        if config.newsletter.reply_to is not None:
            headers["Reply-To"] = config.newsletter.reply_to
        headers["MIME-Version"] = "1.0"
        headers["Content-Type"] = 'text/plain; charset="utf-8"'
        headers["Content-Transfer-Encoding"] = "quoted-printable"
        self._confirmation_headers = headers.as_bytes().split(CRLF + CRLF, 1)[0] + CRLF

    @classmethod
    def from_config(cls, config: Config) -> Notices:
        return cls(
            config,
            ConfirmLinks.from_config(config),
            UnsubscribeLinks.from_config(config),
            ReaderLinks.from_config(config),
        )

    def render(self, mail: QueuedMail) -> PersonalCopy:
        """The message ``mail`` stands for; :class:`UnsendableAddress` for an address that
        cannot be written safely, :class:`NewsletterError` for a welcome that does not
        compose."""
        if mail.kind == "confirm":
            return self.confirmation(mail)
        recipient = Recipient(email=mail.email, tier=mail.tier, name=mail.name, key=mail.key)
        return self.welcome(mail.tier).render(recipient)

    def confirmation(self, mail: QueuedMail) -> PersonalCopy:
        """The message with the link that confirms ``mail``'s signup."""
        newsletter = self.config.newsletter
        address = envelope_address(mail.email)
        url = self.confirm_links.url(mail.key, mail.email, mail.expires_at)
        tag = hashlib.sha256(mail.key.encode()).hexdigest()[:12]
        message_id = f"<confirm.{mail.id}.{tag}@{newsletter.sender.domain}>"
        personal = (
            b"To: " + to_header("", address) + CRLF
            + b"Date: " + format_datetime(dt.datetime.now(dt.UTC)).encode("ascii") + CRLF
            + b"Message-ID: " + message_id.encode("ascii") + CRLF
        )  # fmt: skip
        check_header_block(personal, {"to", "date", "message-id"})
        text = CONFIRMATION_TEXT.format(
            email=address,
            newsletter=newsletter.name,
            url=url,
            expires=mail.expires_at,
            address=f" · {newsletter.address}" if newsletter.address else "",
        )
        data = personal + self._confirmation_headers + CRLF + quoted_printable(text) + CRLF
        return PersonalCopy(message_id=message_id, envelope_address=address, data=data)

    def check_welcome(self) -> None:
        """Compose the welcome for every tier now: :class:`NewsletterError` naming the file
        and ``[subscribe] welcome`` when it does not compose, rather than each reader's
        welcome failing after they confirm."""
        for tier in TIERS:
            try:
                self.welcome(tier)
            except NewsletterError as exc:
                raise NewsletterError(
                    f"the welcome message ([subscribe] welcome) does not compose:"
                    f" {exc.format_message()}"
                ) from exc

    def welcome(self, tier: Tier) -> MessageTemplate:
        """The welcome for readers of ``tier``, serialised once for today."""
        path = self.config.subscribe.welcome
        if not path.exists():
            path = DEFAULT_WELCOME
        today = dt.datetime.now(dt.UTC).date()
        stamp = (path, path.stat().st_mtime_ns, today)
        cached = self._welcomes.get(tier)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        issue = dataclasses.replace(load_issue(path), date=today)
        composed = compose(issue, self.config, tier, web_version=False)
        template = MessageTemplate.build(
            composed, self.config, links=self.unsubscribe_links, reader_links=self.reader_links
        )
        self._welcomes[tier] = (stamp, template)
        return template
