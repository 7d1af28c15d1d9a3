"""The preview page in a real browser (Debian's headless Chromium, driven by Playwright):
the email renders, phone width does not scroll sideways, the plain-text view shows the
text part, dark mode applies the email's own dark rules, edits, broken or not, show
up without anyone reloading the page, and the Send test button sends the shown edition."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from playwright.sync_api import Browser, Frame, Page, expect

from composer.composing.pipeline import compose_file, generic_urls
from tests.previewing import RunningPreview, copy_example, edit, running_preview

TITLE = "The data pipeline behind the apps everyone uses"


@pytest.fixture
def running(tmp_path, config_path) -> Iterator[RunningPreview]:
    with running_preview(copy_example(tmp_path), config_path) as running:
        yield running


@pytest.fixture
def page(browser: Browser, running: RunningPreview) -> Iterator[Page]:
    with opened_page(browser, running) as page:
        yield page


@contextmanager
def opened_page(browser: Browser, running: RunningPreview) -> Iterator[Page]:
    """The preview page in a fresh browser context, once it shows the email."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    page.goto(running.url)
    wait_for_email(page, running.key())
    yield page
    context.close()


def wait_for_email(page: Page, key: str) -> None:
    """Wait until the page shows version ``key`` of the email in every visible pane."""
    expect(page.locator("body")).to_have_attribute("data-version", key)
    expect(page.locator("body")).to_have_attribute("data-state", "ready")


def email_frame(page: Page, pane: str = "desktop") -> Frame:
    handle = page.locator(f"figure[data-pane={pane}] iframe:not(.loading)").element_handle()
    frame = handle.content_frame() if handle else None
    assert frame is not None, f"no email in the {pane} pane"
    return frame


def test_page_shows_the_email_its_subject_and_size(page):
    assert TITLE in email_frame(page).locator("body").inner_text()
    expect(page.locator("#subject")).to_have_text(TITLE)
    expect(page.locator("#size")).to_contain_text("of Gmail's 102.0 KB clip")
    expect(page.locator("#summary")).to_have_text("No problems found")


def test_phone_width_has_no_horizontal_scroll(page):
    page.get_by_role("button", name="Phone").click()
    frame = email_frame(page, "phone")
    measured = frame.evaluate(
        "({width: innerWidth, scroll: document.documentElement.scrollWidth,"
        " client: document.documentElement.clientWidth})"
    )
    assert measured["width"] == 375
    assert measured["scroll"] <= measured["client"]
    expect(page.locator("figure[data-pane=desktop]")).to_be_hidden()


def test_plain_text_view_shows_the_text_part(page, running, config):
    page.get_by_role("button", name="Free").click()
    page.get_by_role("button", name="Plain text").click()
    expect(page.locator("figure[data-pane=desktop] iframe.loading")).to_have_count(0)
    shown = email_frame(page).locator("pre").text_content()
    composed = compose_file(running.issue, config, "free")
    assert shown == composed.with_urls(generic_urls(composed.issue, config)).text


def test_dark_background_applies_the_emails_own_dark_rules(page):
    background = "getComputedStyle(document.body).backgroundColor"
    light = email_frame(page).evaluate(background)
    page.get_by_role("button", name="Dark").click()
    assert email_frame(page).evaluate(background) == "rgb(18, 18, 18)" != light
    page.get_by_role("button", name="Light").click()
    assert email_frame(page).evaluate(background) == light


def test_an_edit_appears_without_a_reload_and_keeps_the_scroll(page, running):
    page.evaluate("window.notReloaded = true")
    email_frame(page).evaluate("scrollTo(0, 700)")
    edit(running.issue, lambda text: text.replace(TITLE, "A title edited while previewing"))
    edited = running.wait_for(lambda state: state["subject"] == "A title edited while previewing")
    wait_for_email(page, edited["key"])
    frame = email_frame(page)
    assert "A title edited while previewing" in frame.locator("body").inner_text()
    assert frame.evaluate("scrollY") == 700
    assert page.evaluate("window.notReloaded") is True
    expect(page.locator("#subject")).to_have_text("A title edited while previewing")


def test_a_broken_edit_shows_the_error_and_a_fix_recovers(page, running):
    good = running.issue.read_text(encoding="utf-8")
    edit(running.issue, lambda text: text.replace("title = ", "titel = ", 1))
    running.wait_for(lambda state: state["error"] is not None)
    expect(page.locator("body")).to_have_attribute("data-state", "error")
    problem = page.locator("figure[data-pane=desktop] .problem")
    expect(problem).to_be_visible()
    expect(problem.locator("strong")).to_have_text(f"{running.issue}:2")
    expect(problem.locator("pre")).to_contain_text("titel")
    expect(page.locator("figure[data-pane=desktop] iframe")).to_be_hidden()

    running.issue.write_text(good, encoding="utf-8")
    wait_for_email(page, running.wait_for(lambda state: state["error"] is None)["key"])
    expect(problem).to_be_hidden()
    assert TITLE in email_frame(page).locator("body").inner_text()


def test_send_test_button_sends_the_shown_edition_and_says_so(browser, tmp_path, send_config, smtp):
    with (
        running_preview(copy_example(tmp_path), send_config) as running,
        opened_page(browser, running) as page,
    ):
        page.get_by_role("button", name="Free").click()
        button = page.get_by_role("button", name="Send test")
        expect(button).to_have_attribute("title", "Send test to editor@example.com (free edition)")
        button.click()
        expect(page.locator("#send-status")).to_have_text("Sent to 1 address")
        expect(button).to_be_enabled()
    [message] = smtp.messages()
    assert message["Subject"] == f"[TEST] {TITLE}"
    assert "Keep reading" in message.get_body(("plain",)).get_content()
