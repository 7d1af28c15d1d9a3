"""``send --workers N``: N processes on this machine send one dispatch together, this one
watching them.

start N ``newsletter send ISSUE --as-worker …`` processes, each a worker of the dispatch
  exactly as a ``send`` started on another machine is (:func:`~.send.send_issue`)
  → show the whole dispatch's progress, read from the store (not from any process)
  → once every worker has ended: their reports, one JSON line each, and where the
    dispatch stands, for the summary; a worker that died (killed, out of memory) left
    its claims to the others, and the summary says so

Ctrl-C or SIGTERM is passed on to every worker, which stops after its messages in flight.
The workers run in sessions of their own, so a terminal's Ctrl-C reaches them through
this process only, once. Only a list that several processes can send together (on
PostgreSQL) takes more than one.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from composer.config import Config
from composer.errors import NewsletterError
from composer.sending.dispatch import DispatchReport, Progress
from composer.sending.send import (
    PROGRESS_SECONDS,
    SendPlan,
    SendResult,
    WholeDispatchProgress,
    open_journal,
)
from composer.sending.stop import StopRequest
from composer.store import Segment, open_store


@dataclass(frozen=True, kw_only=True)
class WorkerOptions:
    """What each worker is started with: ``send``'s options, passed on as given."""

    segment: Segment
    concurrency: int | None = None
    rate: float | None = None
    retry_failed: bool = False
    include_unknown: bool = False
    again: bool = False

    def arguments(self) -> list[str]:
        """The command line options that ask a worker for the same dispatch."""
        arguments = ["--segment", self.segment]
        if self.concurrency is not None:
            arguments += ["--concurrency", str(self.concurrency)]
        if self.rate is not None:
            arguments += ["--rate", repr(self.rate)]
        for flag, given in (
            ("--retry-failed", self.retry_failed),
            ("--include-unknown", self.include_unknown),
            ("--again", self.again),
        ):
            if given:
                arguments.append(flag)
        return arguments


def several_can_send(config: Config) -> bool:
    """Whether the list is one that several processes can send together (PostgreSQL);
    a SQLite file is written by one process at a time."""
    return config.subscribers.database is None


def report_line(report: DispatchReport) -> str:
    """What a worker started by :func:`send_with_workers` prints when it ends: its
    report as one JSON line (the outcomes themselves are read from the store)."""
    return json.dumps(
        {
            "sent": report.sent,
            "failed": report.failed,
            "unknown": report.unknown,
            "deferred": report.deferred,
            "bounced": report.bounced,
            "stopped": report.stopped,
            "reason": report.reason,
        }
    )


def send_with_workers(
    issue_path: Path,
    config: Config,
    plan: SendPlan,
    options: WorkerOptions,
    workers: int,
    *,
    on_progress: Callable[[Progress], None] | None = None,
) -> SendResult:
    """Send the dispatch of ``plan`` with ``workers`` processes, each a worker of it, and
    wait for them all; their outcomes, counted from the store, are this run's."""
    command = [
        sys.executable,
        "-m",
        "composer",
        "send",
        str(issue_path),
        "--as-worker",
        # This process has checked the issue already; each worker composes it again.
        "--skip-check",
        *options.arguments(),
        "--config",
        str(config.path),
    ]
    with (
        open_store(config.subscribers) as store,
        open_journal(store, plan.issue.issue, again=options.again) as journal,
        tempfile.TemporaryDirectory(prefix="newsletter-workers-") as folder,
    ):
        progress = WholeDispatchProgress(journal, on_progress or (lambda counts: None))
        started = time.monotonic()
        crew = [_Worker.start(command, Path(folder) / str(n)) for n in range(workers)]
        stop = StopRequest()
        with stop.handling():
            passed_on = False
            while any(worker.running() for worker in crew):
                if stop.requested and not passed_on:
                    for worker in crew:
                        worker.interrupt()
                    passed_on = True
                if on_progress is not None:
                    on_progress(progress.read())
                stop.wait(PROGRESS_SECONDS)
        counts = progress.read()
        if on_progress is not None:
            on_progress(counts)
        status = journal.status()
        reports = [worker.report() for worker in crew]
        died = [worker for worker, report in zip(crew, reports, strict=True) if report is None]
        ended = tuple(worker.failure() for worker in died)
    if len(died) == len(crew):
        raise NewsletterError(ended[0])
    finished = [report for report in reports if report is not None]
    stopped = next((r for r in finished if r["stopped"]), None)
    left = status.counts["sending"] + status.counts["deferred"] + status.not_attempted
    reason = stopped["reason"] if stopped else ""
    if died and left and not stopped:
        reason = f"{ended[0]}; run the same command to send what it left"
    return SendResult(
        plan,
        DispatchReport(
            sent=counts.sent,
            failed=counts.failed,
            unknown=counts.unknown,
            deferred=sum(r["deferred"] for r in finished),
            bounced=sum(r["bounced"] for r in finished),
            stopped=stopped["stopped"] if stopped else ("paused" if reason else None),
            reason=reason,
            elapsed=time.monotonic() - started,
        ),
        status,
        ended=ended,
    )


class _Worker:
    """One worker process, its output in files (a pipe left unread could fill and
    block it)."""

    def __init__(self, process: subprocess.Popen[bytes], output: Path) -> None:
        self.process = process
        self.output = output

    @classmethod
    def start(cls, command: Sequence[str], output: Path) -> _Worker:
        with (
            output.with_suffix(".out").open("wb") as out,
            output.with_suffix(".err").open("wb") as err,
        ):
            process = subprocess.Popen(
                command, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True
            )
        return cls(process, output)

    def running(self) -> bool:
        return self.process.poll() is None

    def interrupt(self) -> None:
        if self.running():
            self.process.send_signal(signal.SIGINT)

    def report(self) -> dict[str, Any] | None:
        """The worker's report, or None when it ended without one (it died, or stopped
        with an error)."""
        lines = self.output.with_suffix(".out").read_text(errors="replace").splitlines()
        try:
            found = json.loads(lines[-1]) if lines else None
        except json.JSONDecodeError:
            return None
        return found if isinstance(found, dict) else None

    def failure(self) -> str:
        """Why the worker ended without a report, in one line."""
        code = self.process.returncode
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        errors = self.output.with_suffix(".err").read_text(errors="replace").strip()
        said = errors.splitlines()[-1].removeprefix("Error: ") if errors else ""
        return f"worker {self.process.pid} on this machine {how}" + (f": {said}" if said else "")
