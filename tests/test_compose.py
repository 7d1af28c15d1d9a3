"""The composed email: every part of the issue, in order, inlined, responsive and escaped."""

from __future__ import annotations

import re

import pytest
from lxml import html as lxml_html

from composer.composing.load import load_issue
from composer.composing.pipeline import GMAIL_CLIP_BYTES, compose, compose_file
from composer.composing.render import READER_WEB_URL
from tests.conftest import EXAMPLE_MD, EXAMPLE_TOML

CLEAN_FRONT = (
    '+++\ntitle = "A clean issue"\ndate = 2024-05-03\n'
    'preheader = "Lenders pause, suppliers certify, and what it means for you"\n+++\n\n'
)


@pytest.fixture
def paid(config):
    return compose_file(EXAMPLE_MD, config, "paid")


@pytest.fixture
def free(config):
    return compose_file(EXAMPLE_MD, config, "free")


def _visible_text(html: str) -> str:
    tree = lxml_html.fromstring(html)
    for hidden in tree.xpath("//style|//title"):
        hidden.drop_tree()
    return " ".join(tree.text_content().split())


def _in_order(haystack: str, needles: list[str]) -> None:
    position = 0
    for needle in needles:
        found = haystack.find(needle, position)
        assert found >= 0, f"{needle!r} missing or out of order"
        position = found + len(needle)


def test_markdown_and_toml_twins_compose_to_identical_bytes(config):
    for tier in ("paid", "free"):
        from_md = compose_file(EXAMPLE_MD, config, tier)
        from_toml = compose_file(EXAMPLE_TOML, config, tier)
        assert from_md.html == from_toml.html
        assert from_md.text == from_toml.text
        assert from_md.mjml == from_toml.mjml


def test_html_holds_every_block_lead_quote_and_link_in_order(paid):
    issue = load_issue(EXAMPLE_MD)
    text = _visible_text(paid.html)
    expected = [issue.title, issue.subtitle, "Morgan Lee", "Good morning."]
    for block in issue.blocks:
        expected.append(block.heading.replace("'", "’"))  # typeset: see test_typography.py
        for item in block.items:
            expected.append(item.lead)
    _in_order(text, expected)
    _in_order(text, ["Regulators have a new map", "Everyone was looking at the storefront"])
    hrefs = re.findall(r'href="([^"]+)"', paid.html)
    _in_order(
        " ".join(hrefs),
        [
            "https://example.com/lantern-report",
            "https://example.com/news/ports",
            "https://example.com/news/freight",
        ],
    )
    assert 'alt="A chart of data flows between apps and suppliers"' in paid.html


def test_html_is_under_gmail_clip_and_fetches_no_web_font(paid):
    assert paid.html_size < GMAIL_CLIP_BYTES
    assert "fonts.googleapis.com" not in paid.html
    assert "<link" not in paid.html


def test_css_is_inlined_and_media_queries_are_kept(paid):
    tree = lxml_html.fromstring(paid.html)
    title = tree.xpath("//h1")[0]
    assert "font-size:32px" in title.get("style").replace(" ", "")
    assert all(p.get("style") for p in tree.xpath("//td[contains(@class,'nl-prose')]//p"))
    styles = " ".join(style.text or "" for style in tree.xpath("//style"))
    assert "prefers-color-scheme: dark" in styles
    assert "max-width: 480px" in styles or "max-width:480px" in styles
    assert "mso-table-lspace" in paid.html


def test_preheader_is_the_hidden_preview_text_then_spacers_and_has_no_colour(paid):
    tree = lxml_html.fromstring(paid.html)
    hidden = tree.xpath("//div[contains(@style,'display:none')]")[0]
    text = hidden.text_content()
    assert text.startswith(paid.preheader)
    # Spacers keep inboxes from previewing "View this issue in your browser" after it.
    assert set(text.removeprefix(paid.preheader)) == {"\u034f", "\u200c", "\u00a0"}
    assert len(text) - len(paid.preheader) >= 150
    # Text the colour of its background is what spam filters score (HTML_FONT_LOW_CONTRAST).
    assert "color" not in hidden.get("style")
    assert "mso-hide:all" in hidden.get("style")


def test_no_preheader_means_no_hidden_preview_text(write_issue, config):
    path = write_issue('+++\ntitle = "T"\ndate = 2024-05-03\n+++\n\nText.\n')
    html = compose_file(path, config, "paid").html
    assert "display:none" not in html


