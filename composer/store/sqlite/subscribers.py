"""The subscriber list in one SQLite file: batched writes, keyset-paginated reads.

The file's connection settings and schema are :mod:`composer.store.sqlite.database`'s;
the delivery record of each issue is :mod:`composer.store.sqlite.deliveries`'.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast, get_args

from composer.errors import StoreError
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
from composer.store.signups import (
    Confirmation,
    Signup,
    SignupResult,
    plan_confirmation,
    plan_signup,
)
from composer.store.sqlite import mailqueue
from composer.store.sqlite.database import (
    busy,
    connect,
    is_busy,
    migrate,
    moment_text,
    now_text,
    unusable,
    write_transaction,
)
from composer.store.sqlite.deliveries import (
    SqliteDispatchJournal,
    deliveries_of,
    find_delivery,
    find_dispatches,
)
from composer.store.sqlite.feedback import feedback_counts, recent_feedback, record_feedback
from composer.store.sqlite.rows import SUBSCRIBER_SELECT, subscriber_from_row
from composer.store.sqlite.schedules import SqliteScheduleBook
from composer.store.sqlite.tables import TableRows
from composer.store.tables import Step, import_steps, subscriber_writes

if TYPE_CHECKING:
    from composer.store.deliveries import DispatchRecord, IssueIdentity, TracedDelivery
    from composer.store.feedback import Feedback, FeedbackCounts, FeedbackRecord, FeedbackResult

_INSERT = (
    "INSERT INTO subscribers (email, key, name, tier, tags, status, status_changed_at,"
    " status_reason, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPDATE = (
    "UPDATE subscribers SET name = ?, tier = ?, tags = ?, status = ?, status_changed_at = ?,"
    " status_reason = ? WHERE key = ?"
)
# Well under SQLite's bound-parameter limit, for the `key IN (...)` look-ups of a batch.
MAX_BATCH = 10_000


class SqliteSubscriberStore(TableRows):
    """:class:`composer.store.SubscriberStore` over one SQLite file, created on first use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = connect(path)
        try:
            migrate(self._db, path)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise unusable(path, exc) from exc
        except StoreError:
            self._db.close()
            raise

    def __enter__(self) -> SqliteSubscriberStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the connection."""
        self._db.close()

    def get(self, key: str) -> Subscriber | None:
        """The subscriber with normalised address ``key``, or None."""
        row = self._db.execute(
            f"SELECT {SUBSCRIBER_SELECT} FROM subscribers WHERE key = ?", (key,)
        ).fetchone()
        return subscriber_from_row(row) if row else None

    def save(
        self, new: NewSubscriber, *, resubscribe: bool = False, reason: str = ""
    ) -> tuple[Subscriber, Change]:
        """Add or update one subscriber by the rules in :mod:`composer.store`."""
        with write_transaction(self._db, self.path):
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
        # Addresses already seen in this import live in a temporary table, not a Python
        # set, so memory stays flat however long the file is.
        self._db.execute("CREATE TEMP TABLE IF NOT EXISTS import_seen (key TEXT PRIMARY KEY)")
        self._db.execute("DELETE FROM temp.import_seen")
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
            try:
                with write_transaction(self._db, self.path, outcome):
                    self._import_batch(batch, counts)
            except sqlite3.OperationalError as exc:
                if not _out_of_disk(exc):
                    raise
                raise StoreError(
                    f"{self.path}: the import stopped, the disk is full or failing ({exc});"
                    f" {saved:,} rows were saved and the rest were not: free some disk space"
                    " and import the same file again (the saved rows count as unchanged)"
                ) from exc
            saved += len(batch)
        self._db.execute("DELETE FROM temp.import_seen")
        return ImportCounts(**counts)

    def _import_batch(self, batch: list[NewSubscriber], counts: dict[str, int]) -> None:
        """Save one batch of an import inside the caller's transaction, adding what each
        row did to ``counts``."""
        keys = list({row.key: None for row in batch})
        marks = ",".join("?" * len(keys))
        seen = {
            key
            for (key,) in self._db.execute(
                f"SELECT key FROM temp.import_seen WHERE key IN ({marks})", keys
            )
        }
        fresh: dict[str, NewSubscriber] = {}
        for row in batch:
            if row.key in seen or row.key in fresh:
                counts["duplicates"] += 1
            else:
                fresh[row.key] = row
        self._db.executemany(
            "INSERT INTO temp.import_seen (key) VALUES (?)", ((key,) for key in fresh)
        )
        existing = {
            row[2]: subscriber_from_row(row)
            for row in self._db.execute(
                f"SELECT {SUBSCRIBER_SELECT} FROM subscribers WHERE key IN ({marks})",
                keys,
            )
        }
        suppressed = self._suppressed([key for key in fresh if key not in existing])
        self._apply(import_steps(fresh, existing, suppressed, counts), "imported")

    def _apply(self, steps: Iterable[Step], reason: str) -> None:
        inserts, updates = subscriber_writes(steps, reason, now_text(), moment_text)
        self._db.executemany(_INSERT, inserts)
        self._db.executemany(_UPDATE, updates)

    def mark_status(self, key: str, status: InactiveStatus, reason: str) -> Subscriber | None:
        """Record an unsubscribe, bounce or complaint; None when ``key`` is unknown."""
        if status not in get_args(InactiveStatus):
            raise ValueError(f"mark_status cannot set {status!r}; resubscribe with save()")
        with write_transaction(self._db, self.path):
            self._db.execute(
                "UPDATE subscribers SET status = ?, status_changed_at = ?, status_reason = ?"
                " WHERE key = ? AND status != ?",
                (status, now_text(), reason, key, status),
            )
        return self.get(key)

    def rename(self, key: str, name: str) -> Subscriber | None:
        """Set the name of subscriber ``key``; None when ``key`` is unknown."""
        with write_transaction(self._db, self.path):
            self._db.execute("UPDATE subscribers SET name = ? WHERE key = ?", (name, key))
        return self.get(key)

    def personal_data(self, key: str) -> PersonalData | None:
        """Everything held about subscriber ``key``, or None when ``key`` is unknown."""
        subscriber = self.get(key)
        if subscriber is None:
            return None
        history = tuple(
            StatusChange(
                status=cast(Status, status),
                changed_at=dt.datetime.fromisoformat(changed_at),
                reason=reason,
            )
            for status, changed_at, reason in self._db.execute(
                "SELECT status, changed_at, reason FROM status_changes"
                " WHERE subscriber_id = ? ORDER BY id",
                (subscriber.id,),
            )
        )
        return PersonalData(
            subscriber=subscriber,
            history=history,
            deliveries=deliveries_of(self._db, subscriber.id),
        )

    def erase(self, key: str) -> bool:
        """Delete subscriber ``key``, their history, deliveries, the bounces and complaints
        matched to them and their confirmations and welcomes, and suppress the address.
        The freed space is overwritten (``secure_delete``) and the write-ahead log folded
        back and emptied, so no copy of the erased rows stays in the files."""
        # SQLite otherwise leaves deleted rows' bytes in free pages until they are reused.
        self._db.execute("PRAGMA secure_delete = ON")
        with write_transaction(self._db, self.path):
            row = self._db.execute("SELECT id FROM subscribers WHERE key = ?", (key,)).fetchone()
            if row is None:
                return False
            for table, column in (
                ("feedback", "subscriber_id"),
                ("deliveries", "subscriber_id"),
                ("status_changes", "subscriber_id"),
                ("subscribers", "id"),
            ):
                self._db.execute(f"DELETE FROM {table} WHERE {column} = ?", (row[0],))
            # The queue holds the address and name too; with it goes the one-a-day
            # confirmation limit, so the person may sign up again at once.
            self._db.execute("DELETE FROM mail_queue WHERE key = ?", (key,))
            self._db.execute(
                "INSERT OR IGNORE INTO suppressions (digest, created_at) VALUES (?, ?)",
                (suppression_digest(key), now_text()),
            )
        # Best effort: a reader holding an old snapshot keeps the log until it finishes.
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return True

    def is_suppressed(self, key: str) -> bool:
        """Whether address key ``key`` belongs to an erased reader."""
        return bool(self._suppressed([key]))

    def _suppressed(self, keys: list[str]) -> set[str]:
        """Those of ``keys`` whose address is suppressed."""
        digests = {suppression_digest(key): key for key in keys}
        if not digests:
            return set()
        marks = ",".join("?" * len(digests))
        return {
            digests[digest]
            for (digest,) in self._db.execute(
                f"SELECT digest FROM suppressions WHERE digest IN ({marks})", list(digests)
            )
        }

    def sign_up(self, signups: Sequence[Signup], *, double_opt_in: bool) -> list[SignupResult]:
        """Record each signup by :func:`plan_signup` with the mail it calls for, in one
        transaction."""
        results = []
        with write_transaction(self._db, self.path):
            now = dt.datetime.now(dt.UTC)
            for signup in signups:
                old = self.get(signup.key)
                plan = plan_signup(
                    old,
                    double_opt_in=double_opt_in,
                    last_confirmation=mailqueue.last_confirmation(self._db, signup.key),
                    now=now,
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
        with write_transaction(self._db, self.path):
            old = self.get(key)
            step = plan_confirmation(old)
            if step == "add":
                # The person's own confirmation is the one thing that lifts an erasure.
                self._db.execute(
                    "DELETE FROM suppressions WHERE digest = ?", (suppression_digest(key),)
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
        cutoff = moment_text(before)
        stale = "SELECT id FROM subscribers WHERE status = 'pending' AND status_changed_at < ?"
        with write_transaction(self._db, self.path):
            # A bounce of their confirmation may have been recorded against them.
            for table in ("feedback", "status_changes"):
                self._db.execute(f"DELETE FROM {table} WHERE subscriber_id IN ({stale})", (cutoff,))
            deleted = self._db.execute(
                "DELETE FROM subscribers WHERE status = 'pending' AND status_changed_at < ?",
                (cutoff,),
            ).rowcount
            mailqueue.prune(self._db, before)
        return deleted

    def due_mail(self, now: dt.datetime, limit: int) -> list[QueuedMail]:
        """Up to ``limit`` queued messages due at ``now``, oldest first."""
        return mailqueue.due(self._db, now, limit)

    def requeue_interrupted_mail(self) -> int:
        """Queue again every message left ``sending``; how many."""
        with write_transaction(self._db, self.path):
            return mailqueue.requeue_interrupted(self._db)

    def record_mail(self, outcomes: Sequence[MailOutcome]) -> None:
        """Record where each queued message stands now, in one transaction."""
        with write_transaction(self._db, self.path):
            mailqueue.record(self._db, outcomes)

    def iter_all(self, *, batch_size: int = 1000) -> Iterator[Subscriber]:
        """Every subscriber in insertion order, read ``batch_size`` rows at a time."""
        return self._pages("1", (), batch_size)

    def iter_active(
        self, segment: Segment = "all", *, batch_size: int = 1000
    ) -> Iterator[Subscriber]:
        """The active subscribers of ``segment`` in insertion order, in keyset-paginated batches."""
        tiers = segment_tiers(segment)
        where = f"status = 'active' AND tier IN ({','.join('?' * len(tiers))})"
        return self._pages(where, tiers, batch_size)

    def _pages(self, where: str, params: tuple[Any, ...], batch_size: int) -> Iterator[Subscriber]:
        query = (
            f"SELECT {SUBSCRIBER_SELECT} FROM subscribers WHERE {where} AND id > ?"
            " ORDER BY id LIMIT ?"
        )
        last = 0
        while True:
            # Each page is its own short read, so a long dispatch never pins a snapshot
            # and writers (the unsubscribe server) are never blocked by it.
            rows = self._db.execute(query, (*params, last, batch_size)).fetchall()
            for row in rows:
                yield subscriber_from_row(row)
            if len(rows) < batch_size:
                return
            last = rows[-1][0]

    def count_active(self, segment: Segment = "all") -> int:
        """How many subscribers :meth:`iter_active` would yield now."""
        tiers = segment_tiers(segment)
        marks = ",".join("?" * len(tiers))
        query = f"SELECT count(*) FROM subscribers WHERE status = 'active' AND tier IN ({marks})"
        return int(self._db.execute(query, tiers).fetchone()[0])

    def count_by_status(self) -> dict[Status, int]:
        """How many subscribers have each status."""
        counts: dict[Status, int] = dict.fromkeys(STATUSES, 0)
        for status, count in self._db.execute(
            "SELECT status, count(*) FROM subscribers GROUP BY status"
        ):
            counts[cast(Status, status)] = count
        return counts

    def deliveries(self, key: str, identity: IssueIdentity | None = None) -> SqliteDispatchJournal:
        """The delivery record and dispatch lock of the dispatch keyed ``key``, on
        connections of its own."""
        return SqliteDispatchJournal(self.path, key, identity)

    def dispatches(self, issue: IssueIdentity) -> list[DispatchRecord]:
        """Every dispatch recorded under ``issue``'s key, or with its id, content or file name."""
        return find_dispatches(self._db, issue)

    def dispatched_issues(self) -> list[DispatchedIssue]:
        """What every dispatch with a copy that may have arrived recorded of its issue."""
        arrived = ",".join("?" * len(MAY_HAVE_ARRIVED))
        # EXISTS stops at the first such delivery (the (issue, state) index finds it):
        # counting them would read every delivery of every dispatch on each archive page.
        query = (
            "SELECT d.slug, d.issue_id, d.content_digest FROM dispatches AS d WHERE EXISTS"
            f" (SELECT 1 FROM deliveries AS x WHERE x.issue = d.issue AND x.state IN ({arrived}))"
        )
        try:
            rows = self._db.execute(query, MAY_HAVE_ARRIVED).fetchall()
        except sqlite3.DatabaseError as exc:
            if is_busy(exc):
                raise busy(self.path, exc) from exc
            raise unusable(self.path, exc) from exc
        return [
            DispatchedIssue(slug=slug, id=issue_id or "", content=content)
            for slug, issue_id, content in rows
        ]

    def find_delivery(self, message_id: str) -> TracedDelivery | None:
        """The delivery whose copy had ``message_id``, with its subscriber, or None."""
        return find_delivery(self._db, message_id)

    def schedules(self) -> SqliteScheduleBook:
        """The scheduled dispatches, on this store's connection."""
        return SqliteScheduleBook(self._db, self.path)

    def record_feedback(self, feedback: Feedback, *, soft_limit: int = 3) -> FeedbackResult:
        """Apply a bounce or complaint in one transaction (:mod:`composer.store.feedback`)."""
        with write_transaction(self._db, self.path):
            return record_feedback(self._db, feedback, soft_limit)

    def record_feedback_batch(
        self, batch: Iterable[Feedback], *, soft_limit: int = 3
    ) -> list[FeedbackResult]:
        """Apply each of ``batch`` in order, in one transaction."""
        with write_transaction(self._db, self.path):
            return [record_feedback(self._db, feedback, soft_limit) for feedback in batch]

    def recent_feedback(self, limit: int = 50) -> list[FeedbackRecord]:
        """The latest ``limit`` bounces and complaints recorded, newest first."""
        return recent_feedback(self._db, limit)

    def feedback_counts(self, dispatch_key: str) -> FeedbackCounts:
        """The bounces and complaints recorded against the dispatch keyed ``dispatch_key``."""
        return feedback_counts(self._db, dispatch_key)


def _out_of_disk(exc: sqlite3.Error) -> bool:
    # A full disk is SQLITE_FULL; a file-size limit or quota surfaces as a failed write.
    return exc.sqlite_errorname == "SQLITE_FULL" or exc.sqlite_errorname.startswith("SQLITE_IOERR")
