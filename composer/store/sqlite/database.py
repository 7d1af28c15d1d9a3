"""One SQLite file: how every connection to it is opened, and its versioned schema.

The schema is the list :data:`MIGRATIONS`; ``PRAGMA user_version`` records how
many of them a file has had. A later release adds its tables by appending a
script, never by editing one already shipped. A step that needs Python is a
function of the connection instead of a script; what it returns is a note for the
editor, logged as a warning (the CLI prints it).
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from composer.errors import StoreBusy, StoreError
from composer.store.sqlite.case_duplicates import merge_case_duplicates

log = logging.getLogger(__name__)

MIGRATIONS: tuple[str | Callable[[sqlite3.Connection], str], ...] = (
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
    # 2: the dispatch journal (composer.store.deliveries): per issue and subscriber, where
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
    # 3: delivery states for what comes back after a send (bounced, complained) or is
    # lost (unknown), and each copy's Message-ID, so that a bounce, a complaint or a
    # click can be joined to its delivery and reader. SQLite cannot widen a CHECK in
    # place, so the table is rebuilt with every row copied; rows from before have no
    # Message-ID.
    """
    CREATE TABLE deliveries_3 (
        issue TEXT NOT NULL,
        subscriber_id INTEGER NOT NULL REFERENCES subscribers (id),
        email TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'sending', 'sent', 'deferred', 'failed',
                                             'bounced', 'complained', 'unknown')),
        attempts INTEGER NOT NULL DEFAULT 0,
        code INTEGER,
        reply TEXT NOT NULL DEFAULT '',
        retryable INTEGER NOT NULL DEFAULT 0,
        message_id TEXT,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (issue, subscriber_id)
    ) WITHOUT ROWID;
    INSERT INTO deliveries_3 (issue, subscriber_id, email, state, attempts, code, reply,
                              retryable, updated_at)
    SELECT issue, subscriber_id, email, state, attempts, code, reply, retryable, updated_at
    FROM deliveries;
    DROP TABLE deliveries;
    ALTER TABLE deliveries_3 RENAME TO deliveries;
    CREATE INDEX deliveries_by_state ON deliveries (issue, state);
    CREATE INDEX deliveries_by_message_id ON deliveries (message_id);
    """,
    # 4: one row per address whatever its letter case (keys lower-cased, rows merged).
    merge_case_duplicates,
    # 5: what finds a dispatch again besides its key (composer.store.deliveries.IssueIdentity):
    # the file name, id and content digest of the issue it last sent. Dispatches from
    # before were keyed by the file name, so that is their slug; their id and content
    # stay unknown (NULL) until they are next resumed.
    """
    ALTER TABLE dispatches ADD COLUMN slug TEXT NOT NULL DEFAULT '';
    ALTER TABLE dispatches ADD COLUMN issue_id TEXT;
    ALTER TABLE dispatches ADD COLUMN content_digest TEXT;
    UPDATE dispatches SET slug = issue;
    """,
    # 6: scheduled dispatches (composer.store.schedules): the issue file and what it
    # held when scheduled, the segment, the time (UTC), the state, and the worker that
    # started it (its claim: a token, host, pid, start and last refresh).
    """
    CREATE TABLE schedules (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL,
        issue_key TEXT NOT NULL,
        slug TEXT NOT NULL,
        issue_id TEXT NOT NULL DEFAULT '',
        content_digest TEXT NOT NULL,
        segment TEXT NOT NULL CHECK (segment IN ('free', 'paid', 'all')),
        due_at TEXT NOT NULL,
        skip_check INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL
            CHECK (state IN ('scheduled', 'started', 'done', 'cancelled', 'failed')),
        created_at TEXT NOT NULL,
        owner TEXT,
        worker_host TEXT,
        worker_pid INTEGER,
        started_at TEXT,
        heartbeat_at REAL,
        ended_at TEXT,
        note TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX schedules_by_state ON schedules (state, due_at);
    """,
    # 7: what came back after a send (composer.store.feedback): every bounce and
    # complaint as reported, once per (source, event_id), with the reader and dispatch it
    # matched (NULL: none) and what it did; and the deliveries of each reader, which a
    # report naming its reader (by return token or address) is matched among.
    """
    CREATE TABLE feedback (
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL,
        event_id TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('hard', 'soft', 'complaint')),
        effect TEXT NOT NULL
            CHECK (effect IN ('bounced', 'complained', 'counted', 'unmatched', 'ignored')),
        subscriber_id INTEGER REFERENCES subscribers (id),
        issue TEXT,
        reason TEXT NOT NULL,
        occurred_at TEXT NOT NULL,
        recorded_at TEXT NOT NULL,
        message_id TEXT,
        recipient TEXT,
        return_token TEXT,
        UNIQUE (source, event_id)
    );
    CREATE INDEX feedback_by_issue ON feedback (issue, kind);
    CREATE INDEX feedback_by_subscriber ON feedback (subscriber_id, kind, recorded_at);
    CREATE INDEX deliveries_by_subscriber ON deliveries (subscriber_id, updated_at);
    """,
    # 8: the suppressions erasures leave: a one-way digest of each erased
    # reader's address key (composer.store.personal), and when it was made.
    """
    CREATE TABLE suppressions (
        digest TEXT PRIMARY KEY,
        created_at TEXT NOT NULL
    ) WITHOUT ROWID;
    """,
    # 9: readers who signed up on `serve` and have not confirmed yet (status
    # 'pending'), and the queue of the mail a signup calls for. SQLite cannot widen a
    # CHECK in place, so the table is rebuilt with every row (and id) copied, and its
    # index and history triggers made again.
    """
    CREATE TABLE subscribers_6 (
        id INTEGER PRIMARY KEY,
        email TEXT NOT NULL,
        key TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL DEFAULT '',
        tier TEXT NOT NULL CHECK (tier IN ('free', 'paid')),
        tags TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL
            CHECK (status IN ('pending', 'active', 'unsubscribed', 'bounced', 'complained')),
        status_changed_at TEXT NOT NULL,
        status_reason TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL
    );
    INSERT INTO subscribers_6 SELECT id, email, key, name, tier, tags, status,
        status_changed_at, status_reason, created_at FROM subscribers;
    DROP TABLE subscribers;
    ALTER TABLE subscribers_6 RENAME TO subscribers;
    CREATE INDEX subscribers_by_status ON subscribers (status, id);
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
    CREATE TABLE mail_queue (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('confirm', 'welcome')),
        key TEXT NOT NULL,
        email TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        tier TEXT NOT NULL CHECK (tier IN ('free', 'paid')),
        state TEXT NOT NULL CHECK (state IN ('queued', 'sending', 'sent', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        reply TEXT NOT NULL DEFAULT '',
        next_attempt_at TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX mail_queue_due ON mail_queue (state, next_attempt_at);
    CREATE INDEX mail_queue_by_key ON mail_queue (key, kind, created_at);
    """,
)


def connect(
    path: Path, *, busy_timeout_ms: int = 5000, any_thread: bool = False
) -> sqlite3.Connection:
    """A connection to ``path`` in autocommit mode (transactions are explicit), in WAL
    mode, with foreign keys on. ``any_thread`` lets one other thread at a time use it."""
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=not any_thread)
    except sqlite3.Error as exc:
        raise StoreError(
            f"{path}: cannot open the subscriber database ({exc}); check [subscribers]"
            " database in config.toml"
        ) from exc
    try:
        db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        db.execute("PRAGMA journal_mode = WAL")
        # In WAL mode NORMAL may lose the last commits on a power cut (they sit in the
        # WAL until a checkpoint syncs it); FULL syncs the WAL at every commit, so an
        # unsubscribe or a recorded 250 that was committed is never lost.
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA foreign_keys = ON")
    except sqlite3.DatabaseError as exc:
        db.close()
        raise unusable(path, exc) from exc
    return db


def is_busy(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` says another connection held the lock past the busy timeout."""
    return exc.sqlite_errorname.startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))


