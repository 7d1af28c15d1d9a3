"""The subscriber CSV: import with per-row validation, and export that round-trips.

The file is ``email,name,tier,tags`` with a header row (docs/cli.md); an export adds
``status,status_changed_at,status_reason`` so that importing it into a fresh
database keeps every unsubscribe. A row that fails validation is reported by
line and skipped; only a file that cannot be read at all raises.

A spreadsheet runs a cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a
carriage return as a formula, so an export puts a single quote before such a cell
(OWASP's rule against CSV injection), and before a cell that already starts with a
quote. An import takes that one quote off again wherever it stands before one of
those characters or another quote, so an export imports back exactly as it was.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from composer.errors import AddressRejected, RowRejected, SubscriberFileError
from composer.model import TIERS
from composer.store import STATUSES, ImportCounts, NewSubscriber, SubscriberStore
from composer.store.membership import AddressChecker

if TYPE_CHECKING:
    import _csv

COLUMNS = ("email", "name", "tier", "tags", "status", "status_changed_at", "status_reason")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# The quote an export adds; a cell starting with it gets another, so one can always come off.
_ESCAPE = "'"


@dataclass(frozen=True)
class RejectedRow:
    """A row left out of an import: its line in the file, the offending value and why."""

    line: int
    value: str
    reason: str


@dataclass(frozen=True)
class ImportReport:
    """What an import did; rows in ``rejected`` were skipped, every other row was saved."""

    path: Path
    counts: ImportCounts
    rejected: tuple[RejectedRow, ...]
    ignored_columns: tuple[str, ...]

    def summary(self) -> str:
        """One line saying what happened to every row."""
        counts = self.counts
        suppressed = (
            f" {counts.suppressed} suppressed (their owners had their data deleted),"
            if counts.suppressed
            else ""
        )
        return (
            f"{self.path}: {counts.added} added, {counts.updated} updated,"
            f" {counts.unchanged} unchanged, {counts.kept_inactive} left unsubscribed"
            f" (or bounced), {counts.duplicates} duplicates folded,{suppressed}"
            f" {len(self.rejected)} rejected"
        )


def import_csv(
    path: Path, store: SubscriberStore, *, checker: AddressChecker | None = None
) -> ImportReport:
    """Validate and save every row of the subscriber CSV at ``path``, streaming it."""
    _check_utf8(path)
    checker = checker or AddressChecker()
    rejected: list[RejectedRow] = []
    try:
        with path.open(encoding="utf-8-sig", newline="") as file:
            reader = csv.reader(file)
            header = [name.strip().lower() for name in next(reader, [])]
            if "email" not in header:
                found = ", ".join(name for name in header if name) or "nothing"
                raise SubscriberFileError(
                    path,
                    f"no `email` column in the header row (found: {found});"
                    " the first line must name the columns, like email,name,tier,tags",
                    line=1,
                )
            ignored = tuple(name for name in header if name not in COLUMNS)
            rows = _valid_rows(reader, header, checker, rejected)
            counts = store.import_many(rows)
    except csv.Error as exc:
        raise SubscriberFileError(
            path, f"not readable as CSV ({exc})", line=reader.line_num
        ) from exc
    except OSError as exc:
        raise SubscriberFileError(path, f"cannot read the file ({exc.strerror})") from exc
    return ImportReport(path, counts, tuple(rejected), ignored)


def _valid_rows(
    reader: _csv.Reader,
    header: list[str],
    checker: AddressChecker,
    rejected: list[RejectedRow],
) -> Iterator[NewSubscriber]:
    line = 1
    for cells in reader:
        # A quoted value may span lines; report the line where the row starts.
        start, line = line + 1, reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) > len(header):
            rejected.append(
                RejectedRow(
                    start,
                    ",".join(cells),
                    f"{len(cells)} values but the header names {len(header)} columns;"
                    " put values that contain commas in double quotes",
                )
            )
            continue
        row = dict(zip(header, (_unescaped(cell.strip()) for cell in cells), strict=False))
        try:
            yield _parse_row(row, checker)
        except RowRejected as exc:
            rejected.append(RejectedRow(start, exc.value, exc.reason))


def _parse_row(row: dict[str, str], checker: AddressChecker) -> NewSubscriber:
    email = row.get("email", "")
    if not email:
        raise RowRejected("", "no email address")
    try:
        key = checker.key(email)
    except AddressRejected as exc:
        raise RowRejected(email, exc.reason) from exc
    tier = row.get("tier", "").lower() or None
    if tier is not None and tier not in TIERS:
        raise RowRejected(tier, f"unknown tier for {email}; use free or paid (empty: free)")
    status = row.get("status", "").lower() or "active"
    if status not in STATUSES:
        raise RowRejected(status, f"unknown status for {email}; use {', '.join(STATUSES)}")
    changed_at = None
    if row.get("status_changed_at"):
        try:
            changed_at = dt.datetime.fromisoformat(row["status_changed_at"])
        except ValueError as exc:
            raise RowRejected(
                row["status_changed_at"], f"status_changed_at for {email} is not an ISO 8601 time"
            ) from exc
    tags = tuple(tag.strip() for tag in row.get("tags", "").split(";") if tag.strip())
    return NewSubscriber(
        email=email,
        key=key,
        name=row.get("name") or None,
        tier=tier,
        tags=tags or None,
        status=status,
        status_changed_at=changed_at,
        status_reason=row.get("status_reason", ""),
    )


def _check_utf8(path: Path) -> None:
    # Checked before importing anything, so a bad byte on line 90,000 does not leave
    # the first 89,999 rows imported and the editor unsure what happened.
    try:
        with path.open("rb") as file:
            for number, raw in enumerate(file, start=1):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise SubscriberFileError(
                        path,
                        f"not UTF-8 text (byte 0x{raw[exc.start]:02x});"
                        " save the file as CSV UTF-8 and import it again",
                        line=number,
                    ) from exc
    except FileNotFoundError as exc:
        raise SubscriberFileError(path, "no such file") from exc
    except OSError as exc:
        raise SubscriberFileError(path, f"cannot read the file ({exc.strerror})") from exc


def export_csv(store: SubscriberStore, path: Path) -> int:
    """Write every subscriber, whatever its status, to ``path``; returns how many."""
    count = 0
    try:
        with path.open("w", encoding="utf-8", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(COLUMNS)
            for subscriber in store.iter_all():
                cells = (
                    subscriber.email,
                    subscriber.name,
                    subscriber.tier,
                    ";".join(subscriber.tags),
                    subscriber.status,
                    subscriber.status_changed_at.isoformat(),
                    subscriber.status_reason,
                )
                writer.writerow(_escaped(cell) for cell in cells)
                count += 1
    except OSError as exc:
        raise SubscriberFileError(path, f"cannot write the file ({exc.strerror})") from exc
    return count


def _escaped(cell: str) -> str:
    """``cell`` as an export writes it: never read as a formula by a spreadsheet."""
    return _ESCAPE + cell if cell.startswith((*FORMULA_STARTS, _ESCAPE)) else cell


def _unescaped(cell: str) -> str:
    """``cell`` without the quote :func:`_escaped` puts before it, where it put one."""
    if cell.startswith(_ESCAPE) and cell[1:].startswith((*FORMULA_STARTS, _ESCAPE)):
        return cell[1:]
    return cell
