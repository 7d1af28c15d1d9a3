"""The service's pages in a real browser (Debian's headless Chromium) at phone width
(375 px), without JavaScript of their own, checked by axe-core; and a reader managing
their subscription from the link in a real email sent through aiosmtpd."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Browser, Page

from composer.config import Config, load_config
from composer.confirm_links import ConfirmLinks
from composer.reader_links import ReaderLinks
from composer.store import NewSubscriber, open_store
from composer.unsubscribe import UnsubscribeLinks
from composer.web.listen import listen
from composer.web.serve import create_app
from tests.conftest import EXAMPLE_MD, newsletter, published_copy, with_settings, write_csv
from tests.smtp_server import SmtpServer
from tests.test_email_in_browser import AXE, AXE_RUN

SLUG = EXAMPLE_MD.stem


@dataclass(frozen=True)
class Service:
    """``newsletter serve`` on a loopback port, its base_url that very address."""

    url: str
    config: Config


@pytest.fixture
def service(send_config: Path, tmp_path: Path) -> Iterator[Service]:
    sock = listen(0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with_settings(send_config, "newsletter", base_url=f'"{url}"')
    published_copy(EXAMPLE_MD, tmp_path / "issues")
    config = load_config(send_config)
    with open_store(config.subscribers) as store:
        for email, tier in [("ann@example.com", "free"), ("pat@example.com", "paid")]:
            store.save(NewSubscriber(email=email, key=email, name="Ann Reader", tier=tier))
        store.save(NewSubscriber(email="bob@example.com", key="bob@example.com"))
    server = uvicorn.Server(uvicorn.Config(create_app(config), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    yield Service(url, config)
    server.should_exit = True
    thread.join(timeout=10)


def unsubscribe_done(page: Page, service: Service) -> None:
    page.goto(UnsubscribeLinks.from_config(service.config).url("bob@example.com"))
    page.get_by_role("button", name="Unsubscribe").click()


def reader(key: str, where: str) -> Callable[[Page, Service], None]:
    def open_page(page: Page, service: Service) -> None:
        links = ReaderLinks.from_config(service.config)
        page.goto(links.manage_url(key) if where == "manage" else links.web_url(key, SLUG))

    return open_page


def path(where: str) -> Callable[[Page, Service], None]:
    return lambda page, service: page.goto(service.url + where)


PAGES: dict[str, Callable[[Page, Service], None]] = {
    "archive": path("/"),
    "issue, public with the panel": path(f"/issues/{SLUG}"),
    "issue, a free reader's panel": reader("ann@example.com", "web"),
    "issue, the paid edition": reader("pat@example.com", "web"),
    "unsubscribe confirm": lambda page, service: page.goto(
        UnsubscribeLinks.from_config(service.config).url("ann@example.com")
    ),
    "unsubscribe done": unsubscribe_done,
    "unsubscribe invalid": path("/unsubscribe?token=nope"),
    "unsubscribe how": path("/unsubscribe"),
    "manage": reader("ann@example.com", "manage"),
    "manage how": path("/manage"),
    "manage invalid": path("/manage?token=nope"),
    "manage gone": reader("nobody@example.com", "manage"),
    "missing": path("/issues/nope"),
    "subscribe": path("/subscribe?email=new@example.com"),
    "confirm": lambda page, service: page.goto(
        ConfirmLinks.from_config(service.config).url(
            "new@example.com", "new@example.com", dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
        )
    ),
    "confirm invalid": path("/confirm?token=nope"),
}

LAYOUT = """() => ({scrollWidth: document.documentElement.scrollWidth,
                    clientWidth: document.documentElement.clientWidth,
                    scripts: document.scripts.length})"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("name", PAGES)
def test_every_page_fits_a_phone_needs_no_script_and_axe_finds_nothing_serious(
    browser: Browser, service: Service, name: str, scheme: str
) -> None:
    context = browser.new_context(
        viewport={"width": 375, "height": 800}, java_script_enabled=False, color_scheme=scheme
    )
    page = context.new_page()
    try:
        PAGES[name](page, service)
        assert "Not found" not in page.title()
        # Measured and checked by the test's own script, after the page has worked without one.
        html = page.content()
        checked = browser.new_page(viewport={"width": 375, "height": 800})
        checked.emulate_media(color_scheme=scheme)
        checked.set_content(html, wait_until="domcontentloaded")
        measured = checked.evaluate(LAYOUT)
        assert measured["scripts"] == 0
        assert measured["scrollWidth"] <= measured["clientWidth"] == 375, measured
        checked.add_script_tag(content=AXE.read_text(encoding="utf-8"))
        assert checked.evaluate(AXE_RUN) == []
        checked.close()
    finally:
        context.close()


def test_a_reader_manages_their_subscription_from_the_link_in_a_real_email(
    browser: Browser, service: Service, smtp: SmtpServer, send_config: Path, tmp_path: Path
) -> None:
    config = service.config
    sent = newsletter("send", EXAMPLE_MD, "--yes", config_path=send_config)
    assert sent.returncode == 0, sent.stderr
    [copy] = [m for m in smtp.messages() if m["To"].addresses[0].addr_spec == "ann@example.com"]
    html = copy.get_body(preferencelist=("html",)).get_content()
    manage_url = re.search(r'href="([^"]+/manage\?token=[^"]+)"', html).group(1)
    assert manage_url.startswith(service.url)

    context = browser.new_context(viewport={"width": 375, "height": 800}, accept_downloads=True)
    page = context.new_page()
    page.goto(manage_url)
    assert page.get_by_text("ann@example.com").count() >= 1
    page.get_by_label("The name your emails are addressed to").fill("Ann Lee")
    page.get_by_role("button", name="Save name").click()
    assert page.get_by_text("Your name is saved.").is_visible()

    with page.expect_download() as download:
        page.get_by_role("button", name="Download my data").click()
    data = json.loads(Path(download.value.path()).read_text(encoding="utf-8"))
    assert data["subscriber"]["name"] == "Ann Lee"
    assert [d["issue"] for d in data["deliveries"]] and data["deliveries"][0]["state"] == "sent"

    page.get_by_label("Yes, delete all my data").check()
    page.get_by_role("button", name="Delete my data").click()
    assert page.get_by_role("heading", name="Your data is deleted").is_visible()
    context.close()

    with open_store(config.subscribers) as store:
        assert store.get("ann@example.com") is None
    listed = write_csv(tmp_path / "again.csv", "email,name\nann@example.com,Ann\n")
    result = newsletter("subscribers", "import", listed, config_path=send_config)
    assert result.returncode == 0, result.stderr
    assert "0 added" in result.stdout + result.stderr
    assert "1 suppressed" in result.stdout + result.stderr