def test_head_names_both_colour_schemes_for_apple_mail_and_outlook(paid):
    tree = lxml_html.fromstring(paid.html)
    for name in ("color-scheme", "supported-color-schemes"):
        assert tree.xpath(f"//head/meta[@name='{name}']/@content") == ["light dark"]
    assert paid.html.startswith("<!DOCTYPE html>")


def test_images_keep_their_pixel_width_for_outlook(paid):
    images = lxml_html.fromstring(paid.html).xpath("//img")
    assert images and all(image.get("width") == "584" for image in images)
    assert all(image.get("height") is None for image in images)


def test_plain_text_has_every_heading_paragraph_and_link_url_and_no_tags(paid):
    issue = load_issue(EXAMPLE_MD)
    for block in issue.blocks:
        assert block.heading.replace("'", "’").upper() in paid.text
    for url in re.findall(r"\]\((https://[^ )]+)", EXAMPLE_MD.read_text(encoding="utf-8")):
        assert url in paid.text
    flat = " ".join(paid.text.split())
    assert "Until now, agencies had to piece together supply chains one audit at a time." in flat
    assert "BANKS STEP BACK FROM CROSS-BORDER DEALS: Several mid-sized lenders" in flat
    assert "> “Everyone was looking at the storefront." in paid.text
    assert not re.search(r"</?[a-z][a-z0-9]*[ >/]", paid.text)
    assert max(len(line) for line in paid.text.splitlines() if "http" not in line) <= 72


def test_plain_text_sets_the_subtitle_apart_from_the_title(paid):
    issue = load_issue(EXAMPLE_MD)
    title_line = paid.text.index(issue.title)
    after_title = paid.text[title_line + len(issue.title) :]
    assert after_title.startswith("\n\nA think-tank map of")


def test_plain_text_gives_an_image_its_url_then_its_caption(paid):
    assert (
        "[Image: A chart of data flows between apps and suppliers]\n"
        "(https://example.com/images/flows.png)\n"
        "Data flows from 40 apps to their suppliers, by country of storage\n"
    ) in paid.text


def test_plain_text_keeps_story_leads_as_the_editor_wrote_them(write_issue, config):
    path = write_issue(CLEAN_FRONT + "## The Big Story\n\n**Banks step back:** Lenders pause.\n")
    composed = compose(load_issue(path), config, "paid")
    assert "Banks step back: Lenders pause." in composed.text
    assert "BANKS" not in composed.text


def test_free_tier_stops_at_the_paywall_with_a_keep_reading_link(free, paid):
    assert "The Big Story in China Business" in paid.html
    assert "The Big Story in China Business" not in free.html
    assert "BANKS STEP BACK" not in free.text
    assert "Keep reading" in free.html and "Keep reading" not in paid.html
    # The reader's own web version, whose link the sender fills in (build: the public one).
    assert f'href="{READER_WEB_URL}"' in free.html
    assert f"Keep reading: {READER_WEB_URL}" in free.text


def test_footer_has_copyright_address_and_links(paid):
    text = _visible_text(paid.html)
    assert "© 2024 China Boss News" in text
    assert "1 Example Street, Springfield" in text
    assert "View in browser" in text and "Unsubscribe" in text
    assert "Manage your subscription" in text
    assert "You are receiving this because you subscribed to China Boss News." in text


def test_nothing_from_the_issue_file_can_break_the_layout(write_issue, config):
    hostile = "</mj-text></mj-column><script>alert(1)</script>{{ 7*7 }}"
    path = write_issue(
        f"""
        +++
        title = "{hostile}"
        date = 2024-05-03
        +++

        ## {hostile}

        <div style="position:fixed">{hostile}</div> [x](javascript:alert(1))

        ## The Big Story

        **{hostile.upper()}:** Body.
        """
    )
    composed = compose(load_issue(path), config, "paid")
    tree = lxml_html.fromstring(composed.html)
    assert not tree.xpath("//script")
    assert not tree.xpath("//*[contains(@style, 'position:fixed')]")
    assert not tree.xpath("//a[starts-with(@href, 'javascript')]")
    assert "49" not in _visible_text(composed.html)
    assert _visible_text(composed.html).count("</mj-text></mj-column><script>") >= 3
