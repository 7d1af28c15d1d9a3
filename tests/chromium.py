"""Debian's headless Chromium, launched offline: by the browser tests and bench/preview.py."""

from __future__ import annotations

import shutil

from playwright.sync_api import Browser, Playwright

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # The example's images are on example.com; nothing may leave the machine.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


def find_chromium() -> str | None:
    """Debian's chromium, which CI installs with apt (never Playwright's download)."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def launch_chromium(playwright: Playwright, executable: str) -> Browser:
    """``executable`` headless and offline: every host but 127.0.0.1 fails to resolve."""
    return playwright.chromium.launch(executable_path=executable, args=FLAGS)
