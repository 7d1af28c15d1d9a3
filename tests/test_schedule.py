"""Scheduled dispatches and ``newsletter worker``: the real commands in subprocesses, a real
SQLite file (and, for the store's compare-and-set, the commands and the worker, a real
PostgreSQL database too), a real SMTP server (aiosmtpd) counting what each reader received."""

from __future__ import annotations

import datetime as dt
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from composer.cli import cli
from composer.config import load_config
from composer.errors import ScheduleError
from composer.sending.schedule import parse_due, schedule_issue
from composer.sending.send import dispatch_status
from composer.store import open_store
from composer.store.deliveries import IssueIdentity
from composer.store.schedules import NewSchedule, Schedule, WorkerClaim, is_abandoned
from tests.conftest import (
    EXAMPLE_MD,
    ROOT,
    both_backends,
    newsletter,
    newsletter_command,
    subscribe,
)


@pytest.fixture
def issue(tmp_path: Path) -> Path:
    """The example issue inside the newsletter's folder (next to the test config)."""
    path = tmp_path / "issues" / "2024-05-03-example.md"
    path.parent.mkdir()
    shutil.copy(EXAMPLE_MD, path)
    return path


@pytest.fixture
def workers(tmp_path: Path, send_config: Path) -> Iterator[Callable[..., Worker]]:
    """Start ``newsletter worker --poll 0.1`` processes; each is killed at the end."""
    started: list[Worker] = []

    def start() -> Worker:
        worker = Worker(tmp_path / f"worker-{len(started)}.log", send_config)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait()


class Worker:
    """A real ``newsletter worker`` whose output goes to ``log``."""

    def __init__(self, log: Path, config_path: Path) -> None:
        self.log = log
        with log.open("w") as out:
            self.process = subprocess.Popen(
                newsletter_command("worker", "--poll", "0.1", config_path=config_path),
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_until(lambda: "watching" in self.output(), what=f"{log.name} to start")

    def output(self) -> str:
        return self.log.read_text()

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout=15)


def wait_until(done: Callable[[], object], *, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"waited {timeout}s for {what}"
        time.sleep(0.02)


def schedules(config_path: Path) -> list[Schedule]:
    with open_store(load_config(config_path).subscribers) as store:
        return store.schedules().find(("scheduled", "started", "done", "cancelled", "failed"))


def due_now(config_path: Path, issue: Path, in_seconds: float = 0.0) -> Schedule:
    """Schedule ``issue`` through the library (``--at`` refuses a past time)."""
    due = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=in_seconds)
    return schedule_issue(issue, load_config(config_path), due, "all").schedule


def state_of(config_path: Path, schedule: Schedule) -> str:
    return next(s.state for s in schedules(config_path) if s.id == schedule.id)


# -- schedule, --list, --cancel ---------------------------------------------------------------


