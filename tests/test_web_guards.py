"""The guards around `serve` and `preview`, over real HTTP (uvicorn on a free loopback
port): the preview answers only requests that name it by its loopback address (DNS
rebinding), every body is capped before it is read, and every response carries the
security headers."""

from __future__ import annotations

import asyncio
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser
from starlette.types import Message, Receive, Scope, Send

from composer.config import Config
from composer.store import NewSubscriber, SubscriberStore
from composer.unsubscribe import UnsubscribeLinks
from composer.web.guards import LoopbackHostOnly
from tests.conftest import EXAMPLE_MD, published_copy
from tests.previewing import RunningPreview, copy_example, running_preview
from tests.smtp_server import SmtpServer


@pytest.fixture
def running(tmp_path: Path, config_path: Path) -> Iterator[RunningPreview]:
    with running_preview(copy_example(tmp_path), config_path) as running:
        yield running


@pytest.fixture
def ann(store: SubscriberStore) -> SubscriberStore:
    store.save(NewSubscriber(email="ann@example.com", key="ann@example.com", name="Ann Lee"))
    return store


def port_of(client: httpx.Client) -> int:
    port = urlsplit(str(client.base_url)).port
    assert port is not None
    return port


# -- 1. the preview answers only to its own address ----------------------------------------

PREVIEW_GETS = [
    "/",
    "/state?as=ann@example.com",
    "/state?as=nobody@example.com",
    "/email?as=ann@example.com&tier=paid",
    "/email?tier=paid&format=text",
    "/events?as=ann@example.com",
]


@pytest.mark.parametrize("path", PREVIEW_GETS)
def test_preview_refuses_a_request_naming_another_host_and_leaks_nothing(
    running: RunningPreview, ann: SubscriberStore, path: str
) -> None:
    port = port_of(running.client)
    # What a page on a rebound name sends, and near misses of the real address.
    for host in (
        f"attacker.example:{port}",
        "attacker.example",
        f"127.0.0.1.attacker.example:{port}",
        f"localhost.attacker.example:{port}",
        f"127.0.0.1:{port + 1}",
        "127.0.0.1",
    ):
        with running.client.stream("GET", path, headers={"Host": host}) as response:
            body = response.read()
        assert response.status_code == 403, (path, host)
        assert response.headers["content-type"].startswith("text/plain")
        assert len(body) < 200
        for secret in (b"Ann", b"ann@", b"subscriber", b"token", b"paid", b"data pipeline"):
            assert secret not in body, (path, host)


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST:{port}"])
def test_preview_answers_its_loopback_address_and_localhost(
    running: RunningPreview, ann: SubscriberStore, host: str
) -> None:
    headers = {"Host": host.format(port=port_of(running.client))}
    state = running.client.get("/state", params={"as": "ann@example.com"}, headers=headers)
    assert state.status_code == 200
    assert state.json()["reader"]["name"] == "Ann Lee"


def test_a_websocket_from_a_rebound_name_is_closed_unaccepted_with_policy_violation() -> None:
    reached: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(scope)

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "path": "/events",
        "headers": [(b"host", b"attacker.example:8001")],
        "server": ("127.0.0.1", 8001),
    }
    asyncio.run(LoopbackHostOnly(app)(scope, receive, send))
    assert sent == [{"type": "websocket.close", "code": 1008}]
    assert reached == []


def test_send_test_from_a_rebound_name_is_refused_even_with_a_matching_origin(
    running: RunningPreview,
) -> None:
    host = f"attacker.example:{port_of(running.client)}"
    response = running.client.post(
        "/send-test",
        json={"tier": "paid"},
        headers={"X-Newsletter-Preview": "1", "Host": host, "Origin": f"http://{host}"},
    )
    assert response.status_code == 403


# -- 2. bodies are capped before they are read ---------------------------------------------

CHUNK = 64 * 1024
GIVE_UP = 64 * 1024 * 1024  # what a test sends at most, of a body announced as 1 GiB


def unsubscribe_path(config: Config) -> str:
    url = UnsubscribeLinks.from_config(config).url("ann@example.com", "issue-7")
    return url.removeprefix(config.newsletter.base_url)


@dataclass
class Exchange:
    answer: bytes  # the status line and headers
    sent_before_answer: int  # bytes of body sent before the answer came
    seconds: float
    sent_in_all: int  # bytes of body the client got out before the server hung up


