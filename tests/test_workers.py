"""Several workers on one dispatch: on PostgreSQL, processes (here or on other machines)
claim the recipients apart, in batches under a lease; what a worker that is gone left
is taken over, at once when its process ends, once its lease runs out when it only
went silent; the rate holds for the dispatch as a whole; `send --workers N` starts N
processes and counts the whole dispatch. With SQLite one process sends."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from composer.composing.pipeline import compose_file
from composer.config import load_config
from composer.errors import DispatchLocked
from composer.sending.dispatch import MemoryJournal, dispatch
from composer.sending.personalise import MessageTemplate
from composer.sending.transport import SmtpTransport
from composer.store import NewSubscriber, SubscriberStore, open_store
from composer.store.deliveries import Lease, Recipient
from composer.unsubscribe import UnsubscribeLinks
from tests.conftest import (
    EXAMPLE_MD,
    ROOT,
    SECRET,
    fast,
    newsletter_command,
    raw_sql,
    subscribe,
    with_settings,
)
from tests.smtp_server import CountingServer, SmtpServer

on_postgresql = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
ISSUE = "issue-7"


def fill(store: SubscriberStore, count: int) -> list[int]:
    """``count`` readers r<n>@example.org; their ids."""
    store.import_many(
        (
            NewSubscriber(email=f"r{n}@example.org", key=f"r{n}@example.org", tier="paid")
            for n in range(count)
        ),
        batch_size=5000,
    )
    return [s.id for s in store.iter_all(batch_size=5000)]


def ids(recipients: list[Recipient]) -> list[int]:
    return [r.journal_id for r in recipients]


@on_postgresql
def test_a_second_process_joins_the_dispatch_and_the_two_claim_apart(
    store: SubscriberStore,
) -> None:
    everyone = fill(store, 50)
    with store.deliveries(ISSUE) as first, store.deliveries(ISSUE) as second:
        first.acquire("all")
        second.acquire("all")
        claimed = [first.claim("all", batch=20), second.claim("all", batch=20)]
        claimed.append(first.claim("all", batch=20))
        assert second.claim("all", batch=20) == []
        assert sorted(ids(claimed[0] + claimed[1] + claimed[2])) == everyone
        assert ids(claimed[1]) == everyone[20:40], "each claim is a range of its own"
        crew = first.workers()
        assert [(w.state, w.alive, w.claimed) for w in crew] == [
            ("sending", True, 30),
            ("sending", True, 20),
        ]
        assert first.lease().lost == ""
        assert first.status().running
        first.release("complete", settled=True)
        second.release("complete", settled=True)
        assert not first.status().running
        assert [w.state for w in first.workers()] == ["done", "done"]


@on_postgresql
def test_joining_a_dispatch_sent_to_another_segment_is_refused_naming_it(
    store: SubscriberStore,
) -> None:
    with store.deliveries(ISSUE) as first, store.deliveries(ISSUE) as second:
        first.acquire("paid")
        with pytest.raises(DispatchLocked, match=r"being sent to paid by process \d+ on .*"):
            second.acquire("free")
        second.acquire("paid")


# Joins dispatch issue-7 of the list in argv[1] with a lease of argv[2] seconds, claims
# argv[3] recipients and prints their ids; then, at each line on stdin, its lease.
HOLD_A_BATCH = """
import sys
from pathlib import Path
from composer.composing.pipeline import compose_file
from composer.config import load_config
from composer.store import open_store
with open_store(load_config(Path(sys.argv[1])).subscribers) as store:
    journal = store.deliveries("issue-7")
    journal.acquire("all", lease_seconds=float(sys.argv[2]))
    claimed = journal.claim("all", batch=int(sys.argv[3]))
    print(" ".join(str(r.subscriber_id) for r in claimed), flush=True)
    for _ in sys.stdin:
        print(journal.lease().lost or "kept", flush=True)
