"""Whole tables of the SQLite store, read and written for a copy between stores
(:mod:`composer.store.copy`): rows in the form :mod:`composer.store.tables` gives, a
moment as an aware ``datetime`` and a flag as a ``bool``."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from composer.store.sqlite.database import moment_text, write_transaction
from composer.store.tables import Table


class TableRows:
    """The copy's side of :class:`~composer.store.sqlite.SqliteSubscriberStore`."""

    path: Path
    _db: sqlite3.Connection

    def table_names(self) -> set[str]:
        """The tables the file holds (SQLite's own left out)."""
        rows = self._db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        ).fetchall()
        return {name for (name,) in rows}

    def count_rows(self, table: Table) -> int:
        """How many rows ``table`` holds."""
        return int(self._db.execute(f"SELECT count(*) FROM {table.name}").fetchone()[0])

    def table_rows(self, table: Table, *, batch_size: int) -> Iterator[list[tuple[Any, ...]]]:
        """Every row of ``table`` in the order of its key, ``batch_size`` at a time."""
        columns, key = ", ".join(table.columns), ", ".join(table.key)
        after = f"({key}) > ({', '.join('?' for _ in table.key)})"
        moments = [n for n, column in enumerate(table.columns) if column in table.moments]
        flags = [n for n, column in enumerate(table.columns) if column in table.flags]
        width = len(table.key)
        last: tuple[Any, ...] | None = None
        while True:
            where = f"WHERE {after}" if last is not None else ""
            query = f"SELECT {columns} FROM {table.name} {where} ORDER BY {key} LIMIT ?"
            rows = self._db.execute(query, (*(last or ()), batch_size)).fetchall()
            if rows:
                yield [_canonical(row, moments, flags) for row in rows]
            if len(rows) < batch_size:
                return
            last = rows[-1][:width]

    def put_rows(self, table: Table, rows: list[tuple[Any, ...]]) -> None:
        """Add ``rows`` to ``table`` in one transaction, leaving any row whose key is
        there already as it is; the table's own triggers (the status history) are
        dropped for the batch and put back, since the rows copied bring their history
        with them."""
        moments = [n for n, column in enumerate(table.columns) if column in table.moments]
        flags = [n for n, column in enumerate(table.columns) if column in table.flags]
        marks = ", ".join("?" for _ in table.columns)
        with write_transaction(self._db, self.path, "this batch was not copied"):
            triggers = self._db.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?",
                (table.name,),
            ).fetchall()
            for name, _ in triggers:
                self._db.execute(f"DROP TRIGGER {name}")
            self._db.executemany(
                f"INSERT OR IGNORE INTO {table.name} ({', '.join(table.columns)}) VALUES ({marks})",
                (_stored(row, moments, flags) for row in rows),
            )
            for _, sql in triggers:
                self._db.execute(sql)


def _canonical(row: tuple[Any, ...], moments: list[int], flags: list[int]) -> tuple[Any, ...]:
    values = list(row)
    for n in moments:
        if values[n] is not None:
            moment = dt.datetime.fromisoformat(values[n])
            values[n] = moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    for n in flags:
        values[n] = bool(values[n])
    return tuple(values)


def _stored(row: tuple[Any, ...], moments: list[int], flags: list[int]) -> tuple[Any, ...]:
    values = list(row)
    for n in moments:
        if values[n] is not None:
            values[n] = moment_text(values[n])
    for n in flags:
        values[n] = int(values[n])
    return tuple(values)
