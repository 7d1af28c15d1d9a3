"""The composed email in a real browser (Debian's headless Chromium), at phone (375 px) and
desktop (680 px) width, light and dark, with axe-core for accessibility."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from composer.composing.pipeline import compose_file
from composer.config import Config
from tests.conftest import EXAMPLE_MD, ROOT, SECOND_ISSUE

# axe-core, vendored: the tests run offline, and a pinned file gives the same findings on
# every machine (tests/vendor/axe-core/README.md says where it comes from).
AXE = ROOT / "tests" / "vendor" / "axe-core" / "axe.min.js"
ISSUES = pytest.mark.parametrize("issue", [EXAMPLE_MD, SECOND_ISSUE], ids=["example", "second"])
TIERS = pytest.mark.parametrize("tier", ["paid", "free"])
WIDTHS = pytest.mark.parametrize("width", [375, 680])

MEASURE = """() => {
  const root = document.documentElement;
  const sizes = [...document.querySelectorAll('.nl-prose p, .nl-prose li')]
    .map(e => parseFloat(getComputedStyle(e).fontSize));
  return {scrollWidth: root.scrollWidth, clientWidth: root.clientWidth,
          smallestBodyText: Math.min(...sizes), paragraphs: sizes.length};
}"""

FONT_SIZES = """() => {
  const px = selector => [...document.querySelectorAll(selector)]
    .map(e => parseFloat(getComputedStyle(e).fontSize));
  return {text: px('.nl-prose p, .nl-prose li, .nl-lead'),
          subHeadings: px('.nl-prose h3, .nl-prose h4'),
          sections: px('h2:not(.nl-big-h2)'), bigStory: px('h2.nl-big-h2'), title: px('h1')};
}"""

AXE_RUN = """async () => {
  const result = await axe.run(document, {resultTypes: ['violations']});
  return result.violations
    .filter(v => v.impact === 'serious' || v.impact === 'critical')
    .map(v => `${v.impact} ${v.id}: ${v.help} at ${v.nodes.map(n => n.target).join('; ')}`);
}"""


@pytest.fixture(scope="module")
def email(browser: Browser, module_config: Config) -> Iterator[Callable[..., Page]]:
    """``email(issue, tier, width, scheme)``: the composed email in a page ``width`` px wide
    in the ``scheme`` colour scheme. One page per issue and tier, loaded once and resized."""
    pages: dict[tuple[Path, str], Page] = {}

    def show(issue: Path, tier: str, width: int = 375, scheme: str = "light") -> Page:
        if (issue, tier) not in pages:
            page = browser.new_page()
            page.set_content(
                compose_file(issue, module_config, tier).html, wait_until="domcontentloaded"
            )
            pages[issue, tier] = page
        page = pages[issue, tier]
        page.set_viewport_size({"width": width, "height": 800})
        page.emulate_media(color_scheme=scheme)
        return page

    yield show
    for page in pages.values():
        page.close()


@ISSUES
@TIERS
def test_phone_width_has_no_horizontal_scroll_and_readable_text(email, issue, tier):
    measured = email(issue, tier, 375).evaluate(MEASURE)
    assert measured["paragraphs"] > 5
    assert measured["scrollWidth"] <= measured["clientWidth"] == 375
    assert measured["smallestBodyText"] >= 16


@ISSUES
@TIERS
def test_email_is_laid_out_in_standards_mode(email, issue, tier):
    assert email(issue, tier).evaluate("document.compatMode") == "CSS1Compat"


@ISSUES
@TIERS
@WIDTHS
def test_headings_grow_from_sub_heading_to_section_title_to_issue_title(email, issue, tier, width):
    sizes = email(issue, tier, width).evaluate(FONT_SIZES)
    assert sizes["subHeadings"] and sizes["sections"] and sizes["title"]
    assert bool(sizes["bigStory"]) == (tier == "paid")
    # a section title is never smaller than anything it heads
    assert max(sizes["text"] + sizes["subHeadings"]) < min(sizes["sections"])
    # the Big Story stands out from the other sections, and the issue title above all
    assert max(sizes["sections"]) < min(sizes["bigStory"], default=99)
    assert max(sizes["sections"] + sizes["bigStory"]) < min(sizes["title"])


@ISSUES
@TIERS
def test_every_image_has_a_pixel_width_attribute_for_outlook(email, issue, tier):
    page = email(issue, tier, 680)
    widths = page.evaluate("[...document.images].map(image => image.getAttribute('width'))")
    assert widths
    assert all(width and width.isdigit() for width in widths), widths


@WIDTHS
def test_paywall_panel_is_inset_like_the_text(email, width):
    panel, text = email(EXAMPLE_MD, "free", width).evaluate(
        """() => [document.querySelector('.nl-button').closest('.nl-panel'),
                  document.querySelector('.nl-prose p')]
            .map(e => { const r = e.getBoundingClientRect(); return [r.left, r.right]; })"""
    )
    assert panel == text


def test_big_story_keeps_its_red_rule_and_leads_at_text_size_in_dark_mode(email):
    page = email(EXAMPLE_MD, "paid", 680, "dark")
    rule = page.evaluate(
        "getComputedStyle(document.querySelector('.nl-rule-accent p')).borderTopColor"
    )
    other_rules = page.evaluate(
        """[...document.querySelectorAll('.nl-rule:not(.nl-rule-accent) p')]
            .map(p => getComputedStyle(p).borderTopColor)"""
    )
    leads, text = page.evaluate(
        """() => ['.nl-lead', '.nl-item p'].map(selector =>
            [...document.querySelectorAll(selector)]
              .map(e => parseFloat(getComputedStyle(e).fontSize)))"""
    )
    red, green, blue = (int(part) for part in rule.removeprefix("rgb(").rstrip(")").split(","))
    assert red > 200 and red - max(green, blue) > 80, rule
    assert rule not in other_rules
    assert leads and set(leads) == set(text) == {17}


@ISSUES
@TIERS
def test_axe_finds_no_serious_or_critical_violation_at_either_width_light_or_dark(
    email, issue, tier
):
    email(issue, tier).add_script_tag(content=AXE.read_text(encoding="utf-8"))
    found = {
        f"{width} px, {scheme}": email(issue, tier, width, scheme).evaluate(AXE_RUN)
        for width in (375, 680)
        for scheme in ("light", "dark")
    }
    assert not any(found.values()), found


def test_vendored_axe_keeps_its_licence_header():
    head = AXE.read_text(encoding="utf-8")[:400]
    assert head.startswith("/*! axe v") and "Mozilla Public" in head
