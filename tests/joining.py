"""What the signup tests share: `newsletter serve` running in a thread at the address its
base_url names (so that the Origin check sees its own pages), a form token old enough
to be posted, and the mail the test SMTP server received."""

from __future__ import annotations

import email
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import httpx
import uvicorn

from composer.config import load_config
from composer.web.form_tokens import FormTokens
from composer.web.listen import listen
from composer.web.serve import create_app
from tests.conftest import SECRET, with_settings
from tests.smtp_server import SmtpServer

LINK = re.compile(r"https?://\S+/confirm\?token=[\w.-]+")


@dataclass
class Service:
    url: str
    client: httpx.Client


@contextmanager
def running_service(config_path: Path) -> Iterator[Service]:
    """`newsletter serve` for ``config_path`` with its background tasks, on a free port
    that its base_url is rewritten to name."""
    sock = listen(0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with_settings(config_path, "newsletter", base_url=f'"{url}"')
    app = create_app(load_config(config_path))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "serve did not start"
        time.sleep(0.01)
    try:
        with httpx.Client(base_url=url, follow_redirects=False, timeout=10) as client:
            yield Service(url, client)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def aged_token(seconds: float = 3.0, kind: str = "page") -> str:
    """A form token made ``seconds`` ago: past the minimum fill time."""
    return FormTokens(SECRET.encode()).make(kind, time.time() - seconds)  # type: ignore[arg-type]


def signup(service: Service, address: str, **fields: str) -> httpx.Response:
    """POST the subscribe form for ``address`` with an aged token (fields override)."""
    form = {"email": address, "name": "", "website": "", "token": aged_token(), **fields}
    return service.client.post("/subscribe", data=form)


def wait_for_mail(smtp: SmtpServer, count: int, timeout: float = 15) -> list[EmailMessage]:
    """The messages ``smtp`` holds, once it holds at least ``count``."""
    deadline = time.monotonic() + timeout
    while len(smtp.folder.messages()) < count:
        assert time.monotonic() < deadline, f"{len(smtp.folder.messages())} of {count} arrived"
        time.sleep(0.02)
    return smtp.messages()


def body(message: EmailMessage) -> str:
    """The text of ``message``: its plain part."""
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def confirm_link(message: EmailMessage) -> str:
    found = LINK.search(body(message))
    assert found, body(message)
    return found.group(0)


def parse(data: bytes) -> EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)  # type: ignore[return-value]