def busy(path: Path, exc: sqlite3.Error, outcome: str = "") -> StoreBusy:
    """The error for a write that waited for another process's lock and gave up;
    ``outcome`` says what was written and what to do (default: nothing, try again)."""
    outcome = outcome or "nothing was changed: try again in a moment, once it has finished"
    return StoreBusy(
        f"{path}: the subscriber database is busy: another process (a send, an import, a"
        f" sqlite3 shell) kept its write lock past the wait ({exc}); {outcome}"
    )


def unusable(path: Path, exc: sqlite3.Error) -> StoreError:
    """The error for a file that opens but is not a subscriber database this release can use."""
    return StoreError(
        f"{path}: not a usable subscriber database ({exc}); point [subscribers]"
        " database in config.toml at another file"
    )


@contextmanager
def write_transaction(db: sqlite3.Connection, path: Path, outcome: str = "") -> Iterator[None]:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` on ``db``, the file at ``path``, rolled back on any
    exception (a failed ``COMMIT`` included). A write lock another process keeps past the
    busy timeout is :class:`StoreBusy`, ``outcome`` saying what was written before and
    what to do (default: nothing, try again)."""
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if not is_busy(exc):
            raise
        raise busy(path, exc, outcome) from exc
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        # SQLite rolls a transaction back by itself when a write fails at COMMIT (a full
        # disk); a second ROLLBACK would then fail and hide why.
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the file behind ``db`` to the latest schema, one transaction per step, so a
    failed step leaves the previous version; refuse a file from a newer release."""
    # A file already up to date needs no write lock, so opening it never waits for a
    # writer: reading the list while another process writes to it stays instant.
    if db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS):
        return
    # A step may rebuild a table other tables refer to, which foreign keys would forbid
    # mid-way; each step is checked whole before its commit instead (SQLite's own
    # procedure for altering a table). The pragma has no effect inside a transaction.
    db.execute("PRAGMA foreign_keys = OFF")
    try:
        _migrate(db, path)
    finally:
        db.execute("PRAGMA foreign_keys = ON")


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    outcome = "it was not brought up to date: try again once it has finished"
    while True:
        with write_transaction(db, path, outcome):
            # Read under the write lock: two processes opening a new file at once must
            # not both run the same step.
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"{path}: written by a newer release of newsletter (schema {version},"
                    f" this one knows {len(MIGRATIONS)}); upgrade newsletter"
                )
            if version == len(MIGRATIONS):
                return
            step = MIGRATIONS[version]
            note = ""
            if isinstance(step, str):
                for statement in _statements(step):
                    db.execute(statement)
            else:
                note = step(db)
            broken = db.execute("PRAGMA foreign_key_check").fetchone()
            if broken is not None:
                raise StoreError(
                    f"{path}: schema step {version + 1} would leave a row of {broken[0]}"
                    f" pointing at no row of {broken[2]}; nothing was changed"
                )
            db.execute(f"PRAGMA user_version = {version + 1}")
        if note:
            log.warning("%s: %s", path, note)


def _statements(script: str) -> list[str]:
    """The SQL statements of ``script`` one by one (``executescript`` would commit the
    caller's transaction first); a trigger's body stays whole."""
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip():
        statements.append(pending.strip())
    return statements


def now_text() -> str:
    """Now, as stored: UTC, ISO 8601, to the second."""
    return moment_text(dt.datetime.now(dt.UTC))


def moment_text(moment: dt.datetime) -> str:
    """``moment`` as stored (a naive one is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).replace(microsecond=0).isoformat()