"""


def hold_a_batch(config_path: Path, lease: float, batch: int) -> tuple[subprocess.Popen, list[int]]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_A_BATCH, str(config_path), str(lease), str(batch)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    return holder, [int(n) for n in holder.stdout.readline().split()]


@on_postgresql
def test_a_worker_killed_on_another_machine_is_taken_over_at_once_not_after_its_lease(
    store: SubscriberStore, config_path: Path
) -> None:
    everyone = fill(store, 30)
    holder, held = hold_a_batch(config_path, lease=600, batch=10)
    assert held == everyone[:10]
    # As if it ran on another machine: its pid cannot be checked from here.
    raw_sql(store, "UPDATE dispatch_workers SET host = 'elsewhere'")
    with store.deliveries(ISSUE) as journal:
        journal.acquire("all")
        assert ids(journal.claim("all", batch=10)) == everyone[10:20], "its batch is its own"
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        # The server ends its session at once, and with it the worker: no lease to wait out.
        deadline = time.monotonic() + 10
        while journal.workers()[0].alive:
            assert time.monotonic() < deadline, "the server never saw the worker's session end"
            time.sleep(0.05)
        assert ids(journal.claim("all", batch=10)) == everyone[:10]
        [gone, this] = journal.workers()
        assert (gone.host, gone.pid, gone.state, gone.claimed) == (
            "elsewhere",
            holder.pid,
            "gone",
            10,
        )
        assert (this.state, this.claimed) == ("sending", 20)
        journal.release("complete", settled=True)


@on_postgresql
def test_a_worker_that_goes_silent_loses_its_claims_once_its_lease_runs_out(
    store: SubscriberStore, config_path: Path
) -> None:
    everyone = fill(store, 30)
    holder, held = hold_a_batch(config_path, lease=1, batch=10)
    assert holder.stdin is not None and holder.stdout is not None
    try:
        # A machine cut off, or frozen: its session stays open, its heartbeat stops.
        holder.send_signal(signal.SIGSTOP)
        with store.deliveries(ISSUE) as journal:
            journal.acquire("all")
            assert ids(journal.claim("all", batch=10)) == everyone[10:20], "not yet"
            time.sleep(1.5)
            assert ids(journal.claim("all", batch=10)) == held, "its lease ran out"
            assert [w.state for w in journal.workers()] == ["gone", "sending"]
            holder.send_signal(signal.SIGCONT)
            time.sleep(1.0)
            holder.stdin.write("\n")
            holder.stdin.flush()
            # Back, it knows its claims are another's: its dispatch would pause.
            assert "another worker took over" in holder.stdout.readline()
            journal.release("complete", settled=True)
    finally:
        holder.send_signal(signal.SIGCONT)
        holder.kill()
        holder.wait(timeout=10)


def test_workers_share_the_rate_and_one_whose_lease_is_lost_starts_no_more_messages(
    send_config: Path, smtp: SmtpServer
) -> None:
    config = load_config(send_config)
    template = MessageTemplate.build(
        compose_file(EXAMPLE_MD, config, "paid"), config, links=UnsubscribeLinks.from_config(config)
    )
    readers = [
        Recipient(email=f"r{n}@example.org", key=f"r{n}@example.org", tier="paid")
        for n in range(11)
    ]
    settings = fast(send_config, rate_per_second=50.0, lease_poll_seconds=0.01)

    def send(lease):
        transport = SmtpTransport.from_settings(config.smtp)
        return asyncio.run(
            dispatch(readers, template.render, transport, MemoryJournal(), settings, lease=lease)
        )

    started = time.monotonic()
    assert send(lambda: Lease(workers=2)).sent == 11
    assert time.monotonic() - started >= 0.36, "50 a second among two: 25 each"

    seen = smtp.handler.attempts.total()
    lost = "another worker took over this one's recipients"
    report = send(lambda: Lease(lost=lost if smtp.handler.attempts.total() >= seen + 3 else ""))
    assert report.stopped == "paused" and report.reason == lost
    assert report.sent < 11 and smtp.handler.attempts.total() - seen <= 3 + settings.concurrency


QUICK_ISSUE = """\
+++
title = "A short one"
date = 2024-06-01
preheader = "Two lines for many readers, to count them quickly at the other end"
+++

A lede for everyone.

## What happened

One paragraph.
"""


@pytest.fixture
def counting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, send_config: Path):
    """A counting SMTP server, and the test config pointed at it."""
    server = CountingServer()
    with_settings(send_config, "smtp", port=server.port, timeout=5)
    yield server
    server.close()


@on_postgresql
def test_three_workers_one_killed_half_way_every_reader_gets_it_duplicates_only_in_flight(
    send_config: Path, counting: CountingServer, write_issue
) -> None:
    everyone = 10_000
    store = open_store(load_config(send_config).subscribers)
    fill(store, everyone)
    issue = write_issue(QUICK_ISSUE)
    env = {**os.environ, "NEWSLETTER_SECRET": SECRET}
    command = newsletter_command(
        "send", issue, "--yes", "--skip-check", "--workers", "3", "--concurrency", "4",
        config_path=send_config,
    )  # fmt: skip
    parent = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    # Generous: the whole test took 40-55 s on this busy 2-core machine.
    deadline = time.monotonic() + 120
    while counting.received.total() < everyone // 2:
        assert parent.poll() is None, parent.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    [[victim]] = raw_sql(store, "SELECT pid FROM dispatch_workers ORDER BY started_at LIMIT 1")
    os.kill(victim, signal.SIGKILL)
    out, err = parent.communicate(timeout=180)

    received = counting.received
    assert len(received) == everyone, "every reader gets the issue"
    duplicates = received.total() - everyone
    assert duplicates <= 4, f"{duplicates} duplicates: at most the killed worker's in flight"
    assert f"worker {victim} on this machine was killed by signal 9" in err
    assert parent.returncode == 0, err
    assert f"Sent to all {everyone:,} recipients." in out

    status = subprocess.run(
        newsletter_command("status", issue, config_path=send_config),
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    lines = [line for line in status.stdout.splitlines() if line.startswith("  process")]
    assert len(lines) == 3
    [dead] = [line for line in lines if f"process {victim} " in line]
    assert "gone" in dead and "taken over by the others" in dead, dead
    assert "left " in dead
    assert "complete" in status.stdout.splitlines()[0]
    store.close()


def test_with_sqlite_workers_3_sends_once_to_everyone_in_one_process(
    send_config: Path, smtp: SmtpServer
) -> None:
    addresses = subscribe(send_config, 12)
    env = {**os.environ, "NEWSLETTER_SECRET": SECRET}
    result = subprocess.run(
        newsletter_command("send", EXAMPLE_MD, "--yes", "--workers", "3", config_path=send_config),
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "--workers 3: a SQLite list is sent by one process" in result.stdout
    assert smtp.received() == dict.fromkeys(addresses, 1)
