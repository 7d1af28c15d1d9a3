"""Which issues `newsletter serve` puts on the web: those sent to the list (a real send to
aiosmtpd, recorded in a real SQLite file) or marked ``published = true``; never one
marked ``published = false`` or dated after today, nor a skeleton being written."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree as ET

import httpx
import pytest

from composer.composing.load import load_issue
from composer.config import load_config
from composer.errors import IssueError
from composer.model import content_digest
from composer.sending.send import dispatch_status, send_issue
from composer.store.deliveries import DispatchedIssue
from composer.web.archive import find_published, published_issues
from tests.conftest import (
    EXAMPLE_MD,
    fast,
    invoke,
    newsletter,
    published_copy,
    serving,
    subscribe,
)
from tests.smtp_server import SmtpServer

ATOM = "{http://www.w3.org/2005/Atom}"
TODAY = dt.datetime.now(dt.UTC).date()
FUTURE = TODAY + dt.timedelta(days=7)
OFF = (False, False, 404)
ON = (True, True, 200)


@pytest.fixture
def web(send_config: Path) -> Iterator[httpx.Client]:
    """`newsletter serve` of the config `send` uses, so both share the store."""
    with serving(load_config(send_config)) as client:
        yield client


def on_the_web(client: httpx.Client, slug: str) -> tuple[bool, bool, int]:
    """Whether issue ``slug`` is in the archive, in the feed, and its page's status."""
    archive = f'/issues/{slug}"' in client.get("/").text
    entries = ET.fromstring(client.get("/feed.xml").content).findall(f"{ATOM}entry")
    feed = any(entry.findtext(f"{ATOM}id", "").endswith(f"/issues/{slug}") for entry in entries)
    return archive, feed, client.get(f"/issues/{slug}").status_code


def example(folder: Path, name: str, *, front: str = "", date: dt.date | None = None) -> Path:
    """The example issue (no id) as ``folder/name``, with ``front`` added to its front
    matter and dated ``date`` if given."""
    text = EXAMPLE_MD.read_text(encoding="utf-8").replace("+++\n", f"+++\n{front}", 1)
    if date is not None:
        text = text.replace("date = 2024-05-03", f"date = {date.isoformat()}", 1)
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def send(config_path: Path, path: Path) -> int:
    """Send the issue at ``path`` to the list in-process; how many copies went."""
    config = load_config(config_path)
    return send_issue(path, config, "all", settings=fast(config_path)).report.sent


def test_a_new_skeleton_is_not_on_the_web_until_it_is_sent(
    send_config: Path, smtp: SmtpServer, web: httpx.Client, tmp_path: Path
) -> None:
    issues = tmp_path / "issues"
    made = invoke(send_config, "new", "weekly", "--dir", issues)
    assert made.exit_code == 0, made.output
    [skeleton] = issues.glob("*-weekly.md")
    assert on_the_web(web, skeleton.stem) == OFF
    # The editor writes the issue in the skeleton's place, keeping its id and date.
    front = re.search(r"^id = .*\n", skeleton.read_text(encoding="utf-8"), re.M)
    assert front is not None
    date = load_issue(skeleton).date
    example(issues, skeleton.name, front=front[0], date=date)
    assert on_the_web(web, skeleton.stem) == OFF

    subscribe(send_config, 3)
    sent = newsletter("send", skeleton, "--yes", config_path=send_config)
    assert sent.returncode == 0, sent.stderr
    assert sum(smtp.received().values()) == 3
    assert on_the_web(web, skeleton.stem) == ON


def test_published_true_puts_an_issue_never_sent_on_the_web(
    web: httpx.Client, tmp_path: Path
) -> None:
    published_copy(EXAMPLE_MD, tmp_path / "issues")
    example(tmp_path / "issues", "2024-05-04-unsent.md")
    assert on_the_web(web, EXAMPLE_MD.stem) == ON
    assert on_the_web(web, "2024-05-04-unsent") == OFF


def test_published_false_takes_a_sent_issue_off_the_web_and_leaves_its_dispatch_as_it_was(
    send_config: Path, smtp: SmtpServer, web: httpx.Client, tmp_path: Path
) -> None:
    addresses = subscribe(send_config, 3)
    # Without an id, so its dispatch is found by its content (the file is renamed below).
    first = example(tmp_path / "issues", "2024-05-03-weekly.md")
    assert send(send_config, first) == 3
    assert on_the_web(web, first.stem) == ON

    hidden = example(tmp_path / "issues", "2024-05-03-weekly-v2.md", front="published = false\n")
    first.unlink()
    assert on_the_web(web, hidden.stem) == OFF
    assert send(send_config, hidden) == 0, "the flag is not new content"
    assert smtp.received() == {address: 1 for address in addresses}
    assert dispatch_status(hidden, load_config(send_config)).counts["sent"] == 3

    shown = example(tmp_path / "issues", hidden.name)  # the flag taken out again
    assert on_the_web(web, shown.stem) == ON


