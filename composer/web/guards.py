"""ASGI middleware that ``serve`` and ``preview`` wrap around their apps: which Host a
request may name, how large a body may be, and the headers every response carries.

Each wraps a whole app and acts before any route runs, so no route can forget it:

- :class:`LoopbackHostOnly` refuses (403; a WebSocket is closed with 1008) a request
  that does not name the loopback address and port the server listens on, or
  ``localhost`` at that port. A page on a rebound name (attacker.example resolving to
  127.0.0.1) is same-origin with itself, so only the Host it sends tells it apart from
  the preview's own page.
- :class:`BodyLimit` refuses (413) a body over its cap: one announced by Content-Length
  before a byte of it is read, one streamed without a length as soon as the bytes
  received pass the cap. Nothing of it reaches the app; after the answer, at most
  :data:`DISCARD_BYTES` more are read and dropped, then the server hangs up. The cap
  is one for every path, except under the prefixes given a cap of their own.
- :class:`SecurityHeaders` adds each of its headers to every response that does not set
  its own, so a route only spells out a policy that differs from the default.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOOPBACK_NAMES = ("127.0.0.1", "localhost")
POLICY_VIOLATION = 1008  # the WebSocket close code for a refused connection


class LoopbackHostOnly:
    """Refuse any request whose Host is not ``127.0.0.1:PORT`` or ``localhost:PORT``,
    PORT being the one the server listens on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not _names_this_server(scope):
            if scope["type"] == "websocket":
                # Closing before accepting is how ASGI refuses a handshake (the server
                # answers 403); an HTTP response there needs an extension not every
                # server has.
                await send({"type": "websocket.close", "code": POLICY_VIOLATION})
                return
            refusal = PlainTextResponse("this server answers only to 127.0.0.1 and localhost", 403)
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _names_this_server(scope: Scope) -> bool:
    server = scope.get("server")
    if not server:  # a Unix socket: no port to match, so nothing does
        return False
    host = Headers(scope=scope).get("host", "").lower()
    return host in {f"{name}:{server[1]}" for name in LOOPBACK_NAMES}


class BodyTooLarge(Exception):
    """Raised in the app by ``receive`` once the body passes the cap; the 413 is sent."""


# After a 413 the rest of the body is read and dropped, within these bounds, before
# hanging up: closing a socket with unread bytes resets the connection, and the reset
# can destroy the 413 before a client that is still sending gets to read it.
DISCARD_BYTES = 1024 * 1024
DISCARD_SECONDS = 1.0


class BodyLimit:
    """Refuse a request body over ``max_bytes`` with 413, keeping none of it; a path
    under a prefix of ``prefix_caps`` has that prefix's cap instead."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, prefix_caps: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.prefix_caps = dict(prefix_caps or {})

    def cap(self, path: str) -> int:
        """The largest body accepted at ``path``."""
        for prefix, cap in self.prefix_caps.items():
            if path.startswith(prefix):
                return cap
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.cap(scope["path"])
        # uvicorn (h11) has already refused a Content-Length that is not a number.
        announced = Headers(scope=scope).get("content-length")
        if announced is not None and int(announced) > max_bytes:
            await self._refuse(receive, send, max_bytes)
            return

        received = 0
        refused = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            received += len(message.get("body", b""))
            if received > max_bytes:
                refused = True
                if not started:
                    await self._refuse(receive, send, max_bytes, message.get("more_body", False))
                raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 went out; whatever the app answers after it is moot
            started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except BodyTooLarge:
            if not refused:
                raise

    async def _refuse(
        self, receive: Receive, send: Send, max_bytes: int, more_to_come: bool = True
    ) -> None:
        # Connection: close makes uvicorn hang up rather than read the rest to reuse it.
        refusal = PlainTextResponse(
            f"request body too large (over {max_bytes} bytes)",
            413,
            headers={"Connection": "close"},
        )
        start = {"type": "http.response.start", "status": 413, "headers": refusal.raw_headers}
        await send(start)
        # The whole answer goes out now; the response ends (and uvicorn hangs up) after.
        await send({"type": "http.response.body", "body": refusal.body, "more_body": True})
        if more_to_come:
            await _discard_rest(receive)
        await send({"type": "http.response.body", "body": b""})


async def _discard_rest(receive: Receive) -> None:
    discarded = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DISCARD_SECONDS):
            while discarded <= DISCARD_BYTES:
                message = await receive()
                discarded += len(message.get("body", b""))
                if message["type"] != "http.request" or not message.get("more_body", False):
                    return


class SecurityHeaders:
    """Add each of ``headers`` to every response that has not set it itself."""

    def __init__(self, app: ASGIApp, headers: Mapping[str, str]) -> None:
        self.app = app
        self.headers = dict(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
