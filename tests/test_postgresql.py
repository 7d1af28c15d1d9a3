"""What only the PostgreSQL store has to prove, against a real server: its settings, its
errors in one line (never the password), its schema steps under an advisory lock, the
real commands on it, and `db copy` both ways. (Its dispatch's workers across machines:
tests/test_workers.py.)"""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from composer.config import DATABASE_PASSWORD_ENV, load_config
from composer.store import NewSubscriber, SubscriberStore, open_store
from composer.store.deliveries import IssueIdentity, Outcome, Recipient
from composer.store.feedback import Feedback
from composer.store.pending import PendingUnsubscribes, QueuedUnsubscribe
from composer.store.schedules import SCHEDULE_STATES, NewSchedule, WorkerClaim
from composer.store.signups import Signup
from tests.conftest import (
    EXAMPLE_MD,
    ROOT,
    both_backends,
    config_text,
    newsletter,
    raw_sql,
    write_csv,
)
from tests.postgres import PostgresServer
from tests.smtp_server import SmtpServer

on_postgresql = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)


def write_config(folder: Path, database: str) -> Path:
    """A config in ``folder`` (made if missing) whose list is ``database``."""
    folder.mkdir(exist_ok=True)
    path = folder / "config.toml"
    path.write_text(config_text(database), encoding="utf-8")
    return path


def test_a_postgresql_url_selects_the_server_and_keeps_tls_options(tmp_path: Path) -> None:
    url = "postgresql://news@db.example.com:6432/list?sslmode=verify-full&sslrootcert=ca.pem"
    settings = load_config(write_config(tmp_path, url)).subscribers
    assert settings.database is None
    assert settings.url == (
        "postgresql://news@db.example.com:6432/list?sslmode=verify-full"
        f"&sslrootcert={str(tmp_path / 'ca.pem').replace('/', '%2F')}"
    )
    assert settings.password_env == DATABASE_PASSWORD_ENV
    assert settings.unsubscribe_queue.parent == tmp_path
    assert load_config(write_config(tmp_path, "list.db")).subscribers.url == ""


def test_a_password_in_the_url_is_refused_naming_the_variable_to_use(tmp_path: Path) -> None:
    config = write_config(tmp_path, "postgresql://news:hunter2@db.example.com/list")
    result = newsletter("subscribers", "list", config_path=config)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert "holds a password" in line and DATABASE_PASSWORD_ENV in line
    assert "hunter2" not in line


def test_a_server_that_is_down_is_one_line_naming_it(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = write_config(tmp_path, f"postgresql://news@127.0.0.1:{port}/list")
    result = newsletter("subscribers", "list", config_path=config)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"Error: postgresql://news@127.0.0.1:{port}/list: cannot open"), line
    assert "check that the server is running" in line


