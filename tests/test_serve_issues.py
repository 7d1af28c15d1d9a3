"""The web side of `newsletter serve`: issue web versions, the archive and the Atom feed."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable
from pathlib import Path
from xml.etree import ElementTree as ET

import httpx
import pytest

from tests.conftest import EXAMPLE_MD, EXAMPLE_TOML

ATOM = "{http://www.w3.org/2005/Atom}"
FUTURE = (dt.date.today() + dt.timedelta(days=30)).isoformat()


@pytest.fixture
def issues(tmp_path: Path, write_issue: Callable[..., Path]) -> Path:
    folder = tmp_path / "issues"
    folder.mkdir()
    shutil.copy(EXAMPLE_MD, folder)
    shutil.copy(EXAMPLE_TOML, folder)
    write_issue(
        f"""
        +++
        title = "Next week's draft"
        date = {FUTURE}
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
        '+++\ntitle = "Odd"\ndate = 2024-04-03\n+++\n\n## A quote {.pull-quote}\n\nText.\n',
        "2024-04-03-odd.md",
    )
    page = server.get("/issues/2024-04-03-odd")

    assert page.status_code == 404
    assert "[newsletter]" not in page.text
    assert "2024-04-03-odd.md:6: block 'A quote' is of kind 'pull-quote'" in caplog.text
    assert server.get("/issues/2024-04-26-older").status_code == 200
