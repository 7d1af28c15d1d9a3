"""The delivery record: where each reader's copy of an issue stands, and its vocabulary.

Every store keeps, per issue and subscriber, one delivery whose :data:`State` says
where their copy is; no delivery means not yet attempted. A dispatch records
``sending`` (with the copy's Message-ID) before the SMTP transaction and ``sent``
only after the server's 250 to the final dot, durably, so that a rerun re-sends
exactly those :func:`still_to_send` says. The journal of one issue
(:class:`DispatchJournal`) also says who sends it. On a store that one process at a
time writes (SQLite), a lock lets one process at a time send that issue; a lock whose
holder stopped refreshing it for :data:`LOCK_STALE_SECONDS`, or whose process on this
machine is gone, is taken over (:func:`lock_is_stale`). On a shared store
(PostgreSQL) several processes, on any machines, send one dispatch together as its
workers (:class:`DispatchWorker`): each claims the recipients still to send a batch at
a time under a lease its heartbeat renews, and the batches of a worker that is gone
(its session ended, or its lease ran out) are claimed by the others, whose rules
(:func:`still_to_send`) re-send what it left in flight.

A dispatch is keyed by what renaming its file does not change (:class:`IssueIdentity`):
the issue's ``id``, else a digest of its content. Sending an issue continues the
dispatch :func:`resumed_dispatch` picks, which also finds one recorded before ids,
under the file's name; another dispatch of the same content is a repeat
(:func:`repeated_dispatches`), which ``send`` refuses unless asked. The web archive asks,
by the same rule, whether an issue has reached its readers (:func:`was_dispatched`).

The rules here are the same for every store; a backend only reads and writes rows.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Protocol, assert_never, get_args

from composer.model import Issue, Tier, content_digest
from composer.store import Segment, Subscriber

# The closed vocabulary of where one reader's copy stands. ``bounced`` and ``complained``
# come back after a ``sent`` (a bounce report, a complaint); ``unknown`` is a copy whose
# outcome is lost (a timeout after the final dot): it may have been delivered.
State = Literal[
    "pending", "sending", "sent", "deferred", "failed", "bounced", "complained", "unknown"
]
STATES: tuple[State, ...] = get_args(State)
# The copies that reached, or may have reached, their reader: what a repeat would duplicate.
MAY_HAVE_ARRIVED: tuple[State, ...] = ("sent", "bounced", "complained", "unknown", "sending")

# Longer than the longest back-off (60 s): a live dispatch records something at least
# that often, even when it is only waiting to retry.
LOCK_STALE_SECONDS = 300.0
HEARTBEAT_SECONDS = 2.0
# Recipients a worker of a shared dispatch claims at a time: small, so that a worker that
# dies leaves little for the others to take over, and a claim is one short query.
CLAIM_BATCH = 200

# Where one worker of a shared dispatch is: sending; done (every recipient it claimed is
# settled); stopped (Ctrl-C, a pause: the others take over what it left); gone (its
# session ended or its lease ran out while it was sending).
WorkerState = Literal["sending", "done", "stopped", "gone"]


@dataclass(frozen=True, kw_only=True)
class Recipient:
    """Who one message goes to. ``key`` is the subscriber's normalised address (what the
    unsubscribe link carries); ``subscriber_id`` is None for a test address."""

    email: str
    tier: Tier
    name: str = ""
    key: str = ""
    subscriber_id: int | None = None

    @property
    def link_key(self) -> str:
        """What the reader's unsubscribe link carries and their Message-ID is made from:
        ``key``, or the address itself for a test address, which has none."""
        return self.key or self.email

    @property
    def journal_id(self) -> int:
        """The id the delivery record keeps this recipient under."""
        if self.subscriber_id is None:
            raise ValueError(f"{self.email} is not a subscriber")
        return self.subscriber_id


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What one attempt (or the last attempt) at one recipient came to.

    ``retryable`` says whether ``send --retry-failed`` may try a failed recipient again:
    true for a temporary cause that ran out of attempts or a server error about the
    message, false for a refused or bounced address. ``bounced`` marks a 5.1.x reply.
    ``message_id`` is the copy's Message-ID, given with ``sending`` (None: keep the one
    recorded).
    """

    recipient: Recipient
    state: State
    attempts: int
    code: int | None = None
    reply: str = ""
    retryable: bool = False
    bounced: bool = False
    message_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class Delivery:
    """One reader's copy of an issue, as last recorded."""

    issue: str
    subscriber_id: int
    email: str
    state: State
    attempts: int
    code: int | None
    reply: str
    retryable: bool
    message_id: str | None
    updated_at: dt.datetime


@dataclass(frozen=True, kw_only=True)
class TracedDelivery:
    """A delivery found by its Message-ID, with the reader it went to."""

    delivery: Delivery
    subscriber: Subscriber


