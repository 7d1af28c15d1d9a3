"""Which dispatch an issue file continues, against a real SQLite file and SMTP server:
found by its id or its content whatever the file is called, a repeat of content already
sent refused unless asked, and dispatches recorded by file name before ids still found."""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from composer.cli import cli
from composer.composing.load import load_issue
from composer.config import load_config
from composer.errors import AlreadyDispatched, IssueError
from composer.model import content_digest
from composer.sending.send import dispatch_status, send_issue
from composer.store import NewSubscriber, open_store
from composer.store.sqlite import MIGRATIONS, SqliteSubscriberStore
from tests.conftest import EXAMPLE_MD, EXAMPLE_TOML, fast, invoke, subscribe


def with_id(text: str, issue_id: str | None) -> str:
    """An issue's Markdown with ``id`` as the first front-matter key (None: as it is)."""
    if issue_id is None:
        return text
    return text.replace("+++\n", f'+++\nid = "{issue_id}"\n', 1)


def issue_file(folder: Path, name: str, issue_id: str | None = None) -> Path:
    """The example issue, with ``id``, written to ``folder/issues/name``."""
    path = folder / "issues" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(with_id(EXAMPLE_MD.read_text(encoding="utf-8"), issue_id), encoding="utf-8")
    return path


def send(config_path: Path, path: Path, **options: bool):
    config = load_config(config_path)
    return send_issue(path, config, "all", settings=fast(config_path), **options).report


def newcomers(config_path: Path, *addresses: str) -> None:
    with open_store(load_config(config_path).subscribers) as store:
        for address in addresses:
            store.save(NewSubscriber(email=address, key=address))


# -- the id -------------------------------------------------------------------------------


def test_new_and_init_write_an_id_of_their_own_into_each_issue(run_cli, tmp_path):
    issues = tmp_path / "issues"
    assert run_cli("new", "one", "--dir", issues).exit_code == 0
    assert run_cli("new", "two", "--dir", issues, "--toml").exit_code == 0
    assert CliRunner().invoke(cli, ["init", str(tmp_path / "letter")]).exit_code == 0
    paths = [*issues.iterdir(), *(tmp_path / "letter" / "issues").iterdir()]
    ids = {load_issue(path).id for path in paths}
    assert len(paths) == len(ids) == 3 and all(len(found) == 12 for found in ids)


def test_an_id_that_is_not_a_token_is_one_line_with_its_line(write_issue):
    for value in ('""', "5", '"two words"', f'"{"x" * 65}"'):
        path = write_issue(f'+++\ntitle = "T"\nid = {value}\ndate = 2024-05-03\n+++\n\nText.\n')
        with pytest.raises(IssueError, match=r"issue\.md:3: id must be a token") as caught:
            load_issue(path)
        assert "\n" not in caught.value.format_message()


def test_the_content_digest_ignores_the_file_name_the_format_and_the_id(tmp_path):
    example = load_issue(EXAMPLE_MD)
    renamed = load_issue(issue_file(tmp_path, "renamed.md", "abc123"))
    assert renamed.id == "abc123" and renamed.slug == "renamed"
    assert (
        content_digest(renamed)
        == content_digest(example)
        == content_digest(load_issue(EXAMPLE_TOML))
    )
    edited = tmp_path / "edited.md"
    edited.write_text(EXAMPLE_MD.read_text().replace("happened", "happens", 1))
    assert content_digest(load_issue(edited)) != content_digest(example)


# -- continuing a dispatch ------------------------------------------------------------------


def test_a_renamed_file_with_its_id_continues_its_dispatch_and_sends_no_one_twice(
    send_config, smtp, tmp_path
):
    addresses = subscribe(send_config, 6)
    first = issue_file(tmp_path, "2024-05-03-pipeline.md", "3f9a1c2b7e40")
    assert send(send_config, first).sent == 6
    newcomers(send_config, "late@example.org")
    renamed = first.with_name("2024-05-03-pipeline-v2.md")
    first.rename(renamed)
    report = send(send_config, renamed)
    assert report.sent == 1 and report.complete
    assert smtp.received() == {address: 1 for address in [*addresses, "late@example.org"]}
    status = dispatch_status(renamed, load_config(send_config))
    assert status.counts["sent"] == 7 and status.issue == "2024-05-03-pipeline-v2"


def test_a_renamed_file_without_an_id_continues_by_its_content(send_config, smtp, tmp_path):
    subscribe(send_config, 5)
    first = issue_file(tmp_path, "weekly.md")
    assert send(send_config, first).sent == 5
    copy = shutil.copy(first, first.with_name("weekly-v2.md"))
    assert send(send_config, Path(copy)).sent == 0
    assert sum(smtp.received().values()) == 5
    assert dispatch_status(Path(copy), load_config(send_config)).counts["sent"] == 5


def test_a_file_without_an_id_edited_mid_dispatch_continues_by_its_name(
    send_config, smtp, tmp_path
):
    subscribe(send_config, 4)
    path = issue_file(tmp_path, "weekly.md")
    assert send(send_config, path).sent == 4
    newcomers(send_config, "late@example.org")
    path.write_text(path.read_text().replace("happened", "happens", 1))
    assert send(send_config, path).sent == 1, "a typo fixed is the same issue"
    assert sum(smtp.received().values()) == 5