@both_backends
def test_schedule_records_the_dispatch_lists_it_replaces_it_and_cancels_it(
    send_config, smtp, issue, tmp_path
):
    subscribe(send_config, 6)
    env = {**os.environ, "TZ": "Europe/Berlin"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            newsletter_command(*args, config_path=send_config),
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    first = run("schedule", "issues/2024-05-03-example.md", "--at", "2099-05-03T07:00+02:00")
    assert first.returncode == 0, first.stderr
    [line] = first.stdout.splitlines()
    assert "Scheduled #1:" in line and "issues/2024-05-03-example.md" in line
    assert "the 6 subscribers of segment all" in line
    assert "2099-05-03 07:00 CEST (05:00 UTC)" in line, "local time and UTC"

    second = run("schedule", "issues/2024-05-03-example.md", "--at", "2099-05-04T05:00Z",
                 "--segment", "paid")  # fmt: skip
    assert second.returncode == 0, second.stderr
    assert "the 2 subscribers of segment paid" in second.stdout
    assert "replaces #1 (was 2099-05-03 07:00 CEST" in second.stdout

    listed = run("schedule", "--list").stdout
    upcoming, recent = listed.split("Recent:")
    assert "#2" in upcoming and "scheduled" in upcoming and "paid" in upcoming
    assert "#1" not in upcoming and "replaced by #2" in recent

    cancelled = run("schedule", "--cancel", "issues/2024-05-03-example.md")
    assert cancelled.returncode == 0 and cancelled.stdout.startswith("Cancelled #2:")
    again = run("schedule", "--cancel", "issues/2024-05-03-example.md")
    assert again.returncode == 1
    assert again.stderr.splitlines() == [
        "Error: issues/2024-05-03-example.md: no dispatch of it is scheduled, so nothing was"
        " cancelled; `newsletter schedule --list` shows what is"
    ]
    assert [s.state for s in schedules(send_config)] == ["cancelled", "cancelled"]
    assert smtp.messages() == []


def test_a_time_without_an_offset_is_refused_naming_the_offset_to_add(send_config, issue):
    result = newsletter(
        "schedule", issue, "--at", "2099-01-15T07:00", config_path=send_config
    )  # fmt: skip
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    here = dt.datetime(2099, 1, 15, 7, 0).astimezone().isoformat(timespec="minutes")
    assert "has no UTC offset" in line and f"--at {here}" in line and "Z is UTC" in line
    assert schedules(send_config) == []


def test_a_time_in_the_past_is_refused():
    now = dt.datetime(2024, 5, 3, 6, 0, tzinfo=dt.UTC)
    assert parse_due("2024-05-03T07:00+02:00", now - dt.timedelta(hours=2)) == dt.datetime(
        2024, 5, 3, 5, 0, tzinfo=dt.UTC
    )
    with pytest.raises(ScheduleError, match="is in the past"):
        parse_due("2024-05-03T07:00+02:00", now)


def test_schedule_refuses_an_issue_check_finds_errors_in_unless_skip_check(
    send_config, write_issue
):
    path = write_issue("+++\ntitle = 'Draft'\ndate = 2024-05-03\n+++\n\nTK\n", "draft.md")
    refused = newsletter("schedule", path, "--at", "2099-01-01T00:00Z", config_path=send_config)
    assert refused.returncode == 1 and "check error" in refused.stderr
    assert schedules(send_config) == []
    taken = newsletter("schedule", path, "--at", "2099-01-01T00:00Z", "--skip-check",
                       config_path=send_config)  # fmt: skip
    assert taken.returncode == 0, taken.stderr
    [scheduled] = schedules(send_config)
    assert scheduled.skip_check


def test_a_schedule_a_worker_is_sending_can_be_neither_replaced_nor_cancelled(send_config, issue):
    scheduled = due_now(send_config, issue)
    with open_store(load_config(send_config).subscribers) as store:
        claim = WorkerClaim(
            owner="w",
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=dt.datetime.now(dt.UTC),
            heartbeat_at=time.time(),
        )
        assert store.schedules().claim(scheduled, claim)
    again = newsletter("schedule", issue, "--at", "2099-01-01T00:00Z", config_path=send_config)
    cancel = newsletter("schedule", "--cancel", issue, config_path=send_config)
    for refused in (again, cancel):
        assert refused.returncode == 1
        [line] = refused.stderr.splitlines()
        assert f"worker {os.getpid()} on {socket.gethostname()} is sending it since" in line
    assert [s.state for s in schedules(send_config)] == ["started"]


# -- the store's compare-and-set ------------------------------------------------------------


@both_backends
def test_a_schedule_is_claimed_once_and_only_a_gone_workers_claim_is_taken_over(config):
    identity = IssueIdentity(slug="a", id="x1", content="c" * 64)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)  # as stored
    with open_store(config.subscribers) as store:
        book = store.schedules()
        read = book.add(NewSchedule(path="issues/a.md", issue=identity, segment="all", due_at=now))
        mine = WorkerClaim(owner="a", host="h", pid=1, started_at=now, heartbeat_at=time.time())
        theirs = replace(mine, owner="b")
        assert book.claim(read, mine)
        assert not book.claim(read, theirs), "read before the first claim: changes nothing"
        assert not book.end(read, "cancelled", ""), "started meanwhile: not cancelled"
        [held] = book.find(("started",))
        assert held.claim == mine
        old = replace(mine, host="elsewhere", heartbeat_at=time.time() - 301)
        assert is_abandoned(replace(held, claim=old), time.time(), socket.gethostname())
        assert book.claim(held, theirs), "taken over from the claim as read"
        assert not book.end(held, "done", "late"), "the old claim no longer holds it"
        [now_held] = book.find(("started",))
        assert book.end(now_held, "done", "sent 3")
        assert [s.state for s in book.find(("done",))] == ["done"]


# -- the worker -----------------------------------------------------------------------------


@both_backends
def test_the_worker_sends_a_due_schedule_to_each_reader_once_and_stops_on_sigterm(
    send_config, smtp, issue, workers
):
    addresses = subscribe(send_config, 12)
    worker = workers()
    scheduled = due_now(send_config, issue)
    wait_until(lambda: state_of(send_config, scheduled) == "done", what="the dispatch")
    assert smtp.received() == dict.fromkeys(addresses, 1)
    assert worker.stop() == 0
    log = worker.output()
    assert "#1 issues/2024-05-03-example.md: sending to 12 of 12 subscribers" in log
    assert "done: sent 12" in log and log.rstrip().endswith("stopped")
    assert "Traceback" not in log


@both_backends
def test_two_workers_and_one_due_schedule_make_one_dispatch(send_config, smtp, issue, workers):
    addresses = subscribe(send_config, 20)
    first, second = workers(), workers()
    scheduled = due_now(send_config, issue, in_seconds=1.0)
    wait_until(lambda: state_of(send_config, scheduled) == "done", what="the dispatch")
    time.sleep(0.5)  # the other worker's next polls
    assert smtp.received() == dict.fromkeys(addresses, 1)
    logs = first.output() + second.output()
    assert logs.count("sending to 20") == 1, logs
    assert "failed" not in logs, "the other worker never tried (the dispatch lock turned it away)"
    assert first.stop() == 0 and second.stop() == 0


