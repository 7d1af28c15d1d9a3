"""Every error the user can meet, in one tree; apart from it, the signals between stages.

    NewsletterError (click.ClickException)   exit code 2 unless a subclass says otherwise
    ├── ConfigError                          config.toml is missing or wrong
    ├── IssueError                           an issue file cannot be loaded (file, line, column)
    ├── TemplateError                        a template under templates/ is broken
    ├── StoreError                           the subscriber database cannot be opened, too new,
    │                                        a server down or refusing the password
    │   ├── StoreBusy                        another process holds its write lock too long
    │   └── JournalError                     a dispatch cannot record (full disk): it stops
    ├── SubscriberFileError                  a subscriber CSV cannot be read at all
    ├── SubscriberError                      add/remove refused: bad address, not on the list
    │   └── AddressSuppressed                the address's data was erased at its owner's request
    ├── SecretError                          the unsubscribe signing secret is unsafe
    ├── OutboxError                          the outbox cannot listen on its port
    ├── ScheduleError                        ``schedule`` refused a time (no offset, past) or
    │   │                                    the worker an issue file that is another now
    │   └── NothingScheduled                 exit code 1: ``schedule --cancel`` found none
    ├── MailboxError                         the bounce mailbox cannot be reached or read
    ├── IssueNotReady                        exit code 1: ``send`` refused, ``check`` finds errors
    └── SendError                            exit code 1: talking to the SMTP server failed
        ├── SmtpConnectError (ConnectionError)   cannot connect, TLS handshake failed
        ├── SmtpAuthError                    the server refused the login (535): never retried
        ├── SmtpReplyError                   the server refused one message (code, reply, stage)
        ├── SmtpConnectionLost (ConnectionError) dropped, timed out or out of step:
        │                                    the connection is discarded
        ├── DispatchLocked                   another process (a send, a worker) is sending
        │                                    the same issue
        └── AlreadyDispatched                the same content went out in another dispatch

Library exceptions (tomllib, jinja2, mjml, sqlite3, psycopg, email-validator, aiosmtplib,
imaplib) are translated into these once, at the stage that calls the library, chained with
``from exc``.
Because the root is a ``click.ClickException``, the CLI prints the one-line message
and exits with the code without any command needing its own try/except.

Below them, apart, the internal signals: ``ValueError`` subclasses that one stage raises
and a stage above it always catches, turning them into data (a rejected row, a failed
recipient, a 400 page) or into one of the errors above. None of them reaches the user.

    ValueError
    ├── AddressRejected      email-validator refused an address (add, remove, import, "View as")
    ├── RowRejected          one CSV row cannot be imported: reported with its line, the rest go on
    ├── InvalidToken         an unsubscribe token is malformed, altered or not signed by us
    ├── UnsendableAddress    an address cannot go into a header or SMTP envelope safely:
    │                        that recipient fails, the dispatch goes on
    ├── WebhookRefused       a webhook request does not verify by its service's method (a
    │                        signature, credentials, a stale timestamp): 401, nothing recorded
    └── MalformedWebhook     a verified webhook request that cannot be read: 400
"""

from __future__ import annotations

from pathlib import Path

import click


class NewsletterError(click.ClickException):
    """Base of every user-facing error; the CLI prints ``message`` and exits with ``exit_code``."""

    exit_code = 2


class ConfigError(NewsletterError):
    """config.toml is missing, is not valid TOML, or holds a wrong or unknown setting."""


class TemplateError(NewsletterError):
    """A Jinja2 template or the MJML it produced cannot be rendered."""


class IssueError(NewsletterError):
    """An issue file cannot be loaded; the message names the file, line and the fix."""

    def __init__(
        self, path: Path, message: str, line: int | None = None, column: int | None = None
    ) -> None:
        self.path = path
        self.line = line
        self.column = column
        self.reason = message
        super().__init__(f"{location(path, line, column)}: {message}")


class StoreError(NewsletterError):
    """The subscriber database cannot be opened (not SQLite, a PostgreSQL server down or
    refusing the login), is from a newer release, or failed a statement."""


class StoreBusy(StoreError):
    """Another process held the subscriber database's write lock for longer than a
    command waits; nothing was written (or, for an import, the batches saved before)."""


class JournalError(StoreError):
    """The delivery record of a dispatch cannot be written (a full disk, a failing file), so
    the dispatch stops. ``unsaved`` counts the readers the server took whose ``sent``
    could not be recorded either: they stay in flight, and a rerun sends them again."""

    def __init__(self, message: str, *, unsaved: int = 0) -> None:
        self.unsaved = unsaved
        super().__init__(message)


class SubscriberFileError(NewsletterError):
    """A subscriber CSV cannot be imported at all; single bad rows are reported as data instead."""

    def __init__(self, path: Path, message: str, line: int | None = None) -> None:
        self.path = path
        self.line = line
        super().__init__(f"{location(path, line)}: {message}")