def test_an_id_added_to_a_file_already_sent_continues_its_dispatch(send_config, smtp, tmp_path):
    subscribe(send_config, 3)
    path = issue_file(tmp_path, "weekly.md")
    assert send(send_config, path).sent == 3
    newcomers(send_config, "late@example.org")
    path.write_text(with_id(path.read_text(), "0123456789ab"))
    assert send(send_config, path).sent == 1
    renamed = path.rename(path.with_name("weekly-renamed.md"))
    renamed.write_text(renamed.read_text().replace("happened", "happens", 1))
    assert send(send_config, renamed).sent == 0, "renamed and edited, it is found by the id"
    assert sum(smtp.received().values()) == 4


def test_the_same_content_under_another_id_is_refused_naming_the_dispatch_unless_again(
    send_config, smtp, tmp_path
):
    subscribe(send_config, 3)
    first = issue_file(tmp_path, "2024-05-03-pipeline.md", "3f9a1c2b7e40")
    assert send(send_config, first).sent == 3
    copy = issue_file(tmp_path, "2024-05-03-pipeline-v2.md", "77aa00bb11cc")

    refused = invoke(send_config, "send", copy, "--yes")
    assert refused.exit_code == 1
    today = dt.datetime.now(dt.UTC).date().isoformat()
    [line] = refused.output.splitlines()
    assert str(copy) in line and "already sent as 2024-05-03-pipeline" in line
    assert "3 copies to all" in line and f"first on {today}" in line and "--again" in line
    assert 'id = "3f9a1c2b7e40"' in line
    with pytest.raises(AlreadyDispatched):
        send(send_config, copy)
    assert invoke(send_config, "send", copy, "--dry-run").exit_code == 1
    assert sum(smtp.received().values()) == 3, "nothing was sent"

    again = invoke(send_config, "send", copy, "--yes", "--again")
    assert again.exit_code == 0, again.output
    assert set(smtp.received().values()) == {2}, "--again sends the copy to everyone"


def test_a_copy_whose_earlier_dispatch_reached_no_one_is_not_a_repeat(send_config, smtp, tmp_path):
    first = issue_file(tmp_path, "a.md", "aaaaaaaaaaaa")
    assert send(send_config, first).sent == 0  # an empty list: nothing went out
    subscribe(send_config, 2)
    assert send(send_config, issue_file(tmp_path, "b.md", "bbbbbbbbbbbb")).sent == 2


# -- dispatches recorded before ids ---------------------------------------------------------


def database_from_before_ids(
    path: Path, monkeypatch: pytest.MonkeyPatch, readers: list[str], *rows: str
) -> None:
    """A subscriber database at schema 4, the last one that keyed dispatches by file name,
    with ``readers`` subscribed and ``rows`` (SQL) written as that release wrote them."""
    with monkeypatch.context() as patch:
        patch.setattr("composer.store.sqlite.database.MIGRATIONS", MIGRATIONS[:4])
        SqliteSubscriberStore(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 4
        # As that release wrote them: today's store would look for tables added since.
        db.executemany(
            "INSERT INTO subscribers (email, key, tier, status, status_changed_at, created_at)"
            " VALUES (?, ?, 'free', 'active', '2024-05-01T00:00:00+00:00',"
            " '2024-05-01T00:00:00+00:00')",
            [(email, email) for email in readers],
        )
        for statement in rows:
            db.execute(statement)
    db.close()


def test_a_dispatch_keyed_by_file_name_before_the_upgrade_is_continued_not_resent(
    send_config, smtp, tmp_path, monkeypatch
):
    addresses = [f"reader{n}@example.org" for n in range(10)]
    slug = EXAMPLE_MD.stem
    # What the release before wrote for a dispatch stopped after six readers.
    database_from_before_ids(
        tmp_path / "subscribers.db",
        monkeypatch,
        addresses,
        "INSERT INTO dispatches (issue, segment, started_at, last_run_at)"
        f" VALUES ('{slug}', 'all', '2024-05-03T08:00:00+00:00', '2024-05-03T08:00:00+00:00')",
        "INSERT INTO deliveries (issue, subscriber_id, email, state, attempts, updated_at)"
        f" SELECT '{slug}', id, email, 'sent', 1, '2024-05-03T08:01:00+00:00' FROM subscribers"
        " WHERE id <= 6",
    )
    config = load_config(send_config)
    before = dispatch_status(EXAMPLE_MD, config)  # opening the store upgrades it
    assert (before.counts["sent"], before.not_attempted) == (6, 4)

    report = send_issue(EXAMPLE_MD, config, "all", settings=fast(send_config)).report
    assert report.sent == 4 and report.complete
    assert set(smtp.received()) == set(addresses[6:]), "no one already sent gets it again"

    # Resumed once, the dispatch now knows its content: a renamed copy finds it too.
    renamed = Path(shutil.copy(EXAMPLE_MD, tmp_path / "renamed.md"))
    assert send(send_config, renamed).sent == 0
    assert dispatch_status(renamed, config).counts["sent"] == 10


def test_the_upgrade_keeps_every_dispatch_and_names_it_by_its_old_key(tmp_path, monkeypatch):
    database = tmp_path / "subscribers.db"
    database_from_before_ids(
        database,
        monkeypatch,
        [],
        "INSERT INTO dispatches (issue, segment, started_at, last_run_at, last_result)"
        " VALUES ('2024-04-26-old', 'paid', '2024-04-26', '2024-04-27', 'complete')",
    )
    SqliteSubscriberStore(database).close()
    with sqlite3.connect(database) as db:
        row = db.execute(
            "SELECT issue, slug, issue_id, content_digest, segment, last_result FROM dispatches"
        ).fetchone()
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    db.close()
    assert row == ("2024-04-26-old", "2024-04-26-old", None, None, "paid", "complete")
