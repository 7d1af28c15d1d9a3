"""The built-in outbox: an SMTP server that accepts every message and keeps it as a file.

Like any server that delivers a message to its mailbox, it puts the envelope's sender
(``MAIL FROM``) on top as ``Return-Path``: the address a bounce would go to, which is
each copy's own with ``[bounces] address``.

``newsletter outbox`` runs it on the port the shipped config.toml points at, so
send-test and send work on a machine with no mail account; the tests run it on a
free port, with fault-injecting handlers around it. This is the only module that
imports aiosmtpd.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from composer.errors import OutboxError

_UNSAFE = re.compile(r"[^A-Za-z0-9@._+-]")


class MessageFolder:
    """A folder holding one ``.eml`` file per message, named so they sort by arrival."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._counter = itertools.count(1)

    def store(self, recipients: list[str], data: bytes) -> Path:
        """Write ``data`` (the message as received) and return its path."""
        self.path.mkdir(parents=True, exist_ok=True)
        first = _UNSAFE.sub("_", recipients[0] if recipients else "nobody")[:80]
        while True:
            path = self.path / f"{time.time_ns()}-{next(self._counter):06d}-{first}.eml"
            try:
                # O_EXCL: two outboxes on one folder never overwrite each other's files.
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
            return path

    def messages(self) -> list[Path]:
        """Every stored message, oldest first."""
        return sorted(self.path.glob("*.eml")) if self.path.exists() else []


class OutboxHandler:
    """aiosmtpd handler: store each message in ``folder`` and report it to ``on_message``."""

    def __init__(
        self, folder: MessageFolder, on_message: Callable[[str, list[str], Path], None] | None
    ) -> None:
        self.folder = folder
        self.on_message = on_message

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        sender = envelope.mail_from or ""
        content = (
            b"Return-Path: <" + sender.encode() + b">\r\n" + (envelope.original_content or b"")
        )
        path = self.folder.store(list(envelope.rcpt_tos), content)
        if self.on_message is not None:
            self.on_message(str(envelope.mail_from), list(envelope.rcpt_tos), path)
        return f"250 2.0.0 Stored as {path.name}"


async def start_smtp_server(handler: Any, host: str, port: int, **options: Any) -> asyncio.Server:
    """Listen on ``host:port`` (0 for a free port) with an aiosmtpd session per connection;
    ``options`` go to aiosmtpd's ``SMTP`` (authentication, TLS)."""
    loop = asyncio.get_running_loop()
    # A fixed hostname: aiosmtpd's default looks up this machine's FQDN in the DNS.
    return await loop.create_server(
        lambda: SMTP(handler, hostname="outbox.localhost", ident="newsletter outbox", **options),
        host=host,
        port=port,
    )


def run_outbox(
    directory: Path,
    host: str,
    port: int,
    on_message: Callable[[str, list[str], Path], None] | None = None,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Run the outbox until interrupted, storing messages under ``directory``."""

    async def serve() -> None:
        server = await start_smtp_server(
            OutboxHandler(MessageFolder(directory), on_message), host, port
        )
        if on_ready is not None:
            on_ready(server.sockets[0].getsockname()[1])
        async with server:
            await server.serve_forever()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise OutboxError(
            f"outbox cannot listen on {host}:{port} ({exc.strerror or exc});"
            " is another one running? pass --port N"
        ) from exc