def push_body(port: int, head: str, *, chunked: bool) -> Exchange:
    """Send ``head``, then an endless body (chunked, or as much as Content-Length said),
    as a browser would: watching for an early answer while sending. Once it comes, go
    on sending until the server hangs up (or GIVE_UP bytes went out)."""
    piece = b"List-Unsubscribe=One-Click&" + b"x" * (CHUNK - 27)
    if chunked:
        piece = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    started = time.monotonic()
    answer, sent, sent_before_answer = b"", 0, -1
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head.encode("latin-1").replace(b"\n", b"\r\n") + b"\r\n")
        try:
            while sent < GIVE_UP:
                if sent_before_answer < 0 and select.select([sock], [], [], 0.01)[0]:
                    answer = sock.recv(65536)
                    sent_before_answer = sent
                    seconds = time.monotonic() - started
                sock.sendall(piece)
                sent += len(piece)
        except (ConnectionResetError, BrokenPipeError):
            pass  # hung up on
    assert sent_before_answer >= 0, f"no answer after {sent} bytes"
    return Exchange(answer, sent_before_answer, seconds, sent)


def post_head(config: Config, port: int, framing: str) -> str:
    return (
        f"POST {unsubscribe_path(config)} HTTP/1.1\n"
        f"Host: 127.0.0.1:{port}\n"
        "Content-Type: application/x-www-form-urlencoded\n"
        f"{framing}\n"
    )


@pytest.mark.parametrize("framing", [f"Content-Length: {1 << 30}", "Transfer-Encoding: chunked"])
def test_an_oversized_body_is_answered_413_at_once_and_not_read(
    server: httpx.Client, config: Config, ann: SubscriberStore, framing: str
) -> None:
    port = port_of(server)
    exchange = push_body(port, post_head(config, port, framing), chunked="chunked" in framing)
    assert exchange.answer.startswith(b"HTTP/1.1 413 "), exchange.answer
    assert b"connection: close" in exchange.answer.lower()
    assert exchange.seconds < 1
    # Answered once the cap was passed, not after the body (1 GiB, or endless) was read.
    assert exchange.sent_before_answer <= 4 * CHUNK
    # Then the server read at most a little more (the rest sat in socket buffers) and
    # hung up: the body was never gathered.
    assert exchange.sent_in_all < GIVE_UP
    assert ann.get("ann@example.com").status == "active"  # type: ignore[union-attr]


@pytest.mark.parametrize("streamed", [False, True])
def test_a_client_that_reads_only_after_sending_still_gets_the_413(
    server: httpx.Client, config: Config, ann: SubscriberStore, streamed: bool
) -> None:
    body = b"List-Unsubscribe=One-Click&pad=" + b"x" * 256 * 1024
    response = server.post(
        unsubscribe_path(config),
        content=iter([body]) if streamed else body,  # chunked, or with Content-Length
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 413
    assert response.text == "request body too large (over 4096 bytes)"
    assert ann.get("ann@example.com").status == "active"  # type: ignore[union-attr]


def test_a_small_body_is_still_read_and_acted_on(
    server: httpx.Client, config: Config, ann: SubscriberStore
) -> None:
    padded = {"List-Unsubscribe": "One-Click", "pad": "x" * 2000}

    def streamed() -> Iterator[bytes]:
        yield b"List-Unsubscribe=One-Click"

    assert server.post(unsubscribe_path(config), data=padded).status_code == 200
    ann.save(NewSubscriber(email="bob@example.com", key="bob@example.com"))
    bob = UnsubscribeLinks.from_config(config).url("bob@example.com")
    response = server.post(bob.removeprefix(config.newsletter.base_url), content=streamed())
    assert response.status_code == 200
    assert {s.email: s.status for s in ann.iter_all()} == {
        "ann@example.com": "unsubscribed",
        "bob@example.com": "unsubscribed",
    }


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_body_where_none_is_expected_is_refused_too(server: httpx.Client, method: str) -> None:
    response = server.request(method, "/", content=b"x" * 64 * 1024)
    assert response.status_code == 413


def test_preview_send_test_with_an_oversized_body_is_refused_and_sends_nothing(
    tmp_path: Path, send_config: Path, smtp: SmtpServer
) -> None:
    with running_preview(copy_example(tmp_path), send_config) as running:
        response = running.client.post(
            "/send-test",
            content=b'{"tier": "paid", "pad": "' + b"x" * 256 * 1024 + b'"}',
            headers={"X-Newsletter-Preview": "1", "Content-Type": "application/json"},
        )
    assert response.status_code == 413
    assert smtp.handler.attempts.total() == 0


# -- 5. security headers on every response -------------------------------------------------

COMMON = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


@pytest.fixture
def published(tmp_path: Path) -> Path:
    folder = tmp_path / "issues"
    published_copy(EXAMPLE_MD, folder)
    return folder


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("GET", "/", 200),
        ("GET", "/feed.xml", 200),
        ("GET", f"/issues/{EXAMPLE_MD.stem}", 200),
        ("GET", "/issues/nope", 404),
        ("GET", "/unsubscribe", 200),
        ("GET", "{link}", 200),
        ("POST", "{link}", 200),
        ("GET", "/unsubscribe?token=forged", 400),
        ("GET", "/no/such/page", 404),
        ("DELETE", "/unsubscribe", 405),
    ],
)
def test_every_serve_response_carries_the_security_headers(
    server: httpx.Client,
    config: Config,
    ann: SubscriberStore,
    published: Path,
    method: str,
    path: str,
    status: int,
) -> None:
    response = server.request(method, path.format(link=unsubscribe_path(config)))
    assert response.status_code == status
    assert {name: response.headers.get(name) for name in COMMON} == COMMON
    policy = directives(response.headers["content-security-policy"])
    assert policy["default-src"] == "'none'"
    assert policy["frame-ancestors"] == "'none'"
    assert policy["base-uri"] == "'none'"
    assert "script-src" not in policy