class SubscriberError(NewsletterError):
    """``subscribers add`` or ``remove`` was refused: bad, unknown or unsubscribed address."""


class AddressSuppressed(SubscriberError):
    """The address was erased at its owner's request: only a digest of it is kept, and
    nothing but the owner's own confirmed signup adds it again."""


class SecretError(NewsletterError):
    """The secret signing unsubscribe links is too short, or its key file is readable by others."""


class OutboxError(NewsletterError):
    """``newsletter outbox`` cannot listen where it was asked to (port in use, no permission)."""


class ScheduleError(NewsletterError):
    """A dispatch cannot be scheduled as asked (a time without a UTC offset, or past), or a
    scheduled one cannot start (its file now holds another issue)."""


class NothingScheduled(ScheduleError):
    """``schedule --cancel`` found no scheduled dispatch of the issue."""

    exit_code = 1


class MailboxError(NewsletterError):
    """The bounce mailbox ([bounces] source) cannot be reached, logged into or read."""


class IssueNotReady(NewsletterError):
    """``send`` refused the issue: ``newsletter check`` finds errors in it (a "TK" left in,
    no unsubscribe link…); ``send --skip-check`` sends it all the same."""

    exit_code = 1


class SendError(NewsletterError):
    """Sending failed; ``reply`` is what the server said, when it said anything."""

    exit_code = 1

    def __init__(self, message: str, *, code: int | None = None, reply: str = "") -> None:
        self.code = code
        self.reply = reply
        super().__init__(message)


class SmtpConnectError(SendError, ConnectionError):
    """The SMTP server cannot be reached, or the TLS handshake or certificate check failed."""


class SmtpAuthError(SendError):
    """The server refused the username or password; retrying could lock the account."""


# The stage of an SMTP transaction after the message itself: the final dot, then its reply.
END_OF_DATA = "end of DATA"


class SmtpReplyError(SendError):
    """The server refused one message with ``code``; the connection is still usable.

    ``stage`` is the command it answered (``MAIL``, ``RCPT`` or ``DATA``).
    """

    def __init__(self, message: str, *, code: int, reply: str, stage: str) -> None:
        self.stage = stage
        super().__init__(message, code=code, reply=reply)

    @property
    def temporary(self) -> bool:
        """A 4xx reply: the same message may succeed later."""
        return 400 <= (self.code or 0) < 500


class SmtpConnectionLost(SendError, ConnectionError):
    """The connection dropped, timed out or fell out of step mid-transaction. ``code`` is
    421 when the server said it was closing; ``timeout`` marks a step that took longer
    than [smtp] timeout; ``stage`` is the step (``CONNECT``, ``MAIL``, ``end of DATA``…)."""

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        reply: str = "",
        timeout: bool = False,
        stage: str = "",
    ) -> None:
        self.timeout = timeout
        self.stage = stage
        super().__init__(message, code=code, reply=reply)

    @property
    def outcome_unknown(self) -> bool:
        """No reply to the final dot in time: the server may have taken the message (a
        slow server often has), so sending it again may deliver it twice."""
        return self.timeout and self.stage == END_OF_DATA


class DispatchLocked(SendError):
    """Another process holds the dispatch lock of this issue."""


class AlreadyDispatched(SendError):
    """The issue's content was already sent in another dispatch (a copy of the file under
    another id); ``send --again`` sends it all the same."""


# Internal signals: never shown as they are, always caught by the stage above.


class AddressRejected(ValueError):
    """An address failed validation; ``reason`` is email-validator's explanation."""

    def __init__(self, value: str, reason: str) -> None:
        self.value = value
        self.reason = reason
        super().__init__(f"{value!r}: {reason}")


class RowRejected(ValueError):
    """One CSV row cannot be imported; ``value`` is the offending cell, ``reason`` the fix."""

    def __init__(self, value: str, reason: str) -> None:
        self.value = value
        self.reason = reason
        super().__init__(reason)


class InvalidToken(ValueError):
    """A token that is malformed, truncated, altered or signed under another secret."""


class UnsendableAddress(ValueError):
    """An address that cannot be written into a header or an SMTP envelope safely."""


class WebhookRefused(ValueError):
    """A webhook request that its service's own method does not verify: a bad or missing
    signature or credentials, a stale timestamp, a certificate from an untrusted place."""


class MalformedWebhook(ValueError):
    """A webhook request whose body is not what its service sends (not JSON, a field
    missing or of the wrong type)."""


def location(path: Path, line: int | None = None, column: int | None = None) -> str:
    """``file:line:column`` as compilers and editors print it, omitting what is unknown."""
    where = str(path)
    if line is not None:
        where += f":{line}"
        if column is not None:
            where += f":{column}"
    return where
