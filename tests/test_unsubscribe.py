"""Signed unsubscribe tokens, the secret they are signed with, and the headers."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from composer.config import Config
from composer.errors import InvalidToken, SecretError
from composer.signing import SECRET_FILE, load_secret
from composer.unsubscribe import UnsubscribeLinks, UnsubscribeToken

SECRET = b"s" * 32


def test_token_round_trips_the_key_and_the_issue() -> None:
    links = UnsubscribeLinks("https://news.example.com", SECRET)
    token = links.token("Ann.Lee@example.com", "2024-05-03-example")
    assert links.verify(token) == UnsubscribeToken("Ann.Lee@example.com", "2024-05-03-example")
    assert links.verify(links.token("ann@example.com")) == UnsubscribeToken("ann@example.com")


def test_token_is_url_safe() -> None:
    token = UnsubscribeLinks("https://x.example", SECRET).token("ü+/?&=@bücher.de", "a b")
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t[:-1],
        lambda t: t[:10],
        lambda t: t.split(".")[0],
        lambda t: t.replace(".", ".A"),
        lambda t: ("B" if t[0] == "A" else "A") + t[1:],
        lambda t: "",
        lambda t: t + "%",
    ],
    ids=["last-char-cut", "truncated", "no-mac", "mac-changed", "payload-changed", "empty", "junk"],
)
def test_altered_or_truncated_tokens_are_refused(tamper: object) -> None:
    links = UnsubscribeLinks("https://news.example.com", SECRET)
    token = links.token("ann@example.com")
    with pytest.raises(InvalidToken):
        links.verify(tamper(token))  # type: ignore[operator]


def test_a_token_signed_under_another_secret_is_refused() -> None:
    forged = UnsubscribeLinks("https://news.example.com", b"f" * 32).token("ann@example.com")
    with pytest.raises(InvalidToken):
        UnsubscribeLinks("https://news.example.com", SECRET).verify(forged)


def test_headers_carry_the_https_link_the_mailto_and_one_click() -> None:
    links = UnsubscribeLinks("https://news.example.com/", SECRET, "unsubscribe@example.com")
    headers = links.headers("ann@example.com", "issue-1")
    assert headers == {
        "List-Unsubscribe": f"<{links.url('ann@example.com', 'issue-1')}>,"
        " <mailto:unsubscribe@example.com?subject=unsubscribe>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    assert links.url("ann@example.com").startswith("https://news.example.com/unsubscribe?token=")


def test_headers_without_a_mailto_have_only_the_link() -> None:
    links = UnsubscribeLinks("https://news.example.com", SECRET)
    assert links.headers("ann@example.com")["List-Unsubscribe"] == (
        f"<{links.url('ann@example.com')}>"
    )


def test_secret_file_is_created_once_next_to_the_config_with_0600(config: Config) -> None:
    first = load_secret(config.path)
    path = config.path.parent / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_secret(config.path) == first
    assert len(first) >= 32
    assert sorted(p.name for p in config.path.parent.iterdir()) == [SECRET_FILE, "config.toml"]


def test_secret_file_readable_by_others_is_refused(config: Config) -> None:
    load_secret(config.path)
    path = config.path.parent / SECRET_FILE
    os.chmod(path, 0o644)
    with pytest.raises(SecretError, match="chmod 600"):
        load_secret(config.path)


def test_secret_from_the_environment_wins_and_must_be_long(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEWSLETTER_SECRET", "x" * 40)
    assert load_secret(config.path) == b"x" * 40
    assert not (config.path.parent / SECRET_FILE).exists()
    monkeypatch.setenv("NEWSLETTER_SECRET", "short")
    with pytest.raises(SecretError, match="shorter than 32"):
        load_secret(config.path)


def test_links_from_config_use_base_url_and_mailto(config: Config, tmp_path: Path) -> None:
    links = UnsubscribeLinks.from_config(config)
    assert links.endpoint == "https://news.example.com/unsubscribe"
    assert links.mailto == "unsubscribe@example.com"
