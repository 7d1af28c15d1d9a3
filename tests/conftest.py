"""Shared fixtures: a newsletter folder in tmp_path with its config and a real SQLite store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from composer.config import Config, load_config
from composer.store import SubscriberStore, open_store

CONFIG = """\
[newsletter]
name = "Test <News> & Co"
from = "Test News <news@example.com>"
base_url = "https://news.example.com"
unsubscribe_mailto = "unsubscribe@example.com"
address = "1 Example Street"
"""


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    # The secret comes from the key file next to config.toml unless a test sets it.
    monkeypatch.delenv("NEWSLETTER_SECRET", raising=False)
    path = tmp_path / "config.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return load_config(path)


@pytest.fixture
def store(config: Config) -> Iterator[SubscriberStore]:
    with open_store(config.subscribers) as opened:
        yield opened


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
