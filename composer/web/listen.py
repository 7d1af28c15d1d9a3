"""Binding the port before a web server starts, so that a port in use is one readable
error, not uvicorn's log lines and exit code 3: :func:`listen`."""

from __future__ import annotations

import socket

from composer.errors import NewsletterError

LOOPBACK = "127.0.0.1"


def listen(port: int, host: str = LOOPBACK) -> socket.socket:
    """A socket listening on ``host:port`` (port 0: any free one), or a readable error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP said outright: asyncio sets TCP_NODELAY only on connections whose
    # socket names it, and without it every answer on a kept-alive connection waits
    # 40 ms for the client's delayed ACK (headers and body are two writes).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        # Listening at once queues a browser that connects before uvicorn has started.
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise NewsletterError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc});"
            " pass --port N (0 picks a free one)"
        ) from exc
    return sock
