"""What ``send``, ``send-test`` and ``status`` print: the confirmation, the live
progress bar, the summary and the status table, with rich. Only counts and replies
come in; nothing here sends or records anything."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from composer.sending.dispatch import DispatchReport
from composer.sending.dispatch import Progress as Counts
from composer.sending.send import SendPlan, SendResult
from composer.store.deliveries import DispatchStatus, DispatchWorker
from composer.store.feedback import FeedbackCounts

console = Console(highlight=False)
errors = Console(stderr=True, highlight=False)


def confirm_plan(plan: SendPlan, *, dry_run: bool, assume_yes: bool) -> bool:
    """Show what is about to happen; True when it should go ahead."""
    issue = plan.issue.issue
    console.print(f"Issue:    {plan.issue.subject} ({issue.slug})")
    console.print(f"Segment:  {plan.segment}: {plan.active:,} active subscribers")
    if plan.done:
        console.print(f"Already:  {plan.done:,} recorded as sent, failed or unknown, skipped")
    plural = "" if plan.to_send == 1 else "s"
    console.print(f"To send:  {plan.to_send:,} message{plural} via {plan.server}")
    if dry_run:
        console.print("Dry run: nothing sent.")
        return False
    if plan.to_send == 0:
        console.print("Nothing to send.")
        return False
    return assume_yes or click.confirm(f"Send to {plan.to_send:,} subscribers?", default=False)


class ProgressDisplay:
    """A live bar: sent of total, deferred, failed, rate and time left."""

    def __init__(self) -> None:
        self.bar = Progress(
            TextColumn("[bold]Sending"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task: TaskID | None = None

    def __enter__(self) -> ProgressDisplay:
        self.bar.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.bar.__exit__(exc_type, exc, tb)

    def start(self, plan: SendPlan) -> None:
        self.task = self.bar.add_task("send", total=plan.to_send, counts="")

    def update(self, counts: Counts) -> None:
        if self.task is None:
            return
        unknown = f"  unknown {counts.unknown:,}" if counts.unknown else ""
        self.bar.update(
            self.task,
            completed=counts.sent + counts.failed + counts.unknown,
            counts=(
                f"sent {counts.sent:,}  deferred {counts.deferred:,}  failed {counts.failed:,}"
                f"{unknown}  {counts.rate:,.0f}/s"
            ),
        )


def progress_display() -> ProgressDisplay:
    return ProgressDisplay()


def print_send_result(result: SendResult, issue_path: Path) -> bool:
    """The summary of a dispatch: what this run did, then where the whole dispatch
    stands, the same table ``status`` shows; True when every recipient got the issue."""
    report = result.report
    console.print(f"This run: {_this_run(report)} in {report.elapsed:.1f}s")
    console.print(_counts_table(result.status))
    if len(result.status.workers) > 1:
        _print_workers(result.status.workers)
    for line in result.ended:
        errors.print(f"{line}; the others took over what it claimed.", soft_wrap=True)
    _print_failures(report)
    again = f"newsletter send {issue_path}"
    if report.unknown:
        errors.print(
            f"Unknown: {report.unknown:,} got no reply to the end of the message in time and"
            " may have arrived; they are not sent again unless you ask with"
            f" `{again} --retry-failed --include-unknown`."
        )
    if report.stopped == "interrupted":
        errors.print(
            f"Stopped after the messages in flight; run `{again}` to resume"
            " (no one already sent gets it twice)."
        )
    elif report.stopped == "paused":
        errors.print(f"Paused: {report.reason}. Fix the cause, then run `{again}` to resume.")
    elif report.complete:
        console.print(f"Sent to all {report.sent:,} recipients.")
        return True
    elif report.failed:
        retry = ""
        if any(outcome.retryable for outcome in report.failures if outcome.state == "failed"):
            retry = f"; `{again} --retry-failed` tries the temporary ones again"
        attempted = report.sent + report.failed + report.unknown
        errors.print(
            f"{report.failed:,} of {attempted:,} failed;"
            f" see `newsletter status {issue_path}`{retry}."
        )
    return False


def _this_run(report: DispatchReport) -> str:
    counts = [f"{report.sent:,} sent"]
    if report.failed:
        bounced = f" ({report.bounced:,} bounced)" if report.bounced else ""
        counts.append(f"{report.failed:,} failed{bounced}")
    if report.unknown:
        counts.append(f"{report.unknown:,} unknown")
    if report.deferred:
        counts.append(f"{report.deferred:,} deferred")
    return ", ".join(counts)


def print_test_report(report: DispatchReport, count: int) -> bool:
    """One line per test address that failed; True when all were sent."""
    _print_failures(report)
    if report.sent == count:
        console.print(f"Test sent to {count} address{'es' if count > 1 else ''}.")
        return True
    unknown = f", {report.unknown} unknown (may have arrived)" if report.unknown else ""
    errors.print(f"Test: {report.sent} of {count} sent, {report.failed} failed{unknown}.")
    return False


def print_status(
    status: DispatchStatus, issue_path: Path, feedback: FeedbackCounts | None = None
) -> None:
    """The journal's counts for one issue, what came back after it (``feedback``), and
    every failure with the server's reply."""
    if status.segment is None:
        console.print(f"{status.issue}: never sent.")
        return
    counts = status.counts
    state = "running now" if status.running else (status.last_result or "not running")
    console.print(f"{status.issue} to {status.segment}: {state}")
    console.print(_counts_table(status))
    if status.workers:
        _print_workers(status.workers)
    if feedback is not None and (feedback.total or counts["bounced"] or counts["complained"]):
        console.print(
            f"Came back: {counts['bounced']:,} copies bounced, {counts['complained']:,}"
            f" complained about; reports: {feedback.hard:,} hard bounces, {feedback.soft:,}"
            f" soft, {feedback.complaint:,} complaints (newsletter bounces list)",
            soft_wrap=True,
        )
    if status.failures:
        # Plain lines, not a table: a reply is long, and these get grepped and pasted.
        console.print("Not delivered:")
        for row in status.failures:
            if row.state == "unknown":
                retry = "may have arrived; retried only by --retry-failed --include-unknown"
            else:
                retry = "retried by --retry-failed" if row.retryable else "not retried"
            attempts = f"{row.attempts} attempt{'s' if row.attempts != 1 else ''}"
            console.print(
                f"  {row.email}  {row.state} after {attempts}:"
                f" {row.code or ''} {row.reply}".rstrip()
                + f" ({retry})",
                soft_wrap=True,
            )
    left = counts["sending"] + counts["deferred"] + status.not_attempted
    if left and not status.running:
        console.print(f"Run `newsletter send {issue_path}` to resume.")


