"""The subscriber list on a PostgreSQL server: batched writes, keyset-paginated reads.

The twin of :mod:`composer.store.sqlite.subscribers`, method for method. Connections,
the schema and error translation are :mod:`composer.store.postgresql.database`'s;
the delivery record of each issue is :mod:`composer.store.postgresql.deliveries`'.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast, get_args

from composer.store import (
    STATUSES,
    Change,
    ImportCounts,
    InactiveStatus,
    NewSubscriber,
    Segment,
    Status,
    Subscriber,
    classify,
    segment_tiers,
    suppressed_address,
)
from composer.store.deliveries import MAY_HAVE_ARRIVED, DispatchedIssue
from composer.store.mailqueue import MailOutcome, NewMail, QueuedMail
from composer.store.personal import PersonalData, StatusChange, suppression_digest
from composer.store.postgresql import mailqueue
from composer.store.postgresql.database import (
    POOLS,
    errors_translated,
    moment,
    now,
    write_transaction,
)
from composer.store.postgresql.deliveries import (
    PostgresDispatchJournal,
    _delivery,
    find_delivery,
    find_dispatches,
)
from composer.store.postgresql.feedback import feedback_counts, recent_feedback, record_feedback
from composer.store.postgresql.rows import subscriber_from_row
from composer.store.postgresql.schedules import PostgresScheduleBook
from composer.store.postgresql.tables import TableRows
from composer.store.signups import (
    Confirmation,
    Signup,
    SignupResult,
    plan_confirmation,
    plan_signup,
)
from composer.store.tables import (
    DELIVERY_COLUMNS,
    SUBSCRIBER_SELECT,
    Step,
    import_steps,
    subscriber_writes,
)

if TYPE_CHECKING:
    from composer.store.deliveries import DispatchRecord, IssueIdentity, TracedDelivery
    from composer.store.feedback import Feedback, FeedbackCounts, FeedbackRecord, FeedbackResult

_INSERT = (
    "INSERT INTO subscribers (email, key, name, tier, tags, status, status_changed_at,"
    " status_reason, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_UPDATE = (
    "UPDATE subscribers SET name = %s, tier = %s, tags = %s, status = %s,"
    " status_changed_at = %s, status_reason = %s WHERE key = %s"
)
MAX_BATCH = 10_000
# Saves and import batches take it, one at a time as in SQLite, so that two processes
# adding the same new address never both find it missing; "nl" and "list" in ASCII.
LIST_LOCK = (0x6E6C, 0x6C697374)


class PostgresSubscriberStore(TableRows):
    """:class:`composer.store.SubscriberStore` on the PostgreSQL database at ``url``
    (no password in it: it is read from the environment variable ``password_env``),
    created on first use. Its connection comes from the process's pool."""

    def __init__(self, url: str, password_env: str) -> None:
        self.url = url
        self.password_env = password_env
        self._db = POOLS.take(url, password_env)

    def __enter__(self) -> PostgresSubscriberStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Give the connection back to the pool."""
        POOLS.give(self.url, self.password_env, self._db)

    def get(self, key: str) -> Subscriber | None:
        """The subscriber with normalised address ``key``, or None."""
        with errors_translated(self.url):
            row = self._db.execute(
                f"SELECT {SUBSCRIBER_SELECT} FROM subscribers WHERE key = %s", (key,)
            ).fetchone()
        return subscriber_from_row(row) if row else None

    def save(
        self, new: NewSubscriber, *, resubscribe: bool = False, reason: str = ""
    ) -> tuple[Subscriber, Change]:
        """Add or update one subscriber by the rules in :mod:`composer.store`."""
        with write_transaction(self._db, self.url):
            self._db.execute("SELECT pg_advisory_xact_lock(%s, %s)", LIST_LOCK)
            old = self.get(new.key)
            if old is None and self._suppressed([new.key]):
                raise suppressed_address(new.email)
            change = classify(old, new, resubscribe=resubscribe)
            self._apply([(old, new, change)], reason or new.status_reason)
        saved = self.get(new.key)
        assert saved is not None
        return saved, change

    def import_many(self, rows: Iterable[NewSubscriber], *, batch_size: int = 1000) -> ImportCounts:
        """Save a stream of rows in batched transactions, folding repeated addresses."""
        batch_size = max(1, min(batch_size, MAX_BATCH))
        with errors_translated(self.url):
            # Addresses already seen in this import live in a temporary table, not a
            # Python set, so memory stays flat however long the file is.
            self._db.execute("CREATE TEMP TABLE IF NOT EXISTS import_seen (key TEXT PRIMARY KEY)")
            self._db.execute("TRUNCATE import_seen")
        counts = dict.fromkeys(
            ("added", "updated", "unchanged", "kept_inactive", "duplicates", "suppressed"), 0
        )
        saved = 0
        stream = iter(rows)
        while batch := list(islice(stream, batch_size)):
            outcome = (
                f"the import stopped: {saved:,} rows were saved and the rest were not;"
                " import the same file again once it has finished (the saved rows count"
                " as unchanged)"
            )
            with write_transaction(self._db, self.url, outcome):
                self._db.execute("SELECT pg_advisory_xact_lock(%s, %s)", LIST_LOCK)
                self._import_batch(batch, counts)
            saved += len(batch)
        with errors_translated(self.url):
            self._db.execute("TRUNCATE import_seen")
        return ImportCounts(**counts)

    def _import_batch(self, batch: list[NewSubscriber], counts: dict[str, int]) -> None:
        """Save one batch of an import inside the caller's transaction, adding what each
        row did to ``counts``."""
        keys = list({row.key: None for row in batch})
        seen = {
            key
            for (key,) in self._db.execute(
                "SELECT key FROM import_seen WHERE key = ANY(%s)", (keys,)
            )
        }
        fresh: dict[str, NewSubscriber] = {}
        for row in batch:
            if row.key in seen or row.key in fresh:
                counts["duplicates"] += 1
            else:
                fresh[row.key] = row
        with self._db.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO import_seen (key) VALUES (%s)", [(key,) for key in fresh]
            )
        existing = {
            row[2]: subscriber_from_row(row)
            for row in self._db.execute(
                f"SELECT {SUBSCRIBER_SELECT} FROM subscribers WHERE key = ANY(%s)",
                (keys,),
            )
        }
        suppressed = self._suppressed([key for key in fresh if key not in existing])
        self._apply(import_steps(fresh, existing, suppressed, counts), "imported")

    def _apply(self, steps: Iterable[Step], reason: str) -> None:
        inserts, updates = subscriber_writes(steps, reason, now(), moment)
        with self._db.cursor() as cursor:
            if inserts:
                cursor.executemany(_INSERT, inserts)
            if updates:
                cursor.executemany(_UPDATE, updates)

    def mark_status(self, key: str, status: InactiveStatus, reason: str) -> Subscriber | None:
        """Record an unsubscribe, bounce or complaint; None when ``key`` is unknown."""
        if status not in get_args(InactiveStatus):
            raise ValueError(f"mark_status cannot set {status!r}; resubscribe with save()")
        with write_transaction(self._db, self.url):
            self._db.execute(
                "UPDATE subscribers SET status = %s, status_changed_at = %s,"
                " status_reason = %s WHERE key = %s AND status != %s",
                (status, now(), reason, key, status),
            )
        return self.get(key)

    def rename(self, key: str, name: str) -> Subscriber | None:
        """Set the name of subscriber ``key``; None when ``key`` is unknown."""
        with write_transaction(self._db, self.url):
            self._db.execute("UPDATE subscribers SET name = %s WHERE key = %s", (name, key))
        return self.get(key)

    def personal_data(self, key: str) -> PersonalData | None:
        """Everything held about subscriber ``key``, or None when ``key`` is unknown."""
        # One snapshot for the row, its history and its deliveries.
        with errors_translated(self.url), self._db.transaction():
            self._db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            subscriber = self.get(key)
            if subscriber is None:
                return None
            history = tuple(
                StatusChange(status=cast(Status, status), changed_at=changed_at, reason=reason)
                for status, changed_at, reason in self._db.execute(
                    "SELECT status, changed_at, reason FROM status_changes"
                    " WHERE subscriber_id = %s ORDER BY id",
                    (subscriber.id,),
                )
            )
            deliveries = tuple(
                _delivery(row)
                for row in self._db.execute(
                    f"SELECT {', '.join(DELIVERY_COLUMNS)} FROM deliveries"
                    " WHERE subscriber_id = %s ORDER BY updated_at, issue",
                    (subscriber.id,),
                )
            )
        return PersonalData(subscriber=subscriber, history=history, deliveries=deliveries)

    def erase(self, key: str) -> bool:
        """Delete subscriber ``key``, their history, deliveries, the bounces and complaints
        matched to them and their confirmations and welcomes, and suppress the address.
        PostgreSQL marks the
        deleted rows dead and leaves their bytes in the table files until vacuum reuses
        the space, and in the write-ahead log and backups until those are rotated: the
        README says what an operator does about it."""
        with write_transaction(self._db, self.url):
            # Under the list's lock: a save or an import of this address waits, then
            # finds it suppressed.
            self._db.execute("SELECT pg_advisory_xact_lock(%s, %s)", LIST_LOCK)
            row = self._db.execute(
                "SELECT id FROM subscribers WHERE key = %s FOR UPDATE", (key,)
            ).fetchone()
            if row is None:
                return False
            for table, column in (
                ("feedback", "subscriber_id"),
                ("deliveries", "subscriber_id"),
                ("status_changes", "subscriber_id"),
                ("subscribers", "id"),
            ):
                self._db.execute(f"DELETE FROM {table} WHERE {column} = %s", (row[0],))
            # The queue holds the address and name too; with it goes the one-a-day
            # confirmation limit, so the person may sign up again at once.
            self._db.execute("DELETE FROM mail_queue WHERE key = %s", (key,))
            self._db.execute(
                "INSERT INTO suppressions (digest, created_at) VALUES (%s, %s)"
                " ON CONFLICT (digest) DO NOTHING",
                (suppression_digest(key), now()),
            )
        return True

    def is_suppressed(self, key: str) -> bool:
        """Whether address key ``key`` belongs to an erased reader."""
        with errors_translated(self.url):
            return bool(self._suppressed([key]))

    def _suppressed(self, keys: list[str]) -> set[str]:
        """Those of ``keys`` whose address is suppressed."""
        digests = {suppression_digest(key): key for key in keys}
        if not digests:
            return set()
        return {
            digests[digest]
            for (digest,) in self._db.execute(
                "SELECT digest FROM suppressions WHERE digest = ANY(%s)", (list(digests),)
            )
        }

    def sign_up(self, signups: Sequence[Signup], *, double_opt_in: bool) -> list[SignupResult]:
        """Record each signup by :func:`plan_signup` with the mail it calls for, in one
        transaction."""
        results = []
        with write_transaction(self._db, self.url):
            # Under the list's lock, as a save: two signups of one new address (on two
            # machines) never both add it, nor both find no confirmation sent yet.
            self._db.execute("SELECT pg_advisory_xact_lock(%s, %s)", LIST_LOCK)
            stamp = dt.datetime.now(dt.UTC)
            for signup in signups:
                old = self.get(signup.key)
                plan = plan_signup(
                    old,
                    double_opt_in=double_opt_in,
                    last_confirmation=mailqueue.last_confirmation(self._db, signup.key),
                    now=stamp,
                    suppressed=old is None and bool(self._suppressed([signup.key])),
                )
                if plan.status is not None:
                    new = NewSubscriber(
                        email=signup.email,
                        key=signup.key,
                        name=signup.name or None,
                        status=plan.status,
                    )
                    self._apply([(old, new, "updated" if old else "added")], "signed up")
                if plan.mail is not None:
                    name = old.name if old and old.name else signup.name
                    tier = old.tier if old else "free"
                    email = old.email if old else signup.email
                    mail = NewMail(
                        kind=plan.mail, key=signup.key, email=email, name=name, tier=tier
                    )
                    mailqueue.enqueue(self._db, [mail])
                results.append(SignupResult(key=signup.key, action=plan.action))
        return results

    def confirm(self, confirmation: Confirmation) -> tuple[Subscriber, bool]:
        """Make the reader of a verified confirmation link active and queue their welcome."""
        key = confirmation.key
        with write_transaction(self._db, self.url):
            self._db.execute("SELECT pg_advisory_xact_lock(%s, %s)", LIST_LOCK)
            old = self.get(key)
            step = plan_confirmation(old)
            if step == "add":
                # The person's own confirmation is the one thing that lifts an erasure.
                self._db.execute(
                    "DELETE FROM suppressions WHERE digest = %s", (suppression_digest(key),)
                )
            if step != "already":
                new = NewSubscriber(email=confirmation.email, key=key, status="active")
                self._apply([(old, new, "added" if old is None else "updated")], "confirmed")
                subscriber = self.get(key)
                assert subscriber is not None
                welcome = NewMail(
                    kind="welcome",
                    key=key,
                    email=subscriber.email,
                    name=subscriber.name,
                    tier=subscriber.tier,
                )
                mailqueue.enqueue(self._db, [welcome])
        confirmed = self.get(key)
        assert confirmed is not None
        return confirmed, step != "already"

    def expire_signups(self, before: dt.datetime) -> int:
        """Delete the pending readers who signed up before ``before``, and the mail
        settled before then."""
        cutoff = moment(before)
        stale = "SELECT id FROM subscribers WHERE status = 'pending' AND status_changed_at < %s"
        with write_transaction(self._db, self.url):
            # Under the list's lock: a confirmation of one of them waits, then adds them.
            self._db.execute("SELECT pg_advisory_xact_lock(%s, %s)", LIST_LOCK)
            # A bounce of their confirmation may have been recorded against them.
            for table in ("feedback", "status_changes"):
                self._db.execute(f"DELETE FROM {table} WHERE subscriber_id IN ({stale})", (cutoff,))
            deleted = self._db.execute(
                "DELETE FROM subscribers WHERE status = 'pending' AND status_changed_at < %s",
                (cutoff,),
            ).rowcount
            mailqueue.prune(self._db, before)
        return deleted

    def due_mail(self, now: dt.datetime, limit: int) -> list[QueuedMail]:
        """Up to ``limit`` queued messages due at ``now``, oldest first."""
        with errors_translated(self.url):
            return mailqueue.due(self._db, now, limit)

    def requeue_interrupted_mail(self) -> int:
        """Queue again every message left ``sending``; how many."""
        with write_transaction(self._db, self.url):
            return mailqueue.requeue_interrupted(self._db)

    def record_mail(self, outcomes: Sequence[MailOutcome]) -> None:
        """Record where each queued message stands now, in one transaction."""
        with write_transaction(self._db, self.url):
            mailqueue.record(self._db, outcomes)

    def iter_all(self, *, batch_size: int = 1000) -> Iterator[Subscriber]:
        """Every subscriber in insertion order, read ``batch_size`` rows at a time."""
        return self._pages("true", (), batch_size)

    def iter_active(
        self, segment: Segment = "all", *, batch_size: int = 1000
    ) -> Iterator[Subscriber]:
        """The active subscribers of ``segment`` in insertion order, in keyset-paginated batches."""
        tiers = list(segment_tiers(segment))
        return self._pages("status = 'active' AND tier = ANY(%s)", (tiers,), batch_size)

    def _pages(self, where: str, params: tuple[Any, ...], batch_size: int) -> Iterator[Subscriber]:
        query = (
            f"SELECT {SUBSCRIBER_SELECT} FROM subscribers WHERE {where} AND id > %s"
            " ORDER BY id LIMIT %s"
        )
        last = 0
        while True:
            # Each page is its own short statement, so a long dispatch never holds a
            # snapshot open and vacuum is never kept waiting by it.
            with errors_translated(self.url):
                rows = self._db.execute(query, (*params, last, batch_size)).fetchall()
            for row in rows:
                yield subscriber_from_row(row)
            if len(rows) < batch_size:
                return
            last = rows[-1][0]

    def count_active(self, segment: Segment = "all") -> int:
        """How many subscribers :meth:`iter_active` would yield now."""
        with errors_translated(self.url):
            row = self._db.execute(
                "SELECT count(*) FROM subscribers WHERE status = 'active' AND tier = ANY(%s)",
                (list(segment_tiers(segment)),),
            ).fetchone()
        return int(row[0]) if row else 0

    def count_by_status(self) -> dict[Status, int]:
        """How many subscribers have each status."""
        counts: dict[Status, int] = dict.fromkeys(STATUSES, 0)
        with errors_translated(self.url):
            for status, count in self._db.execute(
                "SELECT status, count(*) FROM subscribers GROUP BY status"
            ):
                counts[cast(Status, status)] = count
        return counts

    def deliveries(
        self, key: str, identity: IssueIdentity | None = None
    ) -> PostgresDispatchJournal:
        """The delivery record and dispatch lock of the dispatch keyed ``key``, on
        connections of its own."""
        return PostgresDispatchJournal(self.url, self.password_env, key, identity)

    def dispatches(self, issue: IssueIdentity) -> list[DispatchRecord]:
        """Every dispatch recorded under ``issue``'s key, or with its id, content or file name."""
        with errors_translated(self.url):
            return find_dispatches(self._db, issue)

    def find_delivery(self, message_id: str) -> TracedDelivery | None:
        """The delivery whose copy had ``message_id``, with its subscriber, or None."""
        with errors_translated(self.url):
            return find_delivery(self._db, message_id)

    def dispatched_issues(self) -> list[DispatchedIssue]:
        """What every dispatch with a copy that may have arrived recorded of its issue."""
        # EXISTS stops at the first such delivery: counting them would read every
        # delivery of every dispatch on each archive page.
        with errors_translated(self.url):
            rows = self._db.execute(
                "SELECT d.slug, d.issue_id, d.content_digest FROM dispatches AS d WHERE EXISTS"
                " (SELECT 1 FROM deliveries AS x WHERE x.issue = d.issue AND x.state = ANY(%s))",
                (list(MAY_HAVE_ARRIVED),),
            ).fetchall()
        return [DispatchedIssue(slug=s, id=i or "", content=c) for s, i, c in rows]

    def schedules(self) -> PostgresScheduleBook:
        """The scheduled dispatches, on this store's connection."""
        return PostgresScheduleBook(self._db, self.url)

    def record_feedback(self, feedback: Feedback, *, soft_limit: int = 3) -> FeedbackResult:
        """Apply a bounce or complaint in one transaction (:mod:`composer.store.feedback`)."""
        with write_transaction(self._db, self.url):
            return record_feedback(self._db, feedback, soft_limit)

    def record_feedback_batch(
        self, batch: Iterable[Feedback], *, soft_limit: int = 3
    ) -> list[FeedbackResult]:
        """Apply each of ``batch`` in order, in one transaction."""
        with write_transaction(self._db, self.url):
            return [record_feedback(self._db, feedback, soft_limit) for feedback in batch]

    def recent_feedback(self, limit: int = 50) -> list[FeedbackRecord]:
        """The latest ``limit`` bounces and complaints recorded, newest first."""
        with errors_translated(self.url):
            return recent_feedback(self._db, limit)

    def feedback_counts(self, dispatch_key: str) -> FeedbackCounts:
        """The bounces and complaints recorded against the dispatch keyed ``dispatch_key``."""
        with errors_translated(self.url):
            return feedback_counts(self._db, dispatch_key)