@both_backends
def test_a_worker_killed_mid_dispatch_is_resumed_by_another_with_at_most_the_in_flight_twice(
    send_config, smtp, issue, workers
):
    addresses = subscribe(send_config, 120)
    smtp.handler.data_delay = 0.004
    killed = workers()
    scheduled = due_now(send_config, issue)
    wait_until(lambda: len(smtp.folder.messages()) >= 30, what="30 messages")
    killed.stop(signal.SIGKILL)
    assert len(smtp.folder.messages()) < 120
    assert state_of(send_config, scheduled) == "started"

    resumer = workers()
    wait_until(lambda: state_of(send_config, scheduled) == "done", what="the resumed dispatch")
    received = smtp.received()
    assert set(received) == set(addresses), "no one is skipped"
    duplicates = sum(received.values()) - len(addresses)
    assert duplicates <= 2, f"{duplicates} duplicates with 2 connections ([send] concurrency)"
    assert f"resuming the dispatch of worker {killed.process.pid} on" in resumer.output()
    assert resumer.stop() == 0


def test_sigterm_mid_dispatch_records_the_messages_in_flight_and_the_next_worker_resumes(
    send_config, smtp, issue, workers
):
    addresses = subscribe(send_config, 120)
    smtp.handler.data_delay = 0.004
    stopped = workers()
    scheduled = due_now(send_config, issue)
    wait_until(lambda: len(smtp.folder.messages()) >= 20, what="20 messages")
    assert stopped.stop() == 0
    stored = len(smtp.folder.messages())
    assert stored < 120
    status = dispatch_status(issue, load_config(send_config))
    assert status.counts["sent"] == stored and status.counts["sending"] == 0
    assert status.last_result.startswith("interrupted"), "the lock was released with the result"
    assert state_of(send_config, scheduled) == "scheduled"
    assert "stopped after the messages in flight" in stopped.output()

    resumer = workers()
    wait_until(lambda: state_of(send_config, scheduled) == "done", what="the resumed dispatch")
    assert smtp.received() == dict.fromkeys(addresses, 1), "a clean stop duplicates no one"
    assert resumer.stop() == 0


def test_an_issue_edited_after_scheduling_is_sent_as_it_is_now_and_the_log_says_so(
    send_config, smtp, issue, workers
):
    subscribe(send_config, 2)
    due_now(send_config, issue)
    issue.write_text(issue.read_text().replace("Good morning.", "Good evening."))
    worker = workers()
    wait_until(lambda: "done:" in worker.output(), what="the end of the dispatch")
    assert "the file changed since it was scheduled: sending it as it is now" in worker.output()
    bodies = [m.get_body(("plain",)).get_content() for m in smtp.messages()]
    assert len(bodies) == 2 and all("Good evening." in body for body in bodies)
    assert worker.stop() == 0


def test_a_file_that_holds_another_issue_by_then_fails_its_schedule_and_sends_nothing(
    send_config, smtp, issue, workers
):
    subscribe(send_config, 2)
    issue.write_text('+++\nid = "first"\n' + issue.read_text().removeprefix("+++\n"))
    scheduled = due_now(send_config, issue, in_seconds=0.5)
    issue.write_text(issue.read_text().replace('id = "first"', 'id = "second"'))
    worker = workers()
    wait_until(lambda: state_of(send_config, scheduled) == "failed", what="the failure")
    [failed] = [s for s in schedules(send_config) if s.id == scheduled.id]
    assert "holds another issue now (id 'second', scheduled with id 'first')" in failed.note
    assert smtp.messages() == []
    assert worker.stop() == 0


# -- the example systemd unit ------------------------------------------------------------------


UNIT = ROOT / "contrib" / "newsletter-worker.service"


def test_the_example_unit_runs_the_worker_command_and_systemd_accepts_it(tmp_path):
    lines = UNIT.read_text().splitlines()
    [exec_start] = [
        line.removeprefix("ExecStart=") for line in lines if line.startswith("ExecStart=")
    ]
    program, *args = shlex.split(exec_start)
    assert program.endswith("/newsletter") and args[0] == "worker"
    cli.commands["worker"].make_context("newsletter worker", args[1:])  # its options exist
    for hardening in ("NoNewPrivileges=yes", "ProtectSystem=strict", "Restart=on-failure"):
        assert hardening in lines
    assert any(line.startswith(("WorkingDirectory=", "EnvironmentFile=")) for line in lines)
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    copy = tmp_path / "newsletter-worker.service"
    shutil.copy(UNIT, copy)
    verified = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    complaints = [
        line
        for line in (verified.stdout + verified.stderr).splitlines()
        if "is not executable" not in line  # /srv/newsletter is an example path
    ]
    assert complaints == []