def test_the_refusals_carry_the_security_headers_too(server: httpx.Client) -> None:
    response = server.post("/unsubscribe", content=b"x" * 256 * 1024)
    assert response.status_code == 413
    assert {name: response.headers.get(name) for name in COMMON} == COMMON


def test_even_a_server_error_carries_the_security_headers(
    server: httpx.Client, config: Config
) -> None:
    config.subscribers.database.mkdir()  # the list cannot be opened: a bug's 500
    response = server.get(unsubscribe_path(config))
    assert response.status_code == 500
    assert {name: response.headers.get(name) for name in COMMON} == COMMON


def test_an_issue_page_may_use_its_inline_styles_and_images_and_nothing_else(
    server: httpx.Client, published: Path
) -> None:
    response = server.get(f"/issues/{EXAMPLE_MD.stem}")
    policy = directives(response.headers["content-security-policy"])
    assert policy["style-src"] == "'unsafe-inline'"
    assert policy["img-src"] == "* data:"
    # Its subscribe form goes to the service at base_url, and nowhere else.
    assert policy["form-action"] == "'self' https://news.example.com"


def test_the_own_pages_may_post_their_form_to_themselves_only(
    server: httpx.Client, config: Config, ann: SubscriberStore
) -> None:
    for response in (server.get("/"), server.get(unsubscribe_path(config))):
        policy = directives(response.headers["content-security-policy"])
        assert policy["form-action"] == "'self' https://news.example.com"
        assert policy["style-src"] == "'unsafe-inline'"


def test_the_issue_page_renders_under_its_policy_in_a_browser(
    browser: Browser, server: httpx.Client, published: Path
) -> None:
    context = browser.new_context()
    page = context.new_page()
    refused: list[str] = []
    page.on(
        "console",
        lambda message: (
            refused.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    page.goto(f"{server.base_url}/issues/{EXAMPLE_MD.stem}")
    # The email's inline styles apply: its body is not the browser's default white.
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    context.close()
    assert background not in ("rgba(0, 0, 0, 0)", "rgb(255, 255, 255)")
    assert [text for text in refused if "style" in text] == []


def test_every_preview_response_carries_nosniff_and_same_origin_framing_only(
    running: RunningPreview,
) -> None:
    port = port_of(running.client)
    for response in (
        running.client.get("/"),
        running.client.get("/email"),
        running.client.get("/state"),
        running.client.get("/nope"),
        running.client.get("/", headers={"Host": f"attacker.example:{port}"}),
    ):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "SAMEORIGIN"
        assert directives(response.headers["content-security-policy"]) == {
            "frame-ancestors": "'self'"
        }


def directives(policy: str) -> dict[str, str]:
    pairs = (part.strip().partition(" ") for part in policy.split(";") if part.strip())
    return {name: value for name, _, value in pairs}
