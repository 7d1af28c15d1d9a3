"""The subscriber list in one SQLite file: WAL mode, batched writes, versioned schema.

The schema is the list :data:`MIGRATIONS`; ``PRAGMA user_version`` records how
many of them a file has had. A later release (the dispatch journal, for one)
adds its tables by appending a script, never by editing one already shipped.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import Any, cast, get_args

from composer.errors import StoreError
from composer.model import Tier
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
)

MIGRATIONS: tuple[str, ...] = (
    # 1: the list, and a history row for every status a subscriber ever had.
    """
    CREATE TABLE subscribers (
        id INTEGER PRIMARY KEY,
        email TEXT NOT NULL,
        key TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL DEFAULT '',
        tier TEXT NOT NULL CHECK (tier IN ('free', 'paid')),
        tags TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL
            CHECK (status IN ('active', 'unsubscribed', 'bounced', 'complained')),
        status_changed_at TEXT NOT NULL,
        status_reason TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL
    );
    CREATE INDEX subscribers_by_status ON subscribers (status, id);
    CREATE TABLE status_changes (
        id INTEGER PRIMARY KEY,
        subscriber_id INTEGER NOT NULL REFERENCES subscribers (id),
        status TEXT NOT NULL,
        changed_at TEXT NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE INDEX status_changes_by_subscriber ON status_changes (subscriber_id);
    CREATE TRIGGER subscribers_history_insert AFTER INSERT ON subscribers
    BEGIN
        INSERT INTO status_changes (subscriber_id, status, changed_at, reason)
        VALUES (NEW.id, NEW.status, NEW.status_changed_at, NEW.status_reason);
    END;
    CREATE TRIGGER subscribers_history_update AFTER UPDATE OF status ON subscribers
    WHEN OLD.status IS NOT NEW.status
    BEGIN
        INSERT INTO status_changes (subscriber_id, status, changed_at, reason)
        VALUES (NEW.id, NEW.status, NEW.status_changed_at, NEW.status_reason);
    END;
    """,
    # 2: the dispatch journal (composer.store.journal): per issue and subscriber, where
    # their copy stands; and the lock that lets one process at a time send an issue.
    """
    CREATE TABLE deliveries (
        issue TEXT NOT NULL,
        subscriber_id INTEGER NOT NULL REFERENCES subscribers (id),
        email TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'sending', 'sent', 'deferred', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        code INTEGER,
        reply TEXT NOT NULL DEFAULT '',
        retryable INTEGER NOT NULL DEFAULT 0,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (issue, subscriber_id)
    ) WITHOUT ROWID;
    CREATE INDEX deliveries_by_state ON deliveries (issue, state);
    CREATE TABLE dispatches (
        issue TEXT PRIMARY KEY,
        segment TEXT NOT NULL,
        started_at TEXT NOT NULL,
        last_run_at TEXT NOT NULL,
        last_result TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE dispatch_locks (
        issue TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        heartbeat_at REAL NOT NULL
    );
    """,
)

_COLUMNS = "id, email, key, name, tier, tags, status, status_changed_at, status_reason"
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


class SqliteSubscriberStore:
    """:class:`composer.store.SubscriberStore` over one SQLite file, created on first use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(
                f"{path}: cannot open the subscriber database ({exc}); check [subscribers]"
                " database in config.toml"
            ) from exc
        try:
            self._db.execute("PRAGMA busy_timeout = 5000")
            self._db.execute("PRAGMA journal_mode = WAL")
            # In WAL mode NORMAL may lose the last commits on a power cut (they sit in the
            # WAL until a checkpoint syncs it); FULL syncs the WAL at every commit, so an
            # unsubscribe that was committed is never lost.
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreError(
                f"{path}: not a usable subscriber database ({exc}); point [subscribers]"
                " database in config.toml at another file"
            ) from exc

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreError(
                f"{self.path}: written by a newer release of newsletter (schema {version},"
                f" this one knows {len(MIGRATIONS)}); upgrade newsletter"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            # One transaction per step, so a failed migration leaves the previous version.
            self._db.executescript(
                f"BEGIN IMMEDIATE; {script}; PRAGMA user_version = {number}; COMMIT;"
            )

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
            f"SELECT {_COLUMNS} FROM subscribers WHERE key = ?", (key,)
        ).fetchone()
        return _subscriber(row) if row else None

    def save(
        self, new: NewSubscriber, *, resubscribe: bool = False, reason: str = ""
    ) -> tuple[Subscriber, Change]:
        """Add or update one subscriber by the rules in :mod:`composer.store`."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            old = self.get(new.key)
            change = classify(old, new, resubscribe=resubscribe)
            self._apply([(old, new, change)], reason or new.status_reason)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
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
        counts = dict.fromkeys(("added", "updated", "unchanged", "kept_inactive", "duplicates"), 0)
        stream = iter(rows)
        while batch := list(islice(stream, batch_size)):
            self._db.execute("BEGIN IMMEDIATE")
            try:
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
                    row[2]: _subscriber(row)
                    for row in self._db.execute(
                        f"SELECT {_COLUMNS} FROM subscribers WHERE key IN ({marks})", keys
                    )
                }
                plan = []
                for key, new in fresh.items():
                    old = existing.get(key)
                    change = classify(old, new, resubscribe=False)
                    counts[change] += 1
                    plan.append((old, new, change))
                self._apply(plan, "imported")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        self._db.execute("DELETE FROM temp.import_seen")
        return ImportCounts(**counts)

    def _apply(
        self, plan: Iterable[tuple[Subscriber | None, NewSubscriber, Change]], reason: str
    ) -> None:
        now = _now()
        inserts: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        for old, new, change in plan:
            changed_at = _text(new.status_changed_at) if new.status_changed_at else now
            why = new.status_reason or reason
            if old is None:
                inserts.append(
                    (
                        new.email,
                        new.key,
                        new.name or "",
                        new.tier or "free",
                        ";".join(new.tags or ()),
                        new.status,
                        changed_at,
                        why,
                        now,
                    )
                )
            elif change in ("updated", "resubscribed"):
                status_moves = new.status != old.status
                updates.append(
                    (
                        old.name if new.name is None else new.name,
                        old.tier if new.tier is None else new.tier,
                        ";".join(old.tags if new.tags is None else new.tags),
                        new.status,
                        changed_at if status_moves else _text(old.status_changed_at),
                        why if status_moves else old.status_reason,
                        new.key,
                    )
                )
        self._db.executemany(_INSERT, inserts)
        self._db.executemany(_UPDATE, updates)

    def mark_status(self, key: str, status: InactiveStatus, reason: str) -> Subscriber | None:
        """Record an unsubscribe, bounce or complaint; None when ``key`` is unknown."""
        if status not in get_args(InactiveStatus):
            raise ValueError(f"mark_status cannot set {status!r}; resubscribe with save()")
        self._db.execute(
            "UPDATE subscribers SET status = ?, status_changed_at = ?, status_reason = ?"
            " WHERE key = ? AND status != ?",
            (status, _now(), reason, key, status),
        )
        return self.get(key)

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
        query = f"SELECT {_COLUMNS} FROM subscribers WHERE {where} AND id > ? ORDER BY id LIMIT ?"
        last = 0
        while True:
            # Each page is its own short read, so a long dispatch never pins a snapshot
            # and writers (the unsubscribe server) are never blocked by it.
            rows = self._db.execute(query, (*params, last, batch_size)).fetchall()
            for row in rows:
                yield _subscriber(row)
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


def mark_bounced(db: sqlite3.Connection, bounces: Iterable[tuple[str, str]]) -> None:
    """Mark each ``(key, reason)`` subscriber bounced on ``db``, inside the caller's
    transaction: the dispatch journal records a 5.1.x reply and the bounce atomically.
    Only an active subscriber moves, as :meth:`SqliteSubscriberStore.mark_status` does."""
    now = _now()
    db.executemany(
        "UPDATE subscribers SET status = 'bounced', status_changed_at = ?, status_reason = ?"
        " WHERE key = ? AND status = 'active'",
        ((now, reason, key) for key, reason in bounces),
    )


def _now() -> str:
    return _text(dt.datetime.now(dt.UTC))


def _text(moment: dt.datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).replace(microsecond=0).isoformat()


def _subscriber(row: tuple[Any, ...]) -> Subscriber:
    id_, email, key, name, tier, tags, status, changed_at, reason = row
    return Subscriber(
        id=id_,
        email=email,
        key=key,
        name=name,
        tier=cast(Tier, tier),
        tags=tuple(tags.split(";")) if tags else (),
        status=cast(Status, status),
        status_changed_at=dt.datetime.fromisoformat(changed_at),
        status_reason=reason,
    )
