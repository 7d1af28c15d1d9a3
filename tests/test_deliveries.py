"""The delivery record behind the store interface, against each backend: its schema, who
is still to send, outcomes, Message-IDs and the lock; and SQLite's migration of it."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import get_args

import pytest

from composer.composing.load import load_issue
from composer.config import load_config
from composer.errors import DispatchLocked
from composer.sending.send import send_issue
from composer.store import NewSubscriber, SubscriberStore, open_store
from composer.store.deliveries import (
    LOCK_STALE_SECONDS,
    STATES,
    DispatchedIssue,
    IssueIdentity,
    Outcome,
    Recipient,
    State,
)
from composer.store.sqlite import MIGRATIONS, SqliteSubscriberStore
from tests.conftest import EXAMPLE_MD, both_backends, fast, integrity_error, raw_sql, subscribe

ISSUE = "2024-05-03-example"


def readers(store: SubscriberStore, count: int) -> list[Recipient]:
    """``count`` subscribers r<n>@example.org, every third free, as recipients."""
    store.import_many(
        NewSubscriber(
            email=f"r{n}@example.org", key=f"r{n}@example.org", tier="paid" if n % 3 else "free"
        )
        for n in range(count)
    )
    return [
        Recipient(email=s.email, key=s.key, name=s.name, tier=s.tier, subscriber_id=s.id)
        for s in store.iter_all()
    ]


def outcome(recipient: Recipient, state: State, **fields: object) -> Outcome:
    return Outcome(recipient=recipient, state=state, attempts=1, **fields)


def test_a_schema_2_database_with_deliveries_migrates_keeping_every_row(tmp_path: Path) -> None:
    path = tmp_path / "subscribers.db"
    with sqlite3.connect(path, isolation_level=None) as db:
        for number, script in enumerate(MIGRATIONS[:2], start=1):
            db.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")
        db.executemany(
            "INSERT INTO subscribers (email, key, tier, status, status_changed_at, created_at)"
            " VALUES (?, ?, 'free', 'active', '2024-05-01T00:00:00+00:00', '2024-05-01')",
            [(f"r{n}@example.org", f"r{n}@example.org") for n in range(1, 6)],
        )
        shipped_states = ("pending", "sending", "sent", "deferred", "failed")
        rows = [
            ("old-issue", n, f"r{n}@example.org", state, n, 250 + n, f"reply {n}", n % 2,
             f"2024-05-0{n}T10:00:00+00:00")
            for n, state in enumerate(shipped_states, start=1)
        ]  # fmt: skip
        rows.append(("older-issue", 1, "r1@example.org", "sent", 1, None, "", 0, "2024-04-01"))
        db.executemany("INSERT INTO deliveries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.close()

    SqliteSubscriberStore(path).close()

    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        kept = db.execute(
            "SELECT issue, subscriber_id, email, state, attempts, code, reply, retryable,"
            " updated_at FROM deliveries ORDER BY issue, subscriber_id"
        ).fetchall()
        assert kept == sorted(rows, key=lambda row: (row[0], row[1]))
        assert db.execute(
            "SELECT count(*) FROM deliveries WHERE message_id IS NULL"
        ).fetchone() == (len(rows),)
        indexes = {
            name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
        assert {"deliveries_by_state", "deliveries_by_message_id"} <= indexes
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()


@both_backends
def test_the_schema_holds_every_delivery_state_and_nothing_else(store: SubscriberStore) -> None:
    assert set(STATES) == set(get_args(State)) >= {"bounced", "complained", "unknown"}
    recipients = readers(store, len(STATES))
    with store.deliveries(ISSUE) as journal:
        journal.record(outcome(r, state) for r, state in zip(recipients, STATES, strict=True))
        assert journal.status().counts == dict.fromkeys(STATES, 1)
    with pytest.raises(integrity_error(store), match=r"(?i)check"):
        raw_sql(store, "UPDATE deliveries SET state = 'lost' WHERE subscriber_id = 1")


@both_backends
def test_recipients_are_those_still_to_send_by_state_and_segment(store: SubscriberStore) -> None:
    recipients = readers(store, 12)
    by_id = {r.subscriber_id: r for r in recipients}
    store.mark_status("r11@example.org", "unsubscribed", "asked")
    recorded: dict[int, tuple[State, bool]] = {
        1: ("sent", False),
        2: ("failed", False),  # a refused address
        3: ("failed", True),  # a temporary cause that ran out of attempts
        4: ("deferred", True),
        5: ("sending", False),  # in flight at a crash
        6: ("bounced", False),
        7: ("complained", False),
        8: ("unknown", False),
        9: ("pending", False),
    }
    with store.deliveries(ISSUE) as journal:
        journal.record(
            outcome(by_id[sid], state, retryable=retryable)
            for sid, (state, retryable) in recorded.items()
        )

        def ids(segment: str = "all", **options: object) -> list[int]:
            found = [r.subscriber_id for r in journal.recipients(segment, page_size=2, **options)]
            counted = journal.count_to_send(segment, **options)
            assert counted == len(found), ("the count keeps the stream's rules", options)
            return found

        assert ids() == [4, 5, 9, 10, 11]
        assert ids(retry_failed=True) == [3, 4, 5, 9, 10, 11], "unknown may have arrived"
        assert ids(retry_failed=True, include_unknown=True) == [3, 4, 5, 8, 9, 10, 11]
        assert ids(include_unknown=True) == [4, 5, 9, 10, 11], "only with --retry-failed"
        assert ids("free") == [4, 10]
        assert ids("paid", retry_failed=True, include_unknown=True) == [3, 5, 8, 9, 11]
        first = next(journal.recipients("all"))
        assert first == by_id[4], "a recipient carries the subscriber's address, key and tier"
    with store.deliveries("another-issue") as other:
        assert len(list(other.recipients("all"))) == 11, "each issue has its own record"


def test_recipients_are_read_a_page_at_a_time(store: SubscriberStore) -> None:
    readers(store, 100)
    with store.deliveries(ISSUE) as journal:
        reads: list[str] = []
        journal._reads.set_trace_callback(reads.append)
        stream = journal.recipients("all", page_size=10)
        taken = [next(stream) for _ in range(25)]
        assert [r.subscriber_id for r in taken] == list(range(1, 26))
        assert len(reads) == 3, "25 recipients need three pages of ten, not the whole list"


def test_counting_who_is_still_to_send_is_one_query_not_a_walk_of_the_list(
    store: SubscriberStore,
) -> None:
    recipients = readers(store, 100)
    with store.deliveries(ISSUE) as journal:
        journal.record(outcome(r, "sent") for r in recipients[:30])
        reads: list[str] = []
        journal._reads.set_trace_callback(reads.append)
        assert journal.count_to_send("all") == 70
        assert len(reads) == 1 and "count(*)" in reads[0]


@both_backends
def test_a_bounced_outcome_marks_an_active_subscriber_bounced_and_no_unsubscribed_one(
    store: SubscriberStore,
) -> None:
    first, second, third = readers(store, 3)
    store.mark_status(second.key, "unsubscribed", "asked")
    reply = "5.1.1 <r0@example.org>: no such user"
    with store.deliveries(ISSUE) as journal:
        journal.record(
            outcome(r, "failed", code=550, reply=reply, bounced=True) for r in (first, second)
        )
        journal.record([outcome(third, "sent", code=250)])
        failures = journal.status().failures
    assert store.get(first.key).status == "bounced"
    assert store.get(first.key).status_reason == f"bounced by {ISSUE}: 550 {reply}"
    assert store.get(second.key).status == "unsubscribed"
    assert store.get(third.key).status == "active"
    assert [(f.email, f.state, f.code, f.reply) for f in failures] == [
        (first.email, "failed", 550, reply),
        (second.email, "failed", 550, reply),
    ]


@both_backends
def test_a_message_id_recorded_with_sending_is_kept_and_finds_the_delivery_and_reader(
    store: SubscriberStore,
) -> None:
    ann, bob = readers(store, 2)
    with store.deliveries(ISSUE) as journal:
        journal.record([outcome(ann, "sending", message_id="<a@news.example.com>")])
        journal.record([outcome(ann, "deferred", code=451, reply="try later", retryable=True)])
        journal.record([outcome(ann, "sending", message_id="<a@news.example.com>")])
        journal.record([outcome(ann, "sent", code=250, reply="ok")])
        # Outcomes of one reader within one commit apply in order.
        journal.record(
            [
                outcome(bob, "deferred", code=421, reply="closing", retryable=True),
                outcome(bob, "sending", message_id="<b@news.example.com>"),
            ]
        )
    found = store.find_delivery("<a@news.example.com>")
    assert found is not None
    assert found.subscriber == store.get(ann.key)
    delivery = found.delivery
    assert (delivery.issue, delivery.subscriber_id, delivery.state) == (
        ISSUE,
        ann.subscriber_id,
        "sent",
    )
    assert (delivery.attempts, delivery.code, delivery.message_id) == (
        2,
        250,
        "<a@news.example.com>",
    )
    assert store.find_delivery("<b@news.example.com>").delivery.state == "sending"
    assert store.find_delivery("<nobody@news.example.com>") is None


@both_backends
def test_a_dispatch_records_the_message_id_each_reader_received(send_config: Path, smtp) -> None:
    subscribe(send_config, 5)
    config = load_config(send_config)
    send_issue(EXAMPLE_MD, config, "all", settings=fast(send_config))
    messages = smtp.messages()
    assert len(messages) == 5
    key = IssueIdentity.of(load_issue(EXAMPLE_MD)).key
    with open_store(config.subscribers) as store:
        for message in messages:
            found = store.find_delivery(str(message["Message-ID"]))
            assert found is not None, message["Message-ID"]
            assert found.delivery.state == "sent" and found.delivery.issue == key
            assert found.subscriber.email == message["To"].addresses[0].addr_spec


def test_one_holder_at_a_time_and_a_dead_holders_lock_is_taken_over(
    store: SubscriberStore,
) -> None:
    # SQLite: one process writes at a time. (On PostgreSQL a second process joins:
    # tests/test_workers.py.)
    with store.deliveries(ISSUE) as holder, store.deliveries(ISSUE) as other:
        holder.acquire("all")
        with pytest.raises(DispatchLocked, match=f"process {os.getpid()} on"):
            other.acquire("all")
        assert other.status().running
        holder.release("complete")
        other.acquire("all")
        other.release()
        assert other.status().last_result == "complete"

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    for host, pid, age in (
        (socket.gethostname(), gone.pid, 0.0),  # its process is gone
        ("elsewhere", 1, LOCK_STALE_SECONDS + 1),  # it stopped refreshing the lock
    ):
        raw_sql(store, "DELETE FROM dispatch_locks WHERE issue = ?", (ISSUE,))
        raw_sql(
            store,
            "INSERT INTO dispatch_locks VALUES (?, 'x', ?, ?, ?)",
            (ISSUE, host, pid, time.time() - age),
        )
        with store.deliveries(ISSUE) as journal:
            assert not journal.status().running
            journal.acquire("all")


@both_backends
def test_dispatched_issues_names_each_dispatch_a_copy_of_which_may_have_arrived(
    store: SubscriberStore,
) -> None:
    ann, bob = readers(store, 2)
    last: dict[str, State] = {
        "sent": "sent",
        "in-flight": "sending",
        "lost": "unknown",
        "refused": "failed",
        "waiting": "deferred",
    }
    for slug, state in last.items():
        identity = IssueIdentity(slug=slug, id="" if slug == "lost" else f"id-{slug}", content=slug)
        with store.deliveries(identity.key, identity) as journal:
            journal.acquire("all")
            journal.record([outcome(ann, "failed"), outcome(bob, state)])
    with store.deliveries("before-ids") as journal:  # recorded before ids: the file name
        journal.acquire("free")
        journal.record([outcome(ann, "sent")])
    with store.deliveries("id:nothing-yet", IssueIdentity(slug="x", id="x", content="x")) as j:
        j.acquire("all")

    assert sorted(store.dispatched_issues(), key=lambda found: found.slug) == [
        DispatchedIssue(slug="before-ids", id="", content=None),
        DispatchedIssue(slug="in-flight", id="id-in-flight", content="in-flight"),
        DispatchedIssue(slug="lost", id="", content="lost"),
        DispatchedIssue(slug="sent", id="id-sent", content="sent"),
    ]
