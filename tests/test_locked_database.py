"""Another process holding the subscriber database's write lock (a real ``BEGIN
IMMEDIATE`` in a process of its own): each command says so in one line, reading waits
for nothing, and ``serve`` keeps every unsubscribe it answers for, applying it once the
lock is free."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from composer.config import Config, load_config
from composer.errors import JournalError, StoreBusy
from composer.store import NewSubscriber, SubscriberStore, open_store
from composer.store.pending import PendingUnsubscribes, QueuedUnsubscribe
from composer.unsubscribe import UnsubscribeLinks
from tests.conftest import EXAMPLE_MD, newsletter, newsletter_command, write_csv
from tests.smtp_server import SmtpServer

HOLD_THE_LOCK = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
db.execute("ROLLBACK")
"""


@contextmanager
def write_lock(database: Path) -> Iterator[None]:
    """Another process holds ``database``'s write lock until the block ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_LOCK, str(database)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert holder.stdout.readline() == "locked\n"
        yield
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)


def statuses(store: SubscriberStore) -> dict[str, str]:
    return {s.email: s.status for s in store.iter_all()}


def test_each_subscriber_command_is_one_line_naming_the_file_while_another_writes(
    config_path: Path, config: Config, store: SubscriberStore, tmp_path: Path
) -> None:
    store.save(NewSubscriber("ann@example.org", "ann@example.org"))
    database = config.subscribers.database
    csv_path = write_csv(tmp_path / "list.csv", "email\nbob@example.org\n")
    commands = {
        "add": ("subscribers", "add", "cat@example.org"),
        "remove": ("subscribers", "remove", "ann@example.org"),
        "import": ("subscribers", "import", csv_path),
    }
    with write_lock(database):
        # Side by side: each waits out the same lock.
        running = {
            name: subprocess.Popen(
                newsletter_command(*args, config_path=config_path),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name, args in commands.items()
        }
        ended = {}
        for name, process in running.items():
            _, err = process.communicate(timeout=60)
            ended[name] = (process.returncode, err)
    for name, (code, err) in ended.items():
        assert code == 2, (name, err)
        [line] = err.splitlines()
        assert line.startswith(f"Error: {database}: the subscriber database is busy"), line
        assert "try again" in line or "import the same file again" in line, line
    assert "0 rows were saved" in ended["import"][1]
    assert statuses(store) == {"ann@example.org": "active"}, "nothing was written"

    for name, args in commands.items():
        assert newsletter(*args, config_path=config_path).returncode == 0, name
    assert statuses(store) == {
        "ann@example.org": "unsubscribed",
        "cat@example.org": "active",
        "bob@example.org": "active",
    }


def test_reading_the_list_waits_for_no_writer(
    config_path: Path, config: Config, store: SubscriberStore
) -> None:
    store.save(NewSubscriber("ann@example.org", "ann@example.org"))
    with write_lock(config.subscribers.database):
        started = time.monotonic()
        listing = newsletter("subscribers", "list", config_path=config_path)
        assert listing.returncode == 0, listing.stderr
        assert time.monotonic() - started < 4, "the 5 s wait is for writes only"
    assert listing.stdout.startswith("ann@example.org\t")


def test_an_unsubscribe_while_another_writes_is_answered_kept_and_applied_once_it_is_free(
    server: httpx.Client, config: Config, store: SubscriberStore
) -> None:
    for email in ("ann@example.com", "bob@example.com"):
        store.save(NewSubscriber(email, email))
    links = UnsubscribeLinks.from_config(config)
    base = config.newsletter.base_url
    ann = links.url("ann@example.com", "issue-7").removeprefix(base)
    bob = links.url("bob@example.com", "issue-7").removeprefix(base)
    one_click = {"List-Unsubscribe": "One-Click"}
    queue = PendingUnsubscribes(config.subscribers)

    with write_lock(config.subscribers.database):
        answered = server.post(ann, data=one_click, timeout=30)
        assert answered.status_code == 200
        assert "You are unsubscribed" in answered.text and "ann@example.com" in answered.text
        assert queue.waiting() and store.get("ann@example.com").status == "active"
        # The reader who opens the link again is told it is done; the next one joins
        # the queue at once, without waiting for the lock again.
        assert "already unsubscribed" in server.get(ann).text
        started = time.monotonic()
        assert server.post(bob, data=one_click, timeout=30).status_code == 200
        assert time.monotonic() - started < 2
        time.sleep(1.5)  # retries come and go while the lock is held
        assert statuses(store) == {"ann@example.com": "active", "bob@example.com": "active"}

    deadline = time.monotonic() + 20
    while any(status == "active" for status in statuses(store).values()):
        assert time.monotonic() < deadline, "the queued unsubscribes were never applied"
        time.sleep(0.1)
    assert not queue.waiting()
    assert store.get("ann@example.com").status_reason == "unsubscribe link in issue-7"


def test_a_queued_unsubscribe_outlives_the_server_and_the_next_command_applies_it(
    run_cli, config: Config, store: SubscriberStore
) -> None:
    store.save(NewSubscriber("ann@example.com", "ann@example.com"))
    queue = PendingUnsubscribes(config.subscribers)
    queue.add(QueuedUnsubscribe(key="ann@example.com", email="ann@example.com", reason="link"))
    assert queue.path.stat().st_mode & 0o077 == 0, "personal data: the owner's alone"

    listed = run_cli("subscribers", "list", "--status", "unsubscribed")
    assert listed.exit_code == 0, listed.output
    assert "ann@example.com\t" in listed.output
    assert "applied 1 unsubscribe accepted while the database was busy" in listed.output
    assert not queue.waiting()


def test_a_send_while_another_writes_does_not_start_with_an_unsubscribe_still_queued(
    send_config: Path, smtp: SmtpServer
) -> None:
    config = load_config(send_config)
    with open_store(config.subscribers) as store:
        for email in ("ann@example.com", "bob@example.com"):
            store.save(NewSubscriber(email, email))
    queue = PendingUnsubscribes(config.subscribers)
    queue.add(QueuedUnsubscribe(key="ann@example.com", email="ann@example.com", reason="link"))

    with write_lock(config.subscribers.database):
        sending = subprocess.Popen(
            newsletter_command("send", EXAMPLE_MD, "--yes", config_path=send_config),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Held past the 5 s an unsubscribe waits, then let go while a send that went on
        # regardless would still be waiting (10 s) to take its dispatch lock.
        with contextlib.suppress(subprocess.TimeoutExpired):
            sending.wait(timeout=12)
    _, err = sending.communicate(timeout=60)

    assert sending.returncode == 2, err
    [line] = err.splitlines()
    assert line.startswith(f"Error: {config.subscribers.database}: the subscriber database is busy")
    assert str(queue.path) in line and "try again" in line
    assert smtp.messages() == [], "nothing was sent"
    assert queue.waiting()


def test_releasing_a_dispatch_lock_while_another_writes_is_one_line_naming_the_file(
    config: Config, store: SubscriberStore
) -> None:
    database = config.subscribers.database
    with store.deliveries("issue-7") as journal:
        journal.acquire("all")
        with write_lock(database), pytest.raises(JournalError) as raised:
            journal.release("complete")
        [line] = raised.value.message.splitlines()
        assert line.startswith(f"{database}: the subscriber database is busy"), line
        assert "the dispatch lock of issue-7 was not released" in line
        assert isinstance(raised.value.__cause__, StoreBusy)
    # Still recorded as this live process's: a later run takes it over once it has ended.
    with store.deliveries("issue-7") as later:
        assert later.status().running
