"""A reader signs up in a real browser (Debian's headless Chromium, driven by Playwright):
the form, the confirmation email at a real SMTP server, its link, the Confirm button,
and the welcome email."""

from __future__ import annotations

from playwright.sync_api import Browser, expect

from composer.config import load_config
from composer.store import open_store
from composer.web.form_tokens import MIN_FILL_SECONDS
from tests.joining import confirm_link, running_service, wait_for_mail


def test_a_reader_subscribes_confirms_and_is_welcomed(browser: Browser, send_config, smtp):
    with running_service(send_config) as service:
        context = browser.new_context(viewport={"width": 375, "height": 800})
        page = context.new_page()
        page.set_default_timeout(10_000)
        page.goto(f"{service.url}/subscribe")
        page.get_by_label("Email address").fill("ann@example.org")
        page.get_by_label("Name").fill("Ann")
        page.wait_for_timeout(MIN_FILL_SECONDS * 1000 + 200)  # a person takes this long
        page.get_by_role("button", name="Subscribe").click()
        expect(page.get_by_role("heading")).to_have_text("Check your inbox")

        (confirmation,) = wait_for_mail(smtp, 1)
        assert confirmation["To"] == "ann@example.org"
        page.goto(confirm_link(confirmation))
        expect(page.get_by_text("ann@example.org")).to_be_visible()
        page.get_by_role("button", name="Confirm").click()
        expect(page.get_by_role("heading")).to_have_text("You are subscribed")

        welcome = wait_for_mail(smtp, 2)[1]
        context.close()
    assert welcome["Subject"] == "Welcome aboard"
    assert "Ann" in str(welcome["To"])
    with open_store(load_config(send_config).subscribers) as store:
        reader = store.get("ann@example.org")
    assert reader is not None and reader.status == "active" and reader.name == "Ann"