def _counts_table(status: DispatchStatus) -> Table:
    """Where a dispatch stands, from its delivery record: the one table that both the
    summary of ``send`` and ``status`` print, so they never disagree."""
    counts = status.counts
    columns = {
        "sent": counts["sent"],
        "unknown": counts["unknown"],
        "in flight": counts["sending"],
        "deferred": counts["deferred"],
        "failed": counts["failed"],
        "not yet attempted": status.not_attempted,
    }
    table = Table()
    for column in columns:
        table.add_column(column, justify="right")
    table.add_row(*(f"{count:,}" for count in columns.values()))
    return table


def _print_workers(workers: tuple[DispatchWorker, ...]) -> None:
    """A line per worker of the dispatch's latest run, with what one that is gone or
    stopped left to the others."""
    console.print("Workers:")
    for worker in workers:
        line = (
            f"  process {worker.pid} on {worker.host}: {_WORKER_STATES[worker.state]};"
            f" claimed {worker.claimed:,}, sent {worker.sent:,}"
        )
        if worker.failed or worker.unknown:
            line += f", failed {worker.failed:,}, unknown {worker.unknown:,}"
        line += f"; last heartbeat {worker.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC"
        left = worker.claimed - worker.settled
        if worker.state in ("gone", "stopped") and left > 0:
            line += f"; left {left:,} of its claims unsettled (in flight or not yet sent), " + (
                "for the next worker to take over"
                if worker.unfinished
                else "taken over by the others"
            )
        console.print(line, soft_wrap=True)


_WORKER_STATES = {
    "sending": "sending",
    "done": "done",
    "stopped": "stopped",
    "gone": "gone (its process ended, or it stopped renewing its lease)",
}


def _print_failures(report: DispatchReport) -> None:
    for outcome in report.failures[:20]:
        reply = f"{outcome.code} {outcome.reply}" if outcome.code else outcome.reply
        errors.print(f"  {outcome.recipient.email}: {reply}".rstrip())
    if len(report.failures) > 20:
        errors.print(f"  … and {len(report.failures) - 20:,} more (newsletter status)")