def test_a_wrong_password_is_one_line_that_never_shows_it(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url = postgres_server.database_url("postgres")
    config = write_config(tmp_path, url)
    env = {**os.environ, DATABASE_PASSWORD_ENV: "not-the-password-42"}
    result = subprocess.run(
        [sys.executable, "-m", "composer", "subscribers", "list", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"Error: {url}: cannot open the subscriber database (")
    assert "password authentication failed" in line
    assert f"check the password in the environment variable {DATABASE_PASSWORD_ENV}" in line
    assert "not-the-password-42" not in result.stderr


def test_without_psycopg_a_postgresql_url_says_how_to_install_it(tmp_path: Path) -> None:
    config = write_config(tmp_path, "postgresql://news@127.0.0.1/list")
    code = (
        "import sys; sys.modules['psycopg'] = None; from composer.cli import main;"
        f" sys.argv = ['newsletter', 'subscribers', 'list', '--config', {str(config)!r}]; main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "Error: postgresql://news@127.0.0.1/list: a PostgreSQL list needs the psycopg driver,"
        " which is not installed: pip install 'newsletter[postgresql]'"
    ]


OPEN_AT_ONCE = """
import sys, time
from pathlib import Path
from composer.config import load_config
from composer.store import open_store
settings = load_config(Path(sys.argv[1])).subscribers
time.sleep(max(0, float(sys.argv[2]) - time.time()))
open_store(settings).close()
"""


@on_postgresql
def test_processes_opening_a_new_database_at_once_run_each_schema_step_once(
    config_path: Path, database_setting: str
) -> None:
    start = time.time() + 1.5
    opening = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_AT_ONCE, str(config_path), str(start)],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for process in opening:
        _, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
    from composer.store.postgresql import MIGRATIONS

    with open_store(load_config(config_path).subscribers) as store:
        steps = raw_sql(store, "SELECT step FROM schema_version ORDER BY step")
    assert steps == [(n,) for n in range(1, len(MIGRATIONS) + 1)]


@on_postgresql
def test_a_database_from_a_newer_release_is_refused_with_one_line(
    store: SubscriberStore, config_path: Path
) -> None:
    from composer.store.postgresql import MIGRATIONS

    raw_sql(store, "INSERT INTO schema_version VALUES (?, now())", (len(MIGRATIONS) + 1,))
    result = newsletter("subscribers", "list", config_path=config_path)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert "written by a newer release of newsletter" in line and "upgrade newsletter" in line


@on_postgresql
def test_a_reader_row_another_session_keeps_locked_is_one_busy_line_and_nothing_changes(
    config_path: Path, store: SubscriberStore, database_setting: str
) -> None:
    store.save(NewSubscriber("ann@example.org", "ann@example.org"))
    import psycopg  # here: without it, the tests that need no server still run

    password = os.environ[DATABASE_PASSWORD_ENV]
    with psycopg.connect(database_setting, password=password) as other:
        other.execute("SELECT * FROM subscribers WHERE key = 'ann@example.org' FOR UPDATE")
        removed = newsletter("subscribers", "remove", "ann@example.org", config_path=config_path)
        other.rollback()
    assert removed.returncode == 2
    [line] = removed.stderr.splitlines()
    assert line.startswith(f"Error: {database_setting}: the subscriber database is busy"), line
    assert line.endswith("nothing was changed: try again in a moment, once it has finished")
    assert store.get("ann@example.org").status == "active"


@on_postgresql
def test_two_soft_bounces_for_one_reader_at_once_are_recorded_one_after_the_other(
    config_path: Path, store: SubscriberStore, database_setting: str
) -> None:
    # Two webhook requests, each a soft bounce of another issue, with soft_limit 2: read
    # side by side, each would count one issue and neither would bounce the reader.
    ann, _ = store.save(NewSubscriber("ann@example.org", "ann@example.org"))
    recipient = Recipient(email=ann.email, key=ann.key, tier="free", subscriber_id=ann.id)
    for n in (0, 1):
        with store.deliveries(f"id:{n}") as journal:
            journal.record(
                [Outcome(recipient=recipient, state="sent", attempts=1, message_id=f"<{n}@x>")]
            )
    settings = load_config(config_path).subscribers
    effects: list[str] = []

    def webhook(n: int) -> None:
        soft = Feedback(
            kind="soft",
            source="ses",
            event_id=f"e{n}",
            reason="4.2.2 mailbox full",
            occurred_at=dt.datetime.now(dt.UTC),
            message_id=f"<{n}@x>",
        )
        with open_store(settings) as own:
            effects.append(own.record_feedback(soft, soft_limit=2).effect)

    import psycopg

    requests = [threading.Thread(target=webhook, args=(n,)) for n in (0, 1)]
    with psycopg.connect(database_setting, password=os.environ[DATABASE_PASSWORD_ENV]) as other:
        other.execute("SELECT 1 FROM subscribers WHERE id = %s FOR UPDATE", (ann.id,))
        for request in requests:
            request.start()
        deadline = time.monotonic() + 4  # within the lock timeout (5 s)
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        while raw_sql(store, waiting) != [(2,)]:
            assert len(effects) < 2, f"recorded without waiting for the reader's row: {effects}"
            assert time.monotonic() < deadline, "the requests never waited for the reader's row"
            time.sleep(0.02)
        other.rollback()
    for request in requests:
        request.join(timeout=10)
    assert sorted(effects) == ["bounced", "counted"]
    reader = store.get(ann.key)
    assert reader is not None and reader.status == "bounced"


@on_postgresql
def test_a_list_from_before_signups_is_upgraded_in_place_and_takes_pending_readers(
    config_path: Path, database_setting: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from composer.store.postgresql import database

    step = next(
        n
        for n, script in enumerate(database.MIGRATIONS)
        if isinstance(script, str) and "CREATE TABLE mail_queue" in script
    )
    settings = load_config(config_path).subscribers
    with monkeypatch.context() as older:
        older.setattr(database, "MIGRATIONS", database.MIGRATIONS[:step])
        with open_store(settings) as old:
            old.save(NewSubscriber("ann@example.org", "ann@example.org", tier="paid"))
            old.mark_status("ann@example.org", "bounced", "5.1.1")
        database.POOLS.close()  # the next open is a new process's: it migrates
    with open_store(settings) as store:
        signed = store.sign_up(
            [Signup(email="bob@example.org", key="bob@example.org")], double_opt_in=True
        )
        assert [r.action for r in signed] == ["pending"]
        assert [(s.id, s.email, s.status) for s in store.iter_all()] == [
            (1, "ann@example.org", "bounced"),
            (2, "bob@example.org", "pending"),
        ]
        assert [m.kind for m in store.due_mail(dt.datetime.now(dt.UTC), 10)] == ["confirm"]


@on_postgresql
def test_an_unsubscribe_queued_beside_the_config_is_applied_by_the_next_command(
    config_path: Path, store: SubscriberStore
) -> None:
    store.save(NewSubscriber("ann@example.com", "ann@example.com"))
    settings = load_config(config_path).subscribers
    queue = PendingUnsubscribes(settings)
    assert queue.path.parent == config_path.parent
    queue.add(QueuedUnsubscribe(key="ann@example.com", email="ann@example.com", reason="link"))
    listed = newsletter("subscribers", "list", config_path=config_path)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("ann@example.com\t\tfree\tunsubscribed")
    assert not queue.waiting()


@on_postgresql
def test_the_real_commands_import_list_and_send_on_a_postgresql_list(
    send_config: Path, smtp: SmtpServer, tmp_path: Path
) -> None:
    rows = "".join(
        f"reader{n}@example.org,Reader {n},{'paid' if n % 3 else 'free'}\n" for n in range(7)
    )
    csv_path = write_csv(tmp_path / "list.csv", "email,name,tier\n" + rows)
    imported = newsletter("subscribers", "import", csv_path, config_path=send_config)
    assert imported.returncode == 0, imported.stderr
    added = newsletter("subscribers", "add", "Ann@Example.org", config_path=send_config)
    assert added.stdout == "Added Ann@Example.org (free)\n"
    listed = newsletter("subscribers", "list", config_path=send_config)
    assert listed.stderr == "8 subscribers: 8 active, 0 unsubscribed, 0 bounced, 0 complained\n"

    sent = newsletter("send", EXAMPLE_MD, "--yes", config_path=send_config)
    assert sent.returncode == 0, sent.stderr
    assert len(smtp.messages()) == 8
    again = newsletter("send", EXAMPLE_MD, "--yes", config_path=send_config)
    assert again.returncode == 0, again.stderr
    assert len(smtp.messages()) == 8, "each reader gets the issue once"
    status = newsletter("status", EXAMPLE_MD, config_path=send_config)
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith("2024-05-03-example to all: complete\n")
    assert "│    8 │       0 │" in status.stdout


def fill(store: SubscriberStore, count: int) -> None:
    """``count`` readers, one unsubscribed, and one issue's record: a sent copy each; a
    soft bounce of one copy, a schedule a worker has started, and the suppression of a
    reader erased, whose signup since has queued a confirmation."""
    store.import_many(
        NewSubscriber(email=f"r{n}@example.org", key=f"r{n}@example.org", tier="paid")
        for n in range(count)
    )
    store.mark_status("r1@example.org", "unsubscribed", "asked")
    with store.deliveries("issue-1") as journal:
        journal.acquire("all")
        journal.record(
            Outcome(
                recipient=Recipient(email=s.email, key=s.key, tier=s.tier, subscriber_id=s.id),
                state="sent",
                attempts=1,
                code=250,
                retryable=n % 2 == 0,
                message_id=f"<{n}@news.example.com>",
            )
            for n, s in enumerate(store.iter_active())
        )
        journal.release("complete")
    when = dt.datetime(2024, 5, 3, 7, 0, tzinfo=dt.UTC)
    store.record_feedback(
        Feedback(
            kind="soft",
            source="mailbox",
            event_id="e1",
            reason="4.2.2 mailbox full",
            occurred_at=when,
            message_id="<3@news.example.com>",
        )
    )
    book = store.schedules()
    identity = IssueIdentity(slug="a", id="x1", content="c" * 64)
    scheduled = book.add(
        NewSchedule(
            path="issues/a.md", issue=identity, segment="paid", due_at=when, skip_check=True
        )
    )
    claim = WorkerClaim(owner="w", host="h", pid=7, started_at=when, heartbeat_at=1714719600.25)
    assert book.claim(scheduled, claim)
    store.save(NewSubscriber("gone@example.org", "gone@example.org"))
    assert store.erase("gone@example.org")
    gone = Signup(email="gone@example.org", key="gone@example.org")
    assert [r.action for r in store.sign_up([gone], double_opt_in=True)] == ["confirm_again"]


def snapshot(store: SubscriberStore) -> tuple[object, ...]:
    """Everything a copy must carry, read through the store."""
    found = store.find_delivery("<3@news.example.com>")
    return (
        list(store.iter_all()),
        store.count_by_status(),
        raw_sql(store, "SELECT id, subscriber_id, status, changed_at, reason FROM status_changes"),
        found,
        store.schedules().find(SCHEDULE_STATES),
        store.recent_feedback(),
        store.is_suppressed("gone@example.org"),
        store.due_mail(dt.datetime.now(dt.UTC) + dt.timedelta(days=1), 10),
    )


def copy_to(config_path: Path, destination: str) -> subprocess.CompletedProcess[str]:
    return newsletter(
        "db", "copy", "--to", destination, config_path=config_path, cwd=config_path.parent
    )


@on_postgresql
def test_db_copy_moves_a_list_from_sqlite_to_postgresql_and_back_and_again_changes_nothing(
    tmp_path: Path, database_setting: str
) -> None:
    sqlite_config = write_config(tmp_path, "subscribers.db")
    with open_store(load_config(sqlite_config).subscribers) as store:
        fill(store, 30)
        before = snapshot(store)

    to_server = copy_to(sqlite_config, database_setting)
    assert to_server.returncode == 0, to_server.stderr
    assert to_server.stdout.splitlines()[1:] == [
        "  subscribers: 30 rows, 30 in the copy",
        "  status_changes: 31 rows, 31 in the copy",
        "  dispatches: 1 rows, 1 in the copy",
        "  deliveries: 29 rows, 29 in the copy",
        "  schedules: 1 rows, 1 in the copy",
        "  feedback: 1 rows, 1 in the copy",
        "  suppressions: 1 rows, 1 in the copy",
        "  mail_queue: 1 rows, 1 in the copy",
    ]
    assert copy_to(sqlite_config, database_setting).stdout == to_server.stdout

    server_config = write_config(tmp_path / "server", database_setting)
    with open_store(load_config(server_config).subscribers) as server:
        assert snapshot(server)[:2] == before[:2]
        assert server.find_delivery("<3@news.example.com>") == before[3]
        assert snapshot(server)[4:] == before[4:]
        added, _ = server.save(NewSubscriber("new@example.org", "new@example.org"))
        assert added.id == 31, "new readers are numbered after the copied ones"

    back = copy_to(server_config, str(tmp_path / "back.db"))
    assert back.returncode == 0, back.stderr
    back_config = write_config(tmp_path / "back", str(tmp_path / "back.db"))
    with open_store(load_config(back_config).subscribers) as copy:
        assert list(copy.iter_all())[:30] == before[0]
        assert copy.find_delivery("<3@news.example.com>") == before[3]
        assert snapshot(copy)[4:] == before[4:]
        assert raw_sql(copy, "SELECT count(*) FROM status_changes") == [(32,)]
    again = copy_to(server_config, str(tmp_path / "back.db"))
    assert again.returncode == 0, again.stderr
    assert again.stdout == back.stdout, "copying back again changes nothing"


@on_postgresql
def test_db_copy_into_a_database_holding_another_list_or_more_is_an_error_naming_it(
    tmp_path: Path, database_setting: str, store: SubscriberStore
) -> None:
    sqlite_config = write_config(tmp_path / "sqlite", "subscribers.db")
    with open_store(load_config(sqlite_config).subscribers) as source:
        fill(source, 3)
    assert copy_to(sqlite_config, database_setting).returncode == 0
    store.save(NewSubscriber("later@example.org", "later@example.org"))
    more = copy_to(sqlite_config, database_setting)
    assert more.returncode == 2
    [line] = more.stderr.splitlines()
    assert line == (
        f"Error: {database_setting}: the copy does not match its source (subscribers: 3 in"
        " the source, 4 here; status_changes: 4 in the source, 5 here): copy into an empty"
        " database, or one copied from this same source before"
    )

    raw_sql(store, "UPDATE subscribers SET name = 'Someone else' WHERE id = 2")
    other = copy_to(sqlite_config, database_setting)
    assert other.returncode == 2
    [line] = other.stderr.splitlines()
    assert line.startswith(f"Error: {database_setting}: holds another list: 1 rows of subscribers")


@both_backends
def test_db_copy_onto_the_list_itself_is_refused(config_path: Path, database_setting: str) -> None:
    result = copy_to(config_path, database_setting)
    assert result.returncode == 2
    assert "that is the list itself" in result.stderr
