"""The composed email in a real browser (Debian's headless Chromium) at phone width."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html import escape, unescape

import pytest

from composer.composing.pipeline import compose_file
from tests.conftest import EXAMPLE_MD

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    # The example's images are on example.com; nothing may leave the machine.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]

# The email is measured inside an iframe of the phone's width, as a mail app shows it;
# a srcdoc frame is same-origin, so the page around it can read its layout.
MEASURE = """<!doctype html><html><head><title>pending</title></head><body>
<iframe id="email" style="width:{width}px;height:900px;border:0" srcdoc="{srcdoc}"></iframe>
<script>
document.getElementById('email').addEventListener('load', () => {{
  const doc = document.getElementById('email').contentDocument;
  const root = doc.documentElement;
  const sizes = [...doc.querySelectorAll('.nl-prose p, .nl-prose li')]
    .map(e => parseFloat(doc.defaultView.getComputedStyle(e).fontSize));
  document.title = JSON.stringify({{
    scrollWidth: root.scrollWidth, clientWidth: root.clientWidth,
    smallestBodyText: Math.min(...sizes), paragraphs: sizes.length}});
}});
</script></body></html>"""


def _measure(html: str, width: int, tmp_path) -> dict[str, float]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is needed (apt-get install chromium; .ci/run does it)"
    page = tmp_path / "frame.html"
    page.write_text(MEASURE.format(width=width, srcdoc=escape(html, quote=True)), "utf-8")
    result = subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=800,1000",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )
    title = re.search(r"<title>(.*?)</title>", result.stdout, re.S)
    assert title and title.group(1) != "pending", result.stderr[-2000:]
    return json.loads(unescape(title.group(1)))


@pytest.mark.parametrize("tier", ["paid", "free"])
def test_phone_width_has_no_horizontal_scroll_and_readable_text(config, tier, tmp_path):
    html = compose_file(EXAMPLE_MD, config, tier).html
    measured = _measure(html, 375, tmp_path)
    assert measured["paragraphs"] > 5
    assert measured["scrollWidth"] <= measured["clientWidth"] == 375
    assert measured["smallestBodyText"] >= 16