@dataclass(frozen=True, kw_only=True)
class DispatchWorker:
    """One process of the latest run of a shared dispatch, as recorded: how many
    recipients it claimed, the final outcomes it recorded, its last heartbeat (by the
    store's clock), and whether it is ``alive`` (sending, its session open and its
    lease running); ``unfinished`` counts its batches not yet done."""

    host: str
    pid: int
    state: WorkerState
    alive: bool
    claimed: int
    sent: int
    failed: int
    unknown: int
    unfinished: int
    started_at: dt.datetime
    heartbeat_at: dt.datetime

    @property
    def settled(self) -> int:
        """Its recipients that reached a final outcome."""
        return self.sent + self.failed + self.unknown


@dataclass(frozen=True, kw_only=True)
class DispatchStatus:
    """Where a dispatch stands: counts per state, how many active subscribers of its
    segment have no delivery yet, and every copy not delivered (deferred, failed or of
    unknown outcome) with the server's reply; on a shared store, the ``workers`` of its
    latest run. What ``send`` and ``status`` both show; ``issue`` is the journal's name."""

    issue: str
    segment: Segment | None
    counts: dict[State, int]
    not_attempted: int
    failures: list[Delivery]
    last_result: str
    running: bool
    workers: tuple[DispatchWorker, ...] = ()


@dataclass(frozen=True, kw_only=True)
class IssueIdentity:
    """What finds an issue's dispatch again: its ``id`` (empty: none), the digest of its
    content (:func:`composer.model.content_digest`) and its file's name."""

    slug: str
    id: str
    content: str

    @classmethod
    def of(cls, issue: Issue) -> IssueIdentity:
        return cls(slug=issue.slug, id=issue.id, content=content_digest(issue))

    @property
    def key(self) -> str:
        """The key of a new dispatch of this issue: its id, else its content's digest,
        each prefixed so that neither can be taken for a file name (the key of every
        dispatch recorded before ids)."""
        return f"id:{self.id}" if self.id else f"sha256:{self.content}"


@dataclass(frozen=True, kw_only=True)
class DispatchRecord:
    """A dispatch as recorded: its key; the file name, id (empty: none) and content digest
    of the issue it last sent (``content`` None: recorded before ids, keyed by the file
    name); its segment and dates; and how many copies the server took or may have taken
    (:data:`MAY_HAVE_ARRIVED`)."""

    key: str
    slug: str
    id: str
    content: str | None
    segment: Segment
    started_at: dt.datetime
    last_run_at: dt.datetime
    sent: int


@dataclass(frozen=True, kw_only=True)
class DispatchedIssue:
    """What a dispatch that sent (or may have sent) at least one copy recorded of the
    issue it last sent: its file name, id (empty: none) and content digest (None:
    recorded before ids). A :class:`DispatchRecord` without the count, which would cost
    a scan of every delivery to read."""

    slug: str
    id: str
    content: str | None


@dataclass(frozen=True, kw_only=True)
class LockHolder:
    """The process that holds (or last held) an issue's dispatch lock."""

    host: str
    pid: int
    heartbeat_at: float  # time.time() of its last refresh


@dataclass(frozen=True)
class Lease:
    """A worker's standing in its dispatch, as last heard by its heartbeat: how many
    workers send it now, this one included, and why this one's claims may have been
    taken over ("" while they are its own)."""

    workers: int = 1
    lost: str = ""


