"""The subscriber store: forward-only statuses, history, batched reads, against each
backend; and the SQLite file's own schema and settings."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from composer.errors import StoreError
from composer.store import NewSubscriber, SubscriberStore, address_key
from composer.store.sqlite import MIGRATIONS, SqliteSubscriberStore
from tests.conftest import both_backends, raw_sql


def new(email: str, **fields: object) -> NewSubscriber:
    return NewSubscriber(email=email, key=address_key(email), **fields)  # type: ignore[arg-type]


def test_database_is_created_in_wal_mode_at_the_latest_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "subscribers.db"
    SqliteSubscriberStore(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_every_commit_reaches_the_disk_so_a_power_cut_loses_no_unsubscribe(
    tmp_path: Path,
) -> None:
    with SqliteSubscriberStore(tmp_path / "subscribers.db") as store:
        # 2 is FULL: in WAL mode NORMAL leaves the last commits unsynced until a checkpoint.
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_database_from_a_newer_release_is_refused_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "subscribers.db"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(StoreError, match="newer release"):
        SqliteSubscriberStore(path)


def test_a_file_that_is_not_sqlite_is_refused_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "subscribers.db"
    path.write_text("email\nann@example.com\n" * 100)
    with pytest.raises(StoreError, match="not a usable subscriber database"):
        SqliteSubscriberStore(path)


@both_backends
def test_unsubscribed_address_is_not_reactivated_by_a_plain_save(store: SubscriberStore) -> None:
    store.save(new("ann@example.com"))
    store.mark_status("ann@example.com", "unsubscribed", "asked")
    subscriber, change = store.save(new("ann@example.com", name="Ann"))
    assert change == "kept_inactive"
    assert (subscriber.status, subscriber.name) == ("unsubscribed", "")


@both_backends
def test_resubscribe_reactivates_and_records_why(store: SubscriberStore) -> None:
    store.save(new("ann@example.com"))
    store.mark_status("ann@example.com", "bounced", "550 no such user")
    subscriber, change = store.save(new("ann@example.com"), resubscribe=True, reason="came back")
    assert change == "resubscribed"
    assert (subscriber.status, subscriber.status_reason) == ("active", "came back")


@both_backends
def test_every_status_change_is_kept_in_the_history(store: SubscriberStore) -> None:
    store.save(new("ann@example.com"), reason="signed up")
    store.mark_status("ann@example.com", "unsubscribed", "asked")
    store.mark_status("ann@example.com", "unsubscribed", "asked twice")
    store.save(new("ann@example.com"), resubscribe=True, reason="came back")
    history = raw_sql(store, "SELECT status, reason FROM status_changes ORDER BY id")
    assert history == [("active", "signed up"), ("unsubscribed", "asked"), ("active", "came back")]


@both_backends
def test_mark_status_of_an_unknown_address_returns_none(store: SubscriberStore) -> None:
    assert store.mark_status("nobody@example.com", "complained", "abuse report") is None


@both_backends
def test_mark_status_cannot_resubscribe(store: SubscriberStore) -> None:
    store.save(new("ann@example.com"))
    with pytest.raises(ValueError, match="resubscribe"):
        store.mark_status("ann@example.com", "active", "oops")  # type: ignore[arg-type]


@both_backends
def test_omitted_fields_keep_the_existing_values(store: SubscriberStore) -> None:
    store.save(new("ann@example.com", name="Ann", tier="paid", tags=("vip",)))
    subscriber, change = store.save(new("ann@EXAMPLE.com"))
    assert change == "unchanged"
    assert (subscriber.name, subscriber.tier, subscriber.tags) == ("Ann", "paid", ("vip",))
    assert subscriber.email == "ann@example.com"


@both_backends
def test_iter_active_pages_through_one_segment_in_insertion_order(
    store: SubscriberStore,
) -> None:
    store.import_many(
        new(f"user{n}@example.com", tier="paid" if n % 3 == 0 else "free") for n in range(25)
    )
    store.mark_status("user3@example.com", "unsubscribed", "asked")
    paid = [s.email for s in store.iter_active("paid", batch_size=2)]
    assert paid == [f"user{n}@example.com" for n in range(0, 25, 3) if n != 3]
    assert store.count_active("paid") == len(paid)
    assert len(list(store.iter_active("all", batch_size=4))) == 24 == store.count_active()
    assert store.count_by_status() == {
        "pending": 0,
        "active": 24,
        "unsubscribed": 1,
        "bounced": 0,
        "complained": 0,
    }


@both_backends
def test_import_many_folds_duplicates_across_batches(store: SubscriberStore) -> None:
    rows = [new(f"user{n % 7}@example.com") for n in range(20)]
    counts = store.import_many(rows, batch_size=3)
    assert (counts.added, counts.duplicates) == (7, 13)
    again = store.import_many(rows, batch_size=3)
    assert (again.added, again.unchanged, again.duplicates) == (0, 7, 13)
