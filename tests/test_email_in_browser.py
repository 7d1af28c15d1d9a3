"""The composed email in a real browser (Debian's headless Chromium) at phone width."""

from __future__ import annotations

import pytest

from composer.composing.pipeline import compose_file
from tests.conftest import EXAMPLE_MD

MEASURE = """() => {
  const root = document.documentElement;
  const sizes = [...document.querySelectorAll('.nl-prose p, .nl-prose li')]
    .map(e => parseFloat(getComputedStyle(e).fontSize));
  return {scrollWidth: root.scrollWidth, clientWidth: root.clientWidth,
          smallestBodyText: Math.min(...sizes), paragraphs: sizes.length};
}"""


@pytest.mark.parametrize("tier", ["paid", "free"])
def test_phone_width_has_no_horizontal_scroll_and_readable_text(browser, config, tier):
    html = compose_file(EXAMPLE_MD, config, tier).html
    page = browser.new_page(viewport={"width": 375, "height": 800})
    try:
        page.set_content(html, wait_until="domcontentloaded")
        measured = page.evaluate(MEASURE)
    finally:
        page.close()
    assert measured["paragraphs"] > 5
    assert measured["scrollWidth"] <= measured["clientWidth"] == 375
    assert measured["smallestBodyText"] >= 16
