"""One address, one reader: letter case never makes two subscribers (import, add, remove,
unsubscribe links, preview, dispatch), and lists from before that rule are merged once,
with the most protective status, when they are first opened."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import httpx
from click.testing import Result

from composer.config import Config, load_config
from composer.sending.send import send_issue
from composer.store import NewSubscriber, SubscriberStore, open_store
from composer.store.csvio import import_csv
from composer.store.sqlite import MIGRATIONS
from composer.unsubscribe import UnsubscribeLinks
from composer.web.preview import find_reader
from tests.conftest import EXAMPLE_MD, both_backends, newsletter, write_csv
from tests.smtp_server import SmtpServer


@both_backends
def test_one_address_in_three_letter_cases_is_one_reader_who_gets_one_copy(
    send_config: Path, smtp: SmtpServer, tmp_path: Path
) -> None:
    config = load_config(send_config)
    text = (
        "email,name,tier\n"
        "Reader5@Example.org,Reader Five,paid\n"
        "reader5@example.org,,\n"
        "READER5@EXAMPLE.ORG,Shouting,free\n"
        "ann@example.org,Ann,\n"
    )
    with open_store(config.subscribers) as store:
        first = import_csv(write_csv(tmp_path / "list.csv", text), store)
        again = import_csv(write_csv(tmp_path / "again.csv", "email\nrEaDeR5@example.ORG\n"), store)
        readers = [(s.email, s.key, s.name, s.tier) for s in store.iter_all()]
    assert (first.counts.added, first.counts.duplicates) == (2, 2)
    assert (again.counts.added, again.counts.unchanged) == (0, 1)
    assert readers == [
        ("Reader5@Example.org", "reader5@example.org", "Reader Five", "paid"),
        ("ann@example.org", "ann@example.org", "Ann", "free"),
    ]

    result = send_issue(EXAMPLE_MD, config, "all")
    assert result.report.sent == 2
    # Delivered to the first spelling seen, once.
    assert smtp.received() == {"Reader5@Example.org": 1, "ann@example.org": 1}


@both_backends
def test_add_in_another_letter_case_updates_the_reader_and_remove_finds_them(
    run_cli: Callable[..., Result], store: SubscriberStore
) -> None:
    assert run_cli("subscribers", "add", "reader@example.org").exit_code == 0
    added = run_cli("subscribers", "add", "READER@Example.ORG", "--name", "R", "--tier", "paid")
    assert added.exit_code == 0, added.output
    assert added.stdout == "Updated reader@example.org (paid)\n"
    assert [(s.email, s.name, s.tier) for s in store.iter_all()] == [
        ("reader@example.org", "R", "paid")
    ]
    removed = run_cli("subscribers", "remove", "Reader@EXAMPLE.org")
    assert removed.stdout == "Unsubscribed reader@example.org\n"


@both_backends
def test_preview_as_finds_the_reader_in_any_letter_case(
    config: Config, store: SubscriberStore
) -> None:
    store.save(NewSubscriber(email="Reader5@Example.org", key="reader5@example.org", tier="paid"))
    reader = find_reader(config, "READER5@example.ORG")
    assert (reader.subscriber.email, reader.subscriber.tier) == ("Reader5@Example.org", "paid")


@both_backends
def test_a_link_signed_with_the_old_case_preserving_key_still_unsubscribes(
    server: httpx.Client, config: Config, store: SubscriberStore
) -> None:
    store.save(NewSubscriber(email="Reader5@Example.org", key="reader5@example.org"))
    store.save(NewSubscriber(email="other@example.org", key="other@example.org"))
    # Before keys were lower-cased, a token carried the local part as written.
    url = UnsubscribeLinks.from_config(config).url("Reader5@example.org", "issue-1")
    path = url.removeprefix(config.newsletter.base_url)

    page = server.get(path)
    assert "Reader5@Example.org" in page.text and "<form" in page.text
    response = server.post(path, data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    assert {s.email: (s.status, s.status_reason) for s in store.iter_all()} == {
        "Reader5@Example.org": ("unsubscribed", "unsubscribe link in issue-1"),
        "other@example.org": ("active", ""),
    }


T1, T2, T3 = (f"2024-0{month}-01T00:00:00+00:00" for month in (1, 2, 3))


def schema_2_database(path: Path) -> sqlite3.Connection:
    """A subscriber database as the release before case-insensitive keys left it."""
    db = sqlite3.connect(path, isolation_level=None)
    for script in MIGRATIONS[:2]:
        assert isinstance(script, str)
        db.executescript(script)
    db.execute("PRAGMA user_version = 2")
    return db


def insert(db: sqlite3.Connection, email: str, **fields: str) -> int:
    """A row keyed as before: the domain folded, the local part as written."""
    local, domain = email.rsplit("@", 1)
    values = {"name": "", "tier": "free", "tags": "", "at": T1, **fields}
    cursor = db.execute(
        "INSERT INTO subscribers (email, key, name, tier, tags, status, status_changed_at,"
        " status_reason, created_at) VALUES (?, ?, ?, ?, ?, 'active', ?, 'imported', ?)",
        (email, f"{local}@{domain.lower()}", values["name"], values["tier"], values["tags"],
         values["at"], values["at"]),
    )  # fmt: skip
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def mark(db: sqlite3.Connection, id_: int, status: str, at: str, reason: str) -> None:
    db.execute(
        "UPDATE subscribers SET status = ?, status_changed_at = ?, status_reason = ? WHERE id = ?",
        (status, at, reason, id_),
    )


def deliver(db: sqlite3.Connection, issue: str, id_: int, state: str, at: str) -> None:
    db.execute(
        "INSERT INTO deliveries (issue, subscriber_id, email, state, updated_at)"
        " SELECT ?, id, email, ?, ? FROM subscribers WHERE id = ?",
        (issue, state, at, id_),
    )


REPORT = (
    "merged 2 addresses that differed only in letter case"
    " (kept the most protective status): Bob@example.org, Reader5@Example.org"
)


def old_list_with_case_duplicates(database: Path) -> dict[str, int]:
    """Reader5 in three letter cases (one of them unsubscribed, with journal rows on
    two), Bob in two (bounced, complained), and Ann; returns the row ids by name."""
    db = schema_2_database(database)
    first = insert(db, "Reader5@Example.org")
    second = insert(db, "reader5@example.org", name="Reader Five", tier="paid", tags="vip")
    mark(db, second, "unsubscribed", T3, "unsubscribe link in issue-1")
    shouting = insert(db, "READER5@EXAMPLE.ORG", name="Shouting", at=T2)
    ann = insert(db, "ann@example.org", name="Ann")
    bob = insert(db, "Bob@example.org")
    mark(db, bob, "bounced", T2, "550 5.1.1 no such user")
    mark(db, insert(db, "bob@example.org"), "complained", T3, "abuse report")
    deliver(db, "issue-1", first, "failed", T2)
    deliver(db, "issue-1", second, "sent", T1)  # older, but sent: kept
    deliver(db, "issue-1", ann, "sent", T1)
    deliver(db, "issue-2", shouting, "deferred", T3)
    db.close()
    return {"first": first, "ann": ann}


def test_an_old_list_with_case_duplicates_is_merged_once_keeping_unsubscribes_and_history(
    config: Config, config_path: Path
) -> None:
    database = config.subscribers.database
    ids = old_list_with_case_duplicates(database)
    with sqlite3.connect(database) as db:
        history_before = db.execute("SELECT count(*) FROM status_changes").fetchone()[0]

    opened = newsletter("subscribers", "list", config_path=config_path)
    assert opened.returncode == 0, opened.stderr
    assert opened.stderr.splitlines() == [
        f"{database}: {REPORT}",
        "3 subscribers: 1 active, 1 unsubscribed, 0 bounced, 1 complained",
    ]
    assert opened.stdout.splitlines() == [
        "Reader5@Example.org\tReader Five\tpaid\tunsubscribed\tvip",
        "ann@example.org\tAnn\tfree\tactive\t",
        "Bob@example.org\t\tfree\tcomplained\t",
    ]
    reopened = newsletter("subscribers", "list", config_path=config_path)
    assert "merged" not in reopened.stderr

    with open_store(config.subscribers) as store:
        reader = store.get("reader5@example.org")
        assert store.get("bob@example.org") is not None
    first = ids["first"]
    assert reader is not None and reader.id == first
    assert (reader.status, reader.status_reason) == ("unsubscribed", "unsubscribe link in issue-1")
    assert reader.status_changed_at.isoformat() == T3
    with sqlite3.connect(database) as db:
        history = db.execute(
            "SELECT status, reason FROM status_changes WHERE subscriber_id = ? ORDER BY id",
            (first,),
        ).fetchall()
        history_after = db.execute("SELECT count(*) FROM status_changes").fetchone()[0]
        deliveries = db.execute(
            "SELECT issue, subscriber_id, state FROM deliveries ORDER BY issue, subscriber_id"
        ).fetchall()
    assert history == [
        ("active", "imported"),
        ("active", "imported"),
        ("unsubscribed", "unsubscribe link in issue-1"),
        ("active", "imported"),
    ]
    assert history_after == history_before, "every change kept, none made up"
    assert deliveries == [
        ("issue-1", first, "sent"),
        ("issue-1", ids["ann"], "sent"),
        ("issue-2", first, "deferred"),
    ]


def test_the_merge_is_reported_by_whichever_command_opens_the_list_first(
    config: Config, run_cli: Callable[..., Result]
) -> None:
    old_list_with_case_duplicates(config.subscribers.database)
    first = run_cli("status", EXAMPLE_MD)
    assert first.exit_code == 0, first.output
    assert first.stderr.splitlines() == [f"{config.subscribers.database}: {REPORT}"]
    assert "merged" not in run_cli("status", EXAMPLE_MD).stderr
