"""The bounce mailbox: the messages not yet processed, and marking one processed.

Two real implementations of one small interface (:class:`Mailbox`): a Maildir on
this machine, and an IMAP folder (``imaps://``, or ``imap://`` upgraded with
STARTTLS; never a login in clear). IMAP is spoken with the standard :mod:`imaplib`:
four commands are all it takes (LOGIN, SELECT, UID SEARCH/FETCH/STORE), and every
error it raises is translated here, once, into :class:`MailboxError`.

A message counts as processed once it is marked, and it is marked only after its
outcome is recorded: in a Maildir it moves from ``new/`` to ``cur/`` with the Seen
flag (``:2,S``), on IMAP it gets ``\\Seen``. Processed messages are not read again;
one left unmarked (not understood) is read again by the next fetch.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple, Protocol

from composer.config import BounceMailbox, BounceSettings
from composer.errors import MailboxError

IMAP_TIMEOUT = 30.0


class Letter(NamedTuple):
    """One message of the mailbox: ``ref`` names it there (a Maildir file, an IMAP UID)."""

    ref: str
    raw: bytes


class Mailbox(Protocol):
    """Where bounce reports arrive. ``name`` says which, for messages."""

    name: str

    def unread(self) -> Iterator[Letter]:
        """The messages not yet marked processed, one at a time."""

    def mark_read(self, ref: str) -> None:
        """Mark the message ``ref`` processed: it is not read again."""

    def close(self) -> None:
        """Release the connection, if any."""


def open_mailbox(settings: BounceSettings) -> Mailbox:
    """The mailbox ``[bounces] source`` names, opened (and, for IMAP, logged into)."""
    box = settings.mailbox
    if box is None:
        raise MailboxError(
            'no bounce mailbox: set [bounces] source in config.toml (such as "maildir:bounces"'
            ' or "imaps://bounces@mail.example.com/INBOX")'
        )
    if box.path is not None:
        return MaildirMailbox(box.path)
    password = os.environ.get(settings.password_env, "")
    if not password:
        raise MailboxError(
            f"{box}: no password; set the environment variable {settings.password_env}"
            " (named by [bounces] password_env)"
        )
    return ImapMailbox(box, password, settings.ca_file)


class MaildirMailbox:
    """A Maildir: messages in ``new/``, and those in ``cur/`` without the Seen flag."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = f"maildir:{path}"
        missing = [sub for sub in ("new", "cur", "tmp") if not (path / sub).is_dir()]
        if missing:
            raise MailboxError(
                f"{path}: not a Maildir (no {', '.join(missing)}/ in it); point [bounces]"
                " source at the folder that holds new/, cur/ and tmp/"
            )

    def unread(self) -> Iterator[Letter]:
        # Names are listed before any is moved (moving files out of a folder being
        # scanned may skip some); the messages themselves are read one at a time.
        for sub in ("new", "cur"):
            for name in sorted(os.listdir(self.path / sub)):
                if name.startswith(".") or (sub == "cur" and "S" in _flags(name)):
                    continue
                try:
                    raw = (self.path / sub / name).read_bytes()
                except FileNotFoundError:  # another reader took it meanwhile
                    continue
                except OSError as exc:
                    raise MailboxError(f"{self.path / sub / name}: cannot be read ({exc})") from exc
                yield Letter(ref=f"{sub}/{name}", raw=raw)

    def mark_read(self, ref: str) -> None:
        sub, _, name = ref.partition("/")
        base, _, flags = name.partition(":2,")
        seen = "".join(sorted(set(flags) | {"S"}))
        try:
            os.rename(self.path / sub / name, self.path / "cur" / f"{base}:2,{seen}")
        except OSError as exc:
            raise MailboxError(
                f"{self.path / ref}: cannot be marked processed ({exc}); its outcome is"
                " recorded, and reading it again changes nothing"
            ) from exc

    def close(self) -> None:
        """Nothing to release."""


def _flags(name: str) -> str:
    return name.partition(":2,")[2]


class ImapMailbox:
    """One IMAP folder, over TLS from the first byte (imaps) or after STARTTLS (imap)."""

    def __init__(
        self,
        box: BounceMailbox,
        password: str,
        ca_file: Path | None = None,
        *,
        timeout: float = IMAP_TIMEOUT,
    ) -> None:
        self.box = box
        self.name = str(box)
        with self._translated("cannot connect"):
            context = ssl.create_default_context(cafile=ca_file)
            if box.scheme == "imaps":
                self._imap: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                    box.host, box.port, ssl_context=context, timeout=timeout
                )
            else:
                self._imap = imaplib.IMAP4(box.host, box.port, timeout=timeout)
        try:
            if box.scheme == "imap":
                with self._translated("STARTTLS failed (the password was not sent)"):
                    self._imap.starttls(ssl_context=context)
            with self._translated(f"the server refused the login of {box.user}"):
                self._imap.login(box.user, password)
            with self._translated(f"cannot open the folder {box.folder!r}"):
                status, detail = self._imap.select(_quoted(box.folder))
                if status != "OK":
                    raise imaplib.IMAP4.error(_text(detail))
        except BaseException:
            with contextlib.suppress(Exception):
                self._imap.shutdown()
            raise

    def unread(self) -> Iterator[Letter]:
        with self._translated("cannot search the folder"):
            status, data = self._imap.uid("SEARCH", "UNSEEN")
            if status != "OK":
                raise imaplib.IMAP4.error(_text(data))
        for uid in (data[0] or b"").decode("ascii").split():
            with self._translated(f"cannot fetch message {uid}"):
                status, parts = self._imap.uid("FETCH", uid, "(BODY.PEEK[])")
                if status != "OK":
                    raise imaplib.IMAP4.error(_text(parts))
            raw = next((p[1] for p in parts if isinstance(p, tuple)), None)
            if raw is not None:  # expunged meanwhile
                yield Letter(ref=uid, raw=raw)

    def mark_read(self, ref: str) -> None:
        with self._translated(f"cannot mark message {ref} processed"):
            status, data = self._imap.uid("STORE", ref, "+FLAGS.SILENT", "(\\Seen)")
            if status != "OK":
                raise imaplib.IMAP4.error(_text(data))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._imap.logout()

    @contextlib.contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        """imaplib's, ssl's and the socket's errors as one :class:`MailboxError` line."""
        try:
            yield
        except ssl.SSLError as exc:
            raise MailboxError(
                f"{self.name}: {what}: TLS failed ({exc}); for a server with its own"
                " certificate set [bounces] ca_file"
            ) from exc
        except (imaplib.IMAP4.error, OSError) as exc:
            raise MailboxError(f"{self.name}: {what} ({exc})") from exc


def _quoted(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text(data: object) -> str:
    if isinstance(data, list) and data and isinstance(data[0], bytes):
        return data[0].decode("utf-8", "replace")
    return str(data)
