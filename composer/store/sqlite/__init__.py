"""The shipped store: the subscriber list and the delivery record in one SQLite file.

    database.py     every connection's settings, the schema (MIGRATIONS), write_transaction
    rows.py         a subscribers row read as a Subscriber, and the bounce the journal writes
    subscribers.py  the list: SqliteSubscriberStore
    deliveries.py   each issue's delivery record and dispatch lock: SqliteDispatchJournal
    schedules.py    the scheduled dispatches: SqliteScheduleBook
    case_duplicates.py  the migration merging rows whose addresses differ only in case
    tables.py       whole tables read and written, for a copy between stores

Only :func:`composer.store.open_store` picks this backend; nothing above ``store/``
imports it.
"""

from composer.store.sqlite.database import MIGRATIONS
from composer.store.sqlite.deliveries import SqliteDispatchJournal
from composer.store.sqlite.subscribers import SqliteSubscriberStore

__all__ = ["MIGRATIONS", "SqliteDispatchJournal", "SqliteSubscriberStore"]
