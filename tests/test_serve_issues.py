"""The web side of `newsletter serve`: issue web versions, the archive and the Atom feed."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable
from pathlib import Path
from xml.etree import ElementTree as ET

import httpx
import pytest
from starlette.testclient import TestClient

from composer.composing.pipeline import compose_file
from composer.config import Config, load_config
from composer.reader_links import ReaderLinks
from composer.store import NewSubscriber, SubscriberStore
from composer.web.serve import create_app
from tests.conftest import EXAMPLE_MD, EXAMPLE_TOML, published_copy, with_settings

ATOM = "{http://www.w3.org/2005/Atom}"
FUTURE = (dt.date.today() + dt.timedelta(days=30)).isoformat()


@pytest.fixture
def issues(tmp_path: Path, write_issue: Callable[..., Path]) -> Path:
    folder = tmp_path / "issues"
    # On the web by its flag: which issues are on it is tests/test_publishing.py's job.
    published_copy(EXAMPLE_MD, folder)
    shutil.copy(EXAMPLE_TOML, folder)
    write_issue(
        f"""
        +++
        title = "Next week's draft"
        date = {FUTURE}
        published = true
        +++
        Not ready.
        """,
        name=f"{FUTURE}-draft.md",
    )
    write_issue(
        """
        +++
        title = "Older <b>one</b>"
        date = 2024-04-26
        published = true
        subtitle = "Short & sweet"
        +++
        A short issue with no paywall.

        ## The news
        Everything is here.
        """,
        name="2024-04-26-older.md",
    )
    write_issue("+++\ntitle = \n", name="2024-01-01-broken.md")
    return folder


def test_archive_lists_published_issues_newest_first_and_escapes_titles(
    server: httpx.Client, issues: Path
) -> None:
    response = server.get("/")
    assert response.status_code == 200
    text = response.text
    assert text.index("The data pipeline") < text.index("Older &lt;b&gt;one&lt;/b&gt;")
    assert "Short &amp; sweet" in text
    assert "draft" not in text and "broken" not in text
    assert text.count("/issues/2024-05-03-example") == 1


def test_feed_is_atom_with_one_entry_per_published_issue(
    server: httpx.Client, issues: Path
) -> None:
    response = server.get("/feed.xml")
    assert response.headers["content-type"].startswith("application/atom+xml")
    feed = ET.fromstring(response.content)
    entries = feed.findall(f"{ATOM}entry")
    assert [entry.findtext(f"{ATOM}title") for entry in entries] == [
        "The data pipeline behind the apps everyone uses",
        "Older <b>one</b>",
    ]
    assert entries[0].findtext(f"{ATOM}id") == (
        "https://news.example.com/issues/2024-05-03-example"
    )
    assert feed.findtext(f"{ATOM}updated") == "2024-05-03T00:00:00Z"


def test_web_version_is_the_free_edition_with_the_paid_note(
    server: httpx.Client, issues: Path
) -> None:
    response = server.get("/issues/2024-05-03-example")
    assert response.status_code == 200
    assert "The data pipeline behind the apps everyone uses" in response.text
    assert "The rest of this issue is for paid subscribers." in response.text
    assert "%%unsubscribe_url%%" not in response.text


def test_web_version_of_an_issue_without_a_paywall_is_whole(
    server: httpx.Client, issues: Path
) -> None:
    response = server.get("/issues/2024-04-26-older")
    assert "Everything is here." in response.text
    assert "for paid subscribers" not in response.text


@pytest.mark.parametrize(
    "slug", [f"{FUTURE}-draft", "2024-01-01-broken", "nope", "..%2Fconfig", "%2e%2e"]
)
def test_unpublished_unknown_or_outside_slugs_are_404(
    server: httpx.Client, issues: Path, slug: str
) -> None:
    response = server.get(f"/issues/{slug}")
    assert response.status_code == 404
    assert "[newsletter]" not in response.text


def test_an_issue_that_does_not_load_is_left_out_and_logged_while_the_rest_are_served(
    server: httpx.Client,
    issues: Path,
    write_issue: Callable[..., Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    deep = "[" * 5000 + "]" * 5000
    write_issue(
        f'+++\ntitle = "Deep"\ndate = 2024-04-01\nx = {deep}\n+++\nText.\n', "2024-04-01-deep.md"
    )
    write_issue(
        '+++\ntitle = "Bell \\u0001 title"\ndate = 2024-04-02\n+++\n\n## A\n\nText.\n',
        "2024-04-02-bell.md",
    )
    archive = server.get("/")
    feed = server.get("/feed.xml")
    page = server.get("/issues/2024-04-02-bell")

    assert archive.status_code == 200 and "Older &lt;b&gt;one&lt;/b&gt;" in archive.text
    assert "Deep" not in archive.text and "Bell" not in archive.text
    assert feed.status_code == 200
    entries = ET.fromstring(feed.content).findall(f"{ATOM}entry")
    assert len(entries) == 2
    assert page.status_code == 404
    logged = caplog.text
    assert "2024-04-01-deep.md:4: TOML nested too deeply" in logged
    assert "2024-04-02-bell.md:2: title holds character U+0001" in logged


def test_an_issue_that_loads_but_cannot_be_composed_is_404_and_logged_not_a_500(
    server: httpx.Client,
    issues: Path,
    write_issue: Callable[..., Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    write_issue(
        '+++\ntitle = "Odd"\ndate = 2024-04-03\npublished = true\n+++\n\n'
        "## A quote {.pull-quote}\n\nText.\n",
        "2024-04-03-odd.md",
    )
    page = server.get("/issues/2024-04-03-odd")

    assert page.status_code == 404
    assert "[newsletter]" not in page.text
    assert "2024-04-03-odd.md:7: block 'A quote' is of kind 'pull-quote'" in caplog.text
    assert server.get("/issues/2024-04-26-older").status_code == 200


def read_path(config: Config, key: str, slug: str = "2024-05-03-example") -> str:
    return (
        ReaderLinks.from_config(config).web_url(key, slug).removeprefix(config.newsletter.base_url)
    )


@pytest.fixture
def readers(store: SubscriberStore) -> SubscriberStore:
    store.save(NewSubscriber(email="paid@example.com", key="paid@example.com", tier="paid"))
    store.save(NewSubscriber(email="free@example.com", key="free@example.com", tier="free"))
    store.save(NewSubscriber(email="gone@example.com", key="gone@example.com", tier="paid"))
    store.mark_status("gone@example.com", "unsubscribed", "test")
    return store


def test_a_paid_readers_token_shows_the_paid_edition_privately(
    server: httpx.Client, config: Config, issues: Path, readers: SubscriberStore
) -> None:
    response = server.get(read_path(config, "paid@example.com"))
    assert response.status_code == 200
    assert "The Big Story in China Business" in response.text
    assert "for paid subscribers" not in response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-robots-tag"] == "noindex"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda path: path[:-2],
        lambda path: path.replace("token=", "token=A"),
        lambda path: path + "x",
        lambda path: path.split("token=")[0] + "token=",
        lambda path: path.split("token=")[0] + "token=%FF%00.%2e",
    ],
    ids=["cut", "payload-changed", "mac-changed", "empty", "junk"],
)
def test_a_tampered_token_shows_the_free_edition_never_an_error(
    server: httpx.Client, config: Config, issues: Path, readers: SubscriberStore, tamper
) -> None:
    response = server.get(tamper(read_path(config, "paid@example.com")))
    assert response.status_code == 200
    assert "The Big Story in China Business" not in response.text
    assert "The rest of this issue is for paid subscribers." in response.text
    assert 'name="email"' in response.text  # the stranger's subscribe form


@pytest.mark.parametrize("key", ["gone@example.com", "nobody@example.com"])
def test_a_token_of_a_reader_who_left_or_is_unknown_shows_the_free_edition(
    server: httpx.Client, config: Config, issues: Path, readers: SubscriberStore, key: str
) -> None:
    response = server.get(read_path(config, key))
    assert response.status_code == 200
    assert "The Big Story in China Business" not in response.text


def test_other_tokens_do_not_open_the_paid_edition(
    server: httpx.Client, config: Config, issues: Path, readers: SubscriberStore
) -> None:
    manage = ReaderLinks.from_config(config).manage_url("paid@example.com").split("token=")[1]
    response = server.get(f"/issues/2024-05-03-example?token={manage}")
    assert "The Big Story in China Business" not in response.text


def test_the_panel_offers_strangers_a_subscribe_form_and_upgrade_when_configured(
    server: httpx.Client, config_path: Path, issues: Path
) -> None:
    without = server.get("/issues/2024-05-03-example").text
    assert 'action="https://news.example.com/subscribe"' in without
    assert 'method="get"' in without and "<script" not in without
    assert "Upgrade" not in without
    with_settings(config_path, "newsletter", upgrade_url='"https://pay.example.com/join"')
    app = create_app(load_config(config_path))
    with TestClient(app) as client:
        page = client.get("/issues/2024-05-03-example").text
    assert 'href="https://pay.example.com/join"' in page and "Upgrade" in page
    assert 'name="email"' in page


def test_a_free_readers_token_shows_the_panel_with_upgrade_and_no_subscribe_form(
    config_path: Path, issues: Path, readers: SubscriberStore
) -> None:
    with_settings(config_path, "newsletter", upgrade_url='"https://pay.example.com/join"')
    config = load_config(config_path)
    with TestClient(create_app(config)) as client:
        page = client.get(read_path(config, "free@example.com")).text
    assert "The rest of this issue is for paid subscribers." in page
    assert "Upgrade" in page and 'name="email"' not in page


def test_share_links_are_in_the_email_and_web_version_unless_share_is_false(
    config_path: Path, issues: Path
) -> None:
    shares = (
        "mailto:?subject=",
        "https://x.com/intent/tweet?",
        "linkedin.com/sharing",
        "facebook.com/sharer",
    )
    public = "https%3A%2F%2Fnews.example.com%2Fissues%2F2024-05-03-example"
    for share in (True, False):
        with_settings(config_path, "newsletter", share=str(share).lower())
        config = load_config(config_path)
        email = compose_file(EXAMPLE_MD, config, "free")
        with TestClient(create_app(config)) as client:
            web = client.get("/issues/2024-05-03-example").text
        for html in (email.html, web):
            assert all((link in html) is share for link in shares)
            assert (public in html) is share
        assert ("Share this issue: https://news.example.com/issues/" in email.text) is share
        # Copy the link: a plain read-only field on the web version only.
        assert ('id="nl-link"' in web) is share and 'id="nl-link"' not in email.html
