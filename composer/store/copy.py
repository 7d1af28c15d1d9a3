"""Moving a list between stores: ``newsletter db copy --to URL_OR_PATH``.

Every table of :data:`~composer.store.tables.TABLES` (subscribers, their status
history, the dispatches and every delivery, the schedules, the bounces and complaints
recorded, the suppressions erasures left, and the queue of confirmations and
welcomes) is read from the source a batch at a
time and added to the destination, each batch in a transaction of its own, so a
million rows take flat memory and a copy cut short resumes where it was. Rows keep
their ids, so the history and the deliveries still point at their subscribers, and
a row whose key the destination holds already is left as it is: copying again
changes nothing. At the end the rows of each table are counted on both sides; any
difference is an error.

A copy is of a list at rest: stop ``send`` and ``serve`` on the source first, since
what they write during the copy may or may not be in it. Dispatch locks are not
copied; they belong to the processes that use the source.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from composer.errors import StoreError
from composer.store import SubscriberStore
from composer.store.tables import NOT_COPIED, TABLES

BATCH_SIZE = 5000


@dataclass(frozen=True, kw_only=True)
class TableCount:
    """How many rows one table holds on each side after a copy."""

    table: str
    source: int
    destination: int


def copy_store(
    source: SubscriberStore,
    destination: SubscriberStore,
    *,
    source_name: str,
    destination_name: str,
    batch_size: int = BATCH_SIZE,
    progress: Callable[[str, int], None] | None = None,
) -> list[TableCount]:
    """Copy every table of ``source`` into ``destination`` (``progress`` is told the table
    and how many of its rows have been read, after each batch); the counts of each table
    on both sides, or :class:`StoreError` naming the tables whose counts differ."""
    unknown = sorted(source.table_names() - {table.name for table in TABLES} - NOT_COPIED)
    if unknown:
        raise StoreError(
            f"{source_name}: holds tables this release does not know how to copy"
            f" ({', '.join(unknown)}); copy it with the release that created them"
        )
    for table in TABLES:
        read = 0
        for rows in source.table_rows(table, batch_size=batch_size):
            destination.put_rows(table, rows)
            read += len(rows)
            if progress is not None:
                progress(table.name, read)
    counts = [
        TableCount(
            table=table.name,
            source=source.count_rows(table),
            destination=destination.count_rows(table),
        )
        for table in TABLES
    ]
    differ = [count for count in counts if count.source != count.destination]
    if differ:
        listed = "; ".join(
            f"{count.table}: {count.source:,} in the source, {count.destination:,} here"
            for count in differ
        )
        raise StoreError(
            f"{destination_name}: the copy does not match its source ({listed}): copy into"
            " an empty database, or one copied from this same source before"
        )
    return counts