class DispatchJournal(Protocol):
    """The delivery record of one issue and who sends it. Writes commit before they
    return; :meth:`record` may be called from one other thread at a time. ``key`` is
    the dispatch's key; ``name`` what messages call it (the issue's file name when the
    journal was opened for one, else the key); ``shared`` whether several processes
    send it together (a PostgreSQL list)."""

    key: str
    name: str
    shared: bool

    def acquire(self, segment: Segment, *, lease_seconds: float = 30.0) -> None:
        """Take part in this issue's dispatch to ``segment``. Alone on a store that one
        process writes at a time: take its lock, or raise
        :class:`composer.errors.DispatchLocked` naming the live holder. On a shared
        store: join its workers (the first starts a new run; a worker already joined
        before takes part again), whose claims outlive their heartbeat by
        ``lease_seconds``; DispatchLocked when the live workers send another segment."""

    def release(self, result: str = "", *, settled: bool = False) -> None:
        """Stop taking part, noting how the run ended; ``settled``: every recipient this
        process claimed reached an outcome (else, on a shared store, the other workers
        take over what it left). Raise :class:`composer.errors.JournalError` when it
        cannot (the lock is then taken over once this process has ended); either way
        this journal no longer takes part."""

    def claim(
        self,
        segment: Segment,
        *,
        retry_failed: bool = False,
        include_unknown: bool = False,
        batch: int = CLAIM_BATCH,
    ) -> list[Recipient]:
        """The next recipients :func:`still_to_send` keeps that this process alone may
        send, in insertion order: the next page (alone), or up to ``batch`` under this
        worker's lease, taking over first a batch left by a worker that is gone.
        Empty: none left to claim now."""

    def lease(self) -> Lease:
        """This worker's standing as last heard, without asking the store: cheap enough
        to ask before every message."""

    def workers(self) -> list[DispatchWorker]:
        """The workers of this dispatch's latest run on a shared store (none alone)."""

    def recipients(
        self,
        segment: Segment,
        *,
        retry_failed: bool = False,
        include_unknown: bool = False,
        page_size: int = 500,
    ) -> Iterator[Recipient]:
        """The active subscribers of ``segment`` that :func:`still_to_send` keeps, in
        insertion order, read ``page_size`` at a time so memory stays flat."""

    def count_to_send(
        self, segment: Segment, *, retry_failed: bool = False, include_unknown: bool = False
    ) -> int:
        """How many recipients :meth:`recipients` would yield now, counted by the store
        without reading them."""

    def record(self, outcomes: Iterable[Outcome]) -> None:
        """Write ``outcomes`` in one transaction, in which a bounced outcome also marks
        its subscriber bounced (if active), so later issues skip them; raise
        :class:`composer.errors.JournalError`, having written nothing, when it cannot."""

    def status(self) -> DispatchStatus:
        """Counts, what is left, and the failures of this issue's dispatch."""

    def close(self) -> None:
        """Release the lock if held, then the connection."""

    def __enter__(self) -> DispatchJournal: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def still_to_send(
    state: State | None, retryable: bool, *, retry_failed: bool, include_unknown: bool = False
) -> bool:
    """Whether a reader whose copy is recorded as ``state`` (None: never attempted) gets
    it in this run. A copy the server took (sent, and what came back after it) never
    goes again; a failure only with ``retry_failed`` and when ``retryable``; a copy of
    unknown outcome, which may have arrived, only when asked for by both
    ``retry_failed`` and ``include_unknown``."""
    match state:
        case None | "pending" | "sending" | "deferred":
            return True
        case "failed":
            return retry_failed and retryable
        case "unknown":
            return retry_failed and include_unknown
        case "sent" | "bounced" | "complained":
            return False
        case _:
            assert_never(state)


def resumed_dispatch(
    issue: IssueIdentity, known: Iterable[DispatchRecord]
) -> DispatchRecord | None:
    """The dispatch that sending ``issue`` continues, among ``known``; None: a new one,
    under ``issue.key``.

    An issue with an id continues the dispatch of that id. Failing that, or without an
    id, it continues a dispatch without one: of the same content (the file was
    renamed), else of the same file name (the file was edited, or the dispatch was
    recorded before ids, under the file's name: a resume after an upgrade sends no one
    the issue again). A dispatch recorded with another id is another issue's. The
    latest run wins a tie.
    """
    ranked = [(rank, record) for record in known if (rank := _rank(issue, record)) is not None]
    if not ranked:
        return None
    return min(ranked, key=lambda pair: (pair[0], -pair[1].last_run_at.timestamp()))[1]


def was_dispatched(issue: IssueIdentity, dispatched: Iterable[DispatchedIssue]) -> bool:
    """Whether one of ``dispatched`` is a dispatch that sending ``issue`` would continue
    (:func:`resumed_dispatch`'s rule): the issue, or an earlier edit of it, has gone out."""
    return any(_rank(issue, record) is not None for record in dispatched)


def _rank(issue: IssueIdentity, record: DispatchRecord | DispatchedIssue) -> int | None:
    """How closely ``record`` names ``issue``'s dispatch: 0 by id, 1 by content, 2 by file
    name; None: another issue's."""
    if record.id:
        return 0 if record.id == issue.id else None
    if record.content == issue.content:
        return 1
    if record.slug == issue.slug:
        return 2
    return None


def repeated_dispatches(
    issue: IssueIdentity, known: Iterable[DispatchRecord], key: str
) -> list[DispatchRecord]:
    """The dispatches other than ``key`` that already sent ``issue``'s content to
    someone: sending it again would reach those readers twice."""
    return [
        record
        for record in known
        if record.key != key and record.content == issue.content and record.sent
    ]


def lock_is_stale(holder: LockHolder, now: float, this_host: str) -> bool:
    """Whether ``holder``'s lock may be taken over: it stopped refreshing the lock, or it
    was a process on this machine that no longer exists."""
    if now - holder.heartbeat_at > LOCK_STALE_SECONDS:
        return True
    if holder.host == this_host and holder.pid != os.getpid():
        try:
            os.kill(holder.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
    return False


def bounce_reason(issue: str, outcome: Outcome) -> str:
    """The status reason a subscriber bounced by ``outcome`` is marked with."""
    return f"bounced by {issue}: {outcome.code} {outcome.reply}"[:500]