def test_the_published_flag_is_not_content_so_it_keeps_every_dispatch_key(
    tmp_path: Path,
) -> None:
    plain = load_issue(EXAMPLE_MD)
    marked = [
        load_issue(example(tmp_path, f"{flag}.md", front=f"published = {flag}\n"))
        for flag in ("true", "false")
    ]
    assert [issue.published for issue in (plain, *marked)] == [None, True, False]
    assert {content_digest(issue) for issue in (plain, *marked)} == {content_digest(plain)}
    # An issue's digest from before the flag existed: dispatches keyed by it must resume.
    before = tmp_path / "before.md"
    before.write_text(
        '+++\ntitle = "Before the flag"\ndate = 2024-05-03\n+++\n\nA lede.\n\n'
        "## What happened\n\nText.\n",
        encoding="utf-8",
    )
    assert content_digest(load_issue(before)) == (
        "66adc7bd71a8d986124ca61139daacde66da6eac8c38f506156815157d364762"
    )


def test_an_issue_dated_after_today_is_never_on_the_web(
    send_config: Path, smtp: SmtpServer, web: httpx.Client, tmp_path: Path
) -> None:
    subscribe(send_config, 2)
    issues = tmp_path / "issues"
    sent = example(issues, f"{FUTURE}-sent.md", front='id = "sent-early"\n', date=FUTURE)
    assert send(send_config, sent) == 2
    example(issues, f"{FUTURE}-marked.md", front="published = true\n", date=FUTURE)
    assert on_the_web(web, sent.stem) == OFF
    assert on_the_web(web, f"{FUTURE}-marked") == OFF


def test_a_dispatch_whose_every_copy_was_refused_does_not_publish(
    send_config: Path, smtp: SmtpServer, web: httpx.Client, tmp_path: Path
) -> None:
    for address in subscribe(send_config, 2):
        smtp.handler.faults[address] = ["550 5.1.1 no such user"]
    path = example(tmp_path / "issues", "2024-05-03-refused.md")
    assert send(send_config, path) == 0
    assert on_the_web(web, path.stem) == OFF


def test_a_store_that_cannot_answer_leaves_the_archive_as_it_last_knew_or_shows_no_sent_issue(
    send_config: Path, smtp: SmtpServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    subscribe(send_config, 2)
    sent = example(tmp_path / "issues", "2024-05-03-sent.md")
    assert send(send_config, sent) == 2
    marked = published_copy(EXAMPLE_MD, tmp_path / "elsewhere")
    marked = marked.rename(tmp_path / "issues" / "2024-05-02-marked.md")
    config = load_config(send_config)
    with serving(config) as client:
        assert on_the_web(client, sent.stem) == ON
        database = config.subscribers.database
        database.rename(database.with_name("aside.db"))
        database.mkdir()  # the store cannot be opened now
        assert on_the_web(client, sent.stem) == ON, "what the store last said"
        assert on_the_web(client, marked.stem) == ON
    assert "the archive goes by the 1 dispatched issues the store last named" in caplog.text
    with serving(config) as client:
        assert on_the_web(client, sent.stem) == OFF, "fail closed: no answer yet"
        assert on_the_web(client, marked.stem) == ON


def test_the_archive_asks_the_store_once_however_many_issues_and_only_when_needed(
    tmp_path: Path,
) -> None:
    for day in range(1, 6):
        example(tmp_path, f"2024-05-0{day}-unsent.md")
    example(tmp_path, "2024-04-30-marked.md", front="published = true\n")
    asked: list[int] = []

    def dispatched() -> list[DispatchedIssue]:
        asked.append(1)
        return [DispatchedIssue(slug="2024-05-02-unsent", id="", content=None)]

    shown = published_issues(tmp_path, TODAY, dispatched)
    assert [issue.slug for issue in shown] == ["2024-05-02-unsent", "2024-04-30-marked"]
    assert len(asked) == 1
    assert find_published(tmp_path, "2024-04-30-marked", TODAY, dispatched) is not None
    assert find_published(tmp_path, "2024-05-03-unsent", dt.date(2024, 5, 1), dispatched) is None
    assert len(asked) == 1, "a marked issue or one not yet due needs no store"


@pytest.mark.parametrize("value", ['"yes"', "1", '"true"'])
def test_published_must_be_true_or_false_one_line_naming_it(tmp_path: Path, value: str) -> None:
    path = example(tmp_path, "issue.md", front=f"published = {value}\n")
    with pytest.raises(IssueError, match=r"issue\.md:2: published must be true or false"):
        load_issue(path)


def test_published_reads_the_same_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "issue.toml"
    path.write_text(
        'title = "T"\ndate = 2024-05-03\npublished = true\n\n[[blocks]]\nheading = "A"\n'
        'body = "Text."\n',
        encoding="utf-8",
    )
    assert load_issue(path).published is True
