"""Importing and exporting the subscriber CSV against a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest

from composer.errors import SubscriberFileError
from composer.store import SubscriberStore
from composer.store.csvio import RejectedRow, export_csv, import_csv
from composer.store.membership import remove_subscriber
from composer.store.sqlite import SqliteSubscriberStore
from tests.conftest import write_csv

MIXED = """\
email,name,tier,tags
ann@example.com,Ann,paid,early;vip
not-an-address,Nobody,free,
bob@example.org,Bob,gold,
carol@example.net,"Carol, C",,
ann@EXAMPLE.COM,Ann again,free,
,No Address,,
dave@example.com,Dave,FREE,
"""


def test_bad_rows_are_reported_by_line_and_good_rows_are_imported(
    tmp_path: Path, store: SubscriberStore
) -> None:
    report = import_csv(write_csv(tmp_path / "list.csv", MIXED), store)
    assert [(row.line, row.value) for row in report.rejected] == [
        (3, "not-an-address"),
        (4, "gold"),
        (7, ""),
    ]
    assert "@-sign" in report.rejected[0].reason
    assert "bob@example.org" in report.rejected[1].reason
    assert [s.email for s in store.iter_all()] == [
        "ann@example.com",
        "carol@example.net",
        "dave@example.com",
    ]
    assert report.counts.added == 3


def test_duplicates_in_the_file_are_folded_into_the_first_row(
    tmp_path: Path, store: SubscriberStore
) -> None:
    report = import_csv(write_csv(tmp_path / "list.csv", MIXED), store)
    assert report.counts.duplicates == 1
    ann = store.get("ann@example.com")
    assert ann is not None
    assert (ann.name, ann.tier, ann.tags) == ("Ann", "paid", ("early", "vip"))


def test_addresses_already_in_the_store_are_updated_not_duplicated(
    tmp_path: Path, store: SubscriberStore
) -> None:
    import_csv(write_csv(tmp_path / "a.csv", "email,name\nann@example.com,Ann\n"), store)
    report = import_csv(
        write_csv(tmp_path / "b.csv", "email,tier\nann@Example.com,paid\nbob@example.com,\n"),
        store,
    )
    assert (report.counts.added, report.counts.updated) == (1, 1)
    ann = store.get("ann@example.com")
    assert ann is not None
    assert (ann.name, ann.tier) == ("Ann", "paid")


def test_removed_address_stays_unsubscribed_when_the_file_is_imported_again(
    tmp_path: Path, store: SubscriberStore
) -> None:
    path = write_csv(tmp_path / "list.csv", MIXED)
    import_csv(path, store)
    remove_subscriber(store, "ann@example.com")
    store.mark_status("dave@example.com", "bounced", "550 mailbox unknown")
    report = import_csv(path, store)
    assert report.counts.kept_inactive == 2
    statuses = {s.email: s.status for s in store.iter_all()}
    assert statuses == {
        "ann@example.com": "unsubscribed",
        "carol@example.net": "active",
        "dave@example.com": "bounced",
    }


def test_export_round_trips_through_a_fresh_database(tmp_path: Path) -> None:
    with SqliteSubscriberStore(tmp_path / "one.db") as first:
        import_csv(write_csv(tmp_path / "list.csv", MIXED), first)
        remove_subscriber(first, "carol@example.net")
        export_csv(first, tmp_path / "one.csv")
    with SqliteSubscriberStore(tmp_path / "two.db") as second:
        report = import_csv(tmp_path / "one.csv", second)
        assert report.rejected == () and report.ignored_columns == ()
        export_csv(second, tmp_path / "two.csv")
        carol = second.get("carol@example.net")
    assert (tmp_path / "two.csv").read_text() == (tmp_path / "one.csv").read_text()
    assert carol is not None and carol.status == "unsubscribed"


def test_unknown_columns_are_named_and_ignored(tmp_path: Path, store: SubscriberStore) -> None:
    report = import_csv(write_csv(tmp_path / "l.csv", "Email,Teir\nann@example.com,paid\n"), store)
    assert report.ignored_columns == ("teir",)
    assert report.counts.added == 1


def test_a_row_with_more_values_than_columns_is_rejected(
    tmp_path: Path, store: SubscriberStore
) -> None:
    report = import_csv(write_csv(tmp_path / "l.csv", "email,name\nann@example.com,Ann,B\n"), store)
    assert report.rejected == (
        RejectedRow(
            2,
            "ann@example.com,Ann,B",
            "3 values but the header names 2 columns;"
            " put values that contain commas in double quotes",
        ),
    )


def test_a_byte_order_mark_from_excel_is_accepted(tmp_path: Path, store: SubscriberStore) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffemail\r\nann@example.com\r\n".encode())
    assert import_csv(path, store).counts.added == 1


def test_a_non_utf8_file_is_refused_before_anything_is_imported(
    tmp_path: Path, store: SubscriberStore
) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(
        "email,name\nann@example.com,Ann\nbob@example.com,Jos\u00e9\n".encode("latin-1")
    )
    with pytest.raises(SubscriberFileError, match=r"latin1.csv:3: not UTF-8"):
        import_csv(path, store)
    assert list(store.iter_all()) == []


def test_a_file_without_an_email_column_is_refused(tmp_path: Path, store: SubscriberStore) -> None:
    with pytest.raises(SubscriberFileError, match=r"l.csv:1: no `email` column .*found: name"):
        import_csv(write_csv(tmp_path / "l.csv", "name,tier\nAnn,paid\n"), store)
