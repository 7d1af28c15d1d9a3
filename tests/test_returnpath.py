"""VERP return paths: short, signed, purpose-bound, naming subscriber and dispatch."""

from __future__ import annotations

from composer.returnpath import ReturnPaths, dispatch_tag, read_token
from composer.unsubscribe import UnsubscribeLinks

SECRET = b"s" * 40


def test_a_return_path_names_the_subscriber_and_the_dispatch() -> None:
    paths = ReturnPaths("bounces@news.example.com", SECRET)
    address = paths.for_dispatch("id:3f9a1c2b7e40").address(12345)
    local, domain = address.split("@")
    assert domain == "news.example.com" and local.startswith("bounces+")
    assert len(local) <= 64
    token = paths.token_of(address)
    assert token is not None
    named = read_token(token)
    assert named is not None
    assert (named.subscriber_id, named.dispatch_tag) == (12345, dispatch_tag("id:3f9a1c2b7e40"))


def test_a_return_path_survives_a_relay_that_folds_its_case() -> None:
    paths = ReturnPaths("Bounces@News.Example.com", SECRET)
    address = paths.for_dispatch("id:x").address(7)
    assert paths.token_of(address.upper()) == paths.token_of(address) is not None


def test_a_forged_or_foreign_return_path_is_refused() -> None:
    paths = ReturnPaths("bounces@news.example.com", SECRET)
    address = paths.for_dispatch("id:x").address(7)
    local, domain = address.split("@")
    forged = local.replace("bounces+7-", "bounces+8-") + "@" + domain
    assert paths.token_of(forged) is None
    assert paths.token_of(local + "@other.example.com") is None
    assert paths.token_of("bounces@news.example.com") is None
    other_key = ReturnPaths("bounces@news.example.com", b"t" * 40)
    assert other_key.token_of(address) is None


def test_an_unsubscribe_token_is_not_a_return_token() -> None:
    links = UnsubscribeLinks("https://news.example.com", SECRET)
    unsubscribe = links.token("ann@example.org", "id:x")
    paths = ReturnPaths("bounces@news.example.com", SECRET)
    assert paths.token_of(f"bounces+{unsubscribe}@news.example.com") is None
    # Nor the other way: the same payload signed for a return path fails as a link.
    payload = "7-" + dispatch_tag("id:x")
    assert paths.sign(payload) not in links.token("7", dispatch_tag("id:x"))
