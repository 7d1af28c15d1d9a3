"""``bounces fetch``: read what is new in the bounce mailbox, record it, mark it, top to
bottom.

    each message not yet processed → read it (:func:`~composer.bounces.parse.read_report`)
    → an auto-reply: marked processed, never counted
    → a bounce or complaint: one :class:`Feedback` per finding, carrying the verified
      return token of the VERP address it came back to → recorded by the store, a
      batch of messages per transaction
      → marked processed only once that has committed, so a crash or rerun counts
      nothing twice (the store's ``(source, event_id)`` guard is the second line: a
      crash between the commit and the marks leaves reports that are duplicates)
    → not understood: left where it is, and named in the summary
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from composer.bounces.mailbox import Mailbox
from composer.bounces.parse import Report, read_report
from composer.returnpath import ReturnPaths
from composer.store import SubscriberStore
from composer.store.feedback import Feedback, FeedbackResult

SOURCE = "mailbox"
# How many messages not understood the summary names; the rest are counted.
NAMED_LIMIT = 20
# Messages recorded per transaction: one commit (and its sync to disk) per message
# would make a full mailbox take minutes.
BATCH_SIZE = 200


@dataclass
class FetchSummary:
    """What one pass over the mailbox did, by effect."""

    bounced: int = 0
    soft: int = 0  # counted towards a bounce, not (yet) one
    complaints: int = 0
    auto_replies: int = 0
    unmatched: int = 0
    ignored: int = 0  # about a reader already inactive
    duplicates: int = 0  # recorded before: a rerun after a crash
    not_understood: int = 0
    unread: list[str] = field(default_factory=list)  # the first not understood, named

    @property
    def messages(self) -> int:
        return (
            self.bounced
            + self.soft
            + self.complaints
            + self.auto_replies
            + self.unmatched
            + self.ignored
            + self.duplicates
            + self.not_understood
        )

    def add(self, result: FeedbackResult) -> None:
        match result.effect:
            case "bounced":
                self.bounced += 1
            case "complained":
                self.complaints += 1
            case "counted":
                self.soft += 1
            case "unmatched":
                self.unmatched += 1
            case "ignored":
                self.ignored += 1
            case "duplicate":
                self.duplicates += 1


def fetch_bounces(
    mailbox: Mailbox,
    store: SubscriberStore,
    paths: ReturnPaths | None,
    *,
    soft_limit: int,
    on_result: Callable[[FeedbackResult], None] | None = None,
    batch_size: int = BATCH_SIZE,
) -> FetchSummary:
    """Process every message of ``mailbox`` not yet processed, once. Reports are
    recorded ``batch_size`` messages per transaction, and those messages are marked
    processed once it has committed."""
    summary = FetchSummary()
    pending: list[Feedback] = []
    refs: list[str] = []

    def flush() -> None:
        for result in store.record_feedback_batch(pending, soft_limit=soft_limit):
            summary.add(result)
            if on_result is not None:
                on_result(result)
        for ref in refs:
            mailbox.mark_read(ref)
        pending.clear()
        refs.clear()

    for letter in mailbox.unread():
        report = read_report(letter.raw)
        if report.kind == "not-understood":
            summary.not_understood += 1
            if len(summary.unread) < NAMED_LIMIT:
                summary.unread.append(f"{mailbox.name} {letter.ref}: {report.summary}")
            continue
        if report.kind == "auto-reply":
            summary.auto_replies += 1
        else:
            pending.extend(feedback_of(report, paths))
        refs.append(letter.ref)
        if len(refs) >= batch_size:
            flush()
    flush()
    return summary


def feedback_of(report: Report, paths: ReturnPaths | None) -> list[Feedback]:
    """One :class:`Feedback` per finding of ``report``; the first keeps the report's own
    id as its event id, any further one (a report about several recipients) adds its
    place to it."""
    token = None
    if paths is not None:
        token = next(
            (found for address in report.delivered_to if (found := paths.token_of(address))),
            None,
        )
    return [
        Feedback(
            kind=finding.kind,
            source=SOURCE,
            event_id=report.event_id if number == 1 else f"{report.event_id}#{number}",
            reason=finding.reason,
            occurred_at=report.occurred_at,
            message_id=report.message_id,
            recipient=finding.recipient,
            return_token=token,
        )
        for number, finding in enumerate(report.findings, start=1)
    ]
