"""The subscriber list and the delivery record in a PostgreSQL database, for a list
that several machines use at once (psycopg 3, the optional extra
``newsletter[postgresql]``). Module for module the twin of :mod:`composer.store.sqlite`:

    database.py     connections (a pool per database), the schema (MIGRATIONS, steps
                    under an advisory lock), write_transaction, psycopg's errors translated
    rows.py         a subscribers row read as a Subscriber, and the bounce the journal writes
    subscribers.py  the list: PostgresSubscriberStore
    deliveries.py   each issue's delivery record and dispatch lock: PostgresDispatchJournal
    schedules.py    the scheduled dispatches: PostgresScheduleBook
    feedback.py     bounces and complaints, by the rules of composer.store.feedback
    tables.py       whole tables read and written, for a copy between stores

Only :func:`composer.store.open_store` picks this backend; nothing above ``store/``
imports it.
"""

from composer.store.postgresql.database import MIGRATIONS
from composer.store.postgresql.deliveries import PostgresDispatchJournal
from composer.store.postgresql.subscribers import PostgresSubscriberStore

__all__ = ["MIGRATIONS", "PostgresDispatchJournal", "PostgresSubscriberStore"]
