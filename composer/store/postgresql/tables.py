"""Whole tables of the PostgreSQL store, read and written for a copy between stores
(:mod:`composer.store.copy`): rows in the form :mod:`composer.store.tables` gives."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from composer.store.postgresql.database import Connection, errors_translated, write_transaction
from composer.store.tables import Table, differing, other_rows


class TableRows:
    """The copy's side of :class:`~composer.store.postgresql.PostgresSubscriberStore`."""

    url: str
    _db: Connection

    def table_names(self) -> set[str]:
        """The tables the database holds."""
        with errors_translated(self.url):
            rows = self._db.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            ).fetchall()
        return {name for (name,) in rows}

    def count_rows(self, table: Table) -> int:
        """How many rows ``table`` holds."""
        with errors_translated(self.url):
            row = self._db.execute(f"SELECT count(*) FROM {table.name}").fetchone()
        return int(row[0]) if row else 0

    def table_rows(self, table: Table, *, batch_size: int) -> Iterator[list[tuple[Any, ...]]]:
        """Every row of ``table`` in the order of its key, ``batch_size`` at a time."""
        columns, key = ", ".join(table.columns), ", ".join(table.key)
        after = f"({key}) > ({', '.join('%s' for _ in table.key)})"
        width = len(table.key)
        last: tuple[Any, ...] | None = None
        while True:
            where = f"WHERE {after}" if last is not None else ""
            query = f"SELECT {columns} FROM {table.name} {where} ORDER BY {key} LIMIT %s"
            with errors_translated(self.url):
                rows = self._db.execute(query, (*(last or ()), batch_size)).fetchall()
            if rows:
                yield rows
            if len(rows) < batch_size:
                return
            last = rows[-1][:width]

    def put_rows(self, table: Table, rows: list[tuple[Any, ...]]) -> None:
        """Add ``rows`` to ``table`` in one transaction, leaving any row whose key is
        there already as it is; the table's own triggers (the status history) stay
        off, since the rows copied bring their history with them."""
        columns = ", ".join(table.columns)
        with write_transaction(self._db, self.url, "this batch was not copied"):
            self._db.execute(f"ALTER TABLE {table.name} DISABLE TRIGGER USER")
            self._db.execute(f"CREATE TEMP TABLE copy_in (LIKE {table.name}) ON COMMIT DROP")
            # COPY is the fastest way in; the INSERT then skips rows already there.
            with self._db.cursor().copy(f"COPY copy_in ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            same_key = " AND ".join(f"c.{column} = t.{column}" for column in table.key)
            found = self._db.execute(
                f"SELECT count(*) FROM copy_in AS c JOIN {table.name} AS t ON {same_key}"
                f" WHERE {differing(table, 'IS DISTINCT FROM')}"
            ).fetchone()
            if found and found[0]:
                raise other_rows(self.url, table, found[0])
            self._db.execute(
                f"INSERT INTO {table.name} ({columns}) SELECT {columns} FROM copy_in"
                f" ON CONFLICT ({', '.join(table.key)}) DO NOTHING"
            )
            self._db.execute(f"ALTER TABLE {table.name} ENABLE TRIGGER USER")
            if table.key == ("id",):
                # Rows written with their own ids: new ones must be numbered after them.
                self._db.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'),"
                    f" (SELECT max(id) FROM {table.name}))"
                )
