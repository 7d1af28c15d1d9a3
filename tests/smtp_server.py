"""A real SMTP server for the sending tests: the outbox (aiosmtpd) on a free loopback
port, in its own thread, with faults injected per recipient.

``faults[address]`` is a list consumed one entry per attempt at that address:
``"451 …"``/``"550 …"`` (a reply at RCPT), ``"data:554 …"`` (a reply at DATA),
``"421"`` (say so at RCPT and close the session), ``"drop"`` (close the connection mid-DATA,
storing nothing), ``"stall"`` (never answer DATA in time, storing nothing), ``"store-stall"``
(store the message, then answer the final dot only after the client's timeout: a server
that delivers but whose reply never arrives).

``sessions`` records, per stored message, the TLS cipher of its connection (None in
clear) and the login it was sent under (None without AUTH); ``envelopes`` its
sender, recipients and MAIL options (``SMTPUTF8``) as the server read them.
"""

from __future__ import annotations

import asyncio
import collections
import email
import ssl
import threading
from email import policy
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from composer.sending.outbox import MessageFolder, OutboxHandler, start_smtp_server


class FaultyOutbox(OutboxHandler):
    def __init__(self, folder: MessageFolder) -> None:
        super().__init__(folder, None)
        self.faults: dict[str, list[str]] = {}
        self.data_delay = 0.0
        self.stall_seconds = 2.0
        self.attempts: collections.Counter[str] = collections.Counter()
        self.sessions: list[tuple[tuple[str, str, int] | None, bytes | None]] = []
        self.envelopes: list[tuple[str | None, list[str], list[str]]] = []

    def _next(self, address: str, stage: str) -> str | None:
        queue = self.faults.get(address)
        if not queue:
            return None
        at_data = queue[0].startswith("data:") or queue[0] in ("drop", "stall", "store-stall")
        if at_data != (stage == "DATA"):
            return None
        return queue.pop(0).removeprefix("data:")

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.attempts[address] += 1
        fault = self._next(address, "RCPT")
        if fault == "421":
            # Say goodbye, then hang up once the reply is on its way.
            asyncio.get_running_loop().call_soon(server.transport.close)
            return "421 4.3.2 Service shutting down, closing channel"
        if fault is not None:
            return fault
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        address = envelope.rcpt_tos[0]
        fault = self._next(address, "DATA")
        if fault == "drop":
            server.transport.close()
            return "250 never heard"
        if fault == "stall":
            await asyncio.sleep(self.stall_seconds)
            return "451 too late"
        if fault == "store-stall":
            stored = await self._store(server, session, envelope)
            await asyncio.sleep(self.stall_seconds)
            return stored
        if fault is not None:
            return fault
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        return await self._store(server, session, envelope)

    async def _store(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        login = session.auth_data.login if session.authenticated else None
        self.sessions.append((server.transport.get_extra_info("cipher"), login))
        self.envelopes.append(
            (envelope.mail_from, list(envelope.rcpt_tos), list(envelope.mail_options))
        )
        return await super().handle_DATA(server, session, envelope)


class SmtpServer:
    """The server, its port and what it has stored. ``implicit_tls`` makes every
    connection TLS from the first byte (port 465 style); ``port`` 0 picks a free one;
    ``options`` go to aiosmtpd's ``SMTP`` (``tls_context`` offers STARTTLS,
    ``authenticator`` enables AUTH)."""

    def __init__(
        self,
        folder: Path,
        *,
        implicit_tls: ssl.SSLContext | None = None,
        port: int = 0,
        **options: Any,
    ) -> None:
        self.folder = MessageFolder(folder)
        self.handler = FaultyOutbox(self.folder)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        if implicit_tls is not None:
            start = self.loop.create_server(
                lambda: SMTP(self.handler, hostname="outbox.localhost", **options),
                host="127.0.0.1",
                port=port,
                ssl=implicit_tls,
            )
        else:
            start = start_smtp_server(self.handler, "127.0.0.1", port, **options)
        future = asyncio.run_coroutine_threadsafe(start, self.loop)
        self.server = future.result(timeout=10)
        self.port: int = self.server.sockets[0].getsockname()[1]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)

    def messages(self) -> list[email.message.EmailMessage]:
        return [
            email.message_from_bytes(path.read_bytes(), policy=policy.default)  # type: ignore[misc]
            for path in self.folder.messages()
        ]

    def received(self) -> collections.Counter[str]:
        """How many messages each address received, by the To header."""
        return collections.Counter(str(m["To"].addresses[0].addr_spec) for m in self.messages())


class CountingHandler:
    """Takes every message and only counts it, per recipient: for dispatches of many
    thousands, where storing each would measure the disk."""

    def __init__(self) -> None:
        self.received: collections.Counter[str] = collections.Counter()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.received.update(envelope.rcpt_tos)
        return "250 OK"


class CountingServer:
    """A :class:`CountingHandler` on a free loopback port, in its own thread."""

    def __init__(self) -> None:
        self.handler = CountingHandler()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        start = start_smtp_server(self.handler, "127.0.0.1", 0)
        self.server = asyncio.run_coroutine_threadsafe(start, self.loop).result(timeout=10)
        self.port: int = self.server.sockets[0].getsockname()[1]

    @property
    def received(self) -> collections.Counter[str]:
        return self.handler.received

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
