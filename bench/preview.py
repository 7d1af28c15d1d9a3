"""Time save-to-updated-page for `newsletter preview`, in headless Chromium.

    .venv/bin/python bench/preview.py [ISSUE] [--edits N] [--width desktop|phone|both]

Serves a copy of the issue with the preview, opens the page in Debian's chromium
(no network: every host but 127.0.0.1 fails to resolve), then N times rewrites the
title and waits for the page to show the new version. The latency runs from just
before the file is written to the moment the page has swapped in the new email
(the page stamps ``data-updated-at`` with ``Date.now()``, the same clock). Prints
the median, 90th percentile and worst case, and the server's compose time; the
target is under 300 ms.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

# tests/ is not installed: the benchmark launches Chromium exactly as the browser tests do.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from composer.web.preview import Preview, PreviewServer, listen
from tests.chromium import find_chromium, launch_chromium

ROOT = Path(__file__).resolve().parent.parent
WARM_UP = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("issue", nargs="?", default=ROOT / "issues" / "2024-05-03-example.md")
    parser.add_argument("--edits", type=int, default=20)
    parser.add_argument("--width", choices=["desktop", "phone", "both"], default="desktop")
    args = parser.parse_args()
    chromium = find_chromium()
    if not chromium:
        sys.exit("Debian's chromium is needed: apt-get install chromium")

    with tempfile.TemporaryDirectory() as folder:
        issue = Path(folder) / Path(args.issue).name
        shutil.copy(args.issue, issue)
        config = Path(folder) / "config.toml"
        templates = f'templates = "{(ROOT / "templates").as_posix()}"'
        config.write_text(
            (ROOT / "config.toml")
            .read_text("utf-8")
            .replace("[newsletter]", f"[newsletter]\n{templates}"),
            encoding="utf-8",
        )
        preview = Preview(issue, config)
        server = PreviewServer(preview)
        sock = listen(0)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/?width={args.width}"
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            latencies, composing = measure(chromium, url, issue, preview, args.edits)
        finally:
            server.stop()
            thread.join(timeout=10)

    latencies.sort()
    p90 = latencies[max(0, round(0.9 * len(latencies)) - 1)]
    print(
        f"save to updated page ({args.width}, {len(latencies)} edits after {WARM_UP} warm-up):"
        f" median {statistics.median(latencies):.0f} ms, p90 {p90:.0f} ms,"
        f" worst {latencies[-1]:.0f} ms"
    )
    print(f"  of which composing both tiers: {statistics.median(composing):.0f} ms")


def measure(
    chromium: str, url: str, issue: Path, preview: Preview, edits: int
) -> tuple[list[float], list[float]]:
    original = issue.read_text(encoding="utf-8")
    title = preview.snapshot.composed["paid"].subject
    latencies: list[float] = []
    composing: list[float] = []
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright, chromium)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url)
        page.wait_for_selector("body[data-state=ready][data-updated-at]")
        for edit in range(WARM_UP + edits):
            new_title = f"{title} (edit {edit})"
            saved_at = time.time() * 1000
            issue.write_text(original.replace(title, new_title, 1), encoding="utf-8")
            page.wait_for_function(
                """([title, since]) =>
                    document.getElementById("subject").textContent === title
                    && Number(document.body.dataset.updatedAt) >= since""",
                arg=[new_title, saved_at],
                polling=5,
                timeout=10_000,
            )
            if edit >= WARM_UP:
                latencies.append(float(page.evaluate("document.body.dataset.updatedAt")) - saved_at)
                composing.append(preview.snapshot.milliseconds)
            time.sleep(0.2)  # an editor's saves come seconds apart, not back to back
        browser.close()
    return latencies, composing


if __name__ == "__main__":
    main()
