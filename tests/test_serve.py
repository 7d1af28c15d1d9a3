"""The unsubscribe service over real HTTP: uvicorn on a free loopback port, httpx; and
`newsletter serve` itself, on a port in use and on port 0."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from composer.config import Config, load_config
from composer.store import NewSubscriber, SubscriberStore
from composer.unsubscribe import UnsubscribeLinks
from composer.web.listen import listen

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@pytest.fixture
def config(config_path: Path) -> Config:
    # A name with markup, to prove the pages escape it.
    text = config_path.read_text(encoding="utf-8")
    config_path.write_text(text.replace("China Boss News", "Test <News> & Co", 1))
    return load_config(config_path)


@pytest.fixture
def subscribed(store: SubscriberStore) -> SubscriberStore:
    for email in ("ann@example.com", "bob@example.com", "<b>eve</b>@example.com"):
        store.save(NewSubscriber(email=email, key=email))
    return store


def link(config: Config, key: str, issue: str | None = None) -> str:
    url = UnsubscribeLinks.from_config(config).url(key, issue)
    return url.removeprefix(config.newsletter.base_url)


def statuses(store: SubscriberStore) -> dict[str, str]:
    return {s.email: s.status for s in store.iter_all()}


def test_one_click_post_unsubscribes_exactly_that_subscriber(
    server: httpx.Client, config: Config, subscribed: SubscriberStore
) -> None:
    response = server.post(link(config, "ann@example.com", "issue-7"), data=ONE_CLICK)
    assert response.status_code == 200
    assert "set-cookie" not in response.headers
    assert statuses(subscribed) == {
        "ann@example.com": "unsubscribed",
        "bob@example.com": "active",
        "<b>eve</b>@example.com": "active",
    }
    ann = subscribed.get("ann@example.com")
    assert ann is not None and ann.status_reason == "unsubscribe link in issue-7"


def test_one_click_post_as_multipart_form_data_also_unsubscribes(
    server: httpx.Client, config: Config, subscribed: SubscriberStore
) -> None:
    response = server.post(
        link(config, "bob@example.com"), files={"List-Unsubscribe": (None, "One-Click")}
    )
    assert response.status_code == 200
    assert statuses(subscribed)["bob@example.com"] == "unsubscribed"


def test_unsubscribing_twice_is_harmless(
    server: httpx.Client, config: Config, subscribed: SubscriberStore
) -> None:
    url = link(config, "ann@example.com")
    first = server.post(url, data=ONE_CLICK)
    changed_at = subscribed.get("ann@example.com").status_changed_at  # type: ignore[union-attr]
    second = server.post(url, data=ONE_CLICK)
    assert first.status_code == second.status_code == 200
    assert subscribed.get("ann@example.com").status_changed_at == changed_at  # type: ignore[union-attr]


def test_get_shows_a_confirmation_form_and_unsubscribes_nobody(
    server: httpx.Client, config: Config, subscribed: SubscriberStore
) -> None:
    response = server.get(link(config, "ann@example.com"))
    assert response.status_code == 200
    assert '<form method="post" action="">' in response.text
    assert "ann@example.com" in response.text
    assert response.headers["cache-control"] == "no-store"
    assert set(statuses(subscribed).values()) == {"active"}


def test_get_after_unsubscribing_says_so_without_a_button(
    server: httpx.Client, config: Config, subscribed: SubscriberStore
) -> None:
    server.post(link(config, "ann@example.com"), data=ONE_CLICK)
    response = server.get(link(config, "ann@example.com"))
    assert "already unsubscribed" in response.text
    assert "<form" not in response.text


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_forged_or_missing_token_is_refused_and_changes_nothing(
    server: httpx.Client, config: Config, subscribed: SubscriberStore, method: str
) -> None:
    forger = UnsubscribeLinks(config.newsletter.base_url, b"not the secret" * 3)
    forged = forger.url("ann@example.com").removeprefix(config.newsletter.base_url)
    genuine = link(config, "bob@example.com")
    missing = "/unsubscribe?token=" if method == "GET" else "/unsubscribe"
    for url in (forged, genuine[:-4], missing, "/unsubscribe?token=%00.%00"):
        response = server.request(method, url, data=ONE_CLICK if method == "POST" else None)
        assert response.status_code == 400, url
        assert "nothing was done" in response.text
    assert set(statuses(subscribed).values()) == {"active"}


def test_pages_escape_the_address_and_the_newsletter_name(
    server: httpx.Client, config: Config, subscribed: SubscriberStore
) -> None:
    response = server.get(link(config, "<b>eve</b>@example.com"))
    assert "&lt;b&gt;eve&lt;/b&gt;@example.com" in response.text
    assert "Test &lt;News&gt; &amp; Co" in response.text
    assert "<b>" not in response.text


def test_a_signed_link_for_an_address_not_on_the_list_records_the_unsubscribe(
    server: httpx.Client, config: Config, subscribed: SubscriberStore
) -> None:
    response = server.post(link(config, "gone@example.com"), data=ONE_CLICK)
    assert response.status_code == 200
    assert statuses(subscribed)["gone@example.com"] == "unsubscribed"


def test_get_without_a_token_explains_where_the_real_link_is(
    server: httpx.Client, subscribed: SubscriberStore
) -> None:
    response = server.get("/unsubscribe")
    assert response.status_code == 200
    assert "unsubscribe link made for its reader" in response.text
    assert "<form" not in response.text
    assert set(statuses(subscribed).values()) == {"active"}


def test_access_log_lines_do_not_carry_unsubscribe_tokens():
    import logging

    from composer.web.serve import RedactQueryStrings

    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "POST", "/unsubscribe?token=abc.def", "1.1", 200),
        None,
    )
    assert RedactQueryStrings().filter(record)
    assert record.getMessage() == '127.0.0.1:5000 - "POST /unsubscribe?… HTTP/1.1" 200'


def test_serve_on_a_port_in_use_says_so_in_one_line_and_exits_2(config_path):

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "composer", "serve", "--port", str(port)],
            cwd=config_path.parent,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""  # no "Serving …" for a service that never ran
    assert result.stderr.splitlines() == [
        f"Error: cannot listen on 127.0.0.1:{port} (Address already in use);"
        " pass --port N (0 picks a free one)"
    ]


def test_serve_on_port_0_announces_the_port_it_listens_on_and_stops_on_ctrl_c(config_path):

    process = subprocess.Popen(
        [sys.executable, "-m", "composer", "serve", "--port", "0"],
        cwd=config_path.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        found = re.search(r"on http://127\.0\.0\.1:(\d+) ", first)
        assert found and found[1] != "0", first
        page = httpx.get(f"http://127.0.0.1:{found[1]}/", timeout=10)
        assert page.status_code == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=15) == 0
    finally:
        process.kill()
        process.wait()


def test_a_kept_alive_connection_is_answered_without_waiting_for_a_delayed_ack():
    # asyncio turns Nagle's algorithm off (TCP_NODELAY) only on connections accepted from
    # a socket that names IPPROTO_TCP; left on, a response written as headers then body
    # waited 40 ms for the client's delayed ACK on every kept-alive request.
    async def nodelay_of_accepted_connection() -> int:
        seen: list[int] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted = writer.get_extra_info("socket")
            seen.append(accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(handle, sock=listen(0))
        async with server:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await reader.read()
            writer.close()
        return seen[0]

    assert asyncio.run(nodelay_of_accepted_connection()) != 0
