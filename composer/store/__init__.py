"""The subscriber list: its values and the small interface every store implements.

Two stores stand behind the same :class:`SubscriberStore`, chosen in
:func:`open_store` by ``[subscribers] database``: a SQLite file
(:mod:`composer.store.sqlite`, the default) or a PostgreSQL server
(:mod:`composer.store.postgresql`); :mod:`composer.store.copy` moves a list from one
to the other. The record of every issue sent to the list (its
:class:`~composer.store.deliveries.DispatchJournal`) and the scheduled dispatches
(:class:`~composer.store.schedules.ScheduleBook`) come from the same store.
Nothing outside this package writes SQL, and nothing in it imports the sending or
web side.

An address is one reader whatever its letter case: :func:`address_key` is the one
rule that says which row an address belongs to, used by every way in (import,
``subscribers add`` and ``remove``, unsubscribe links, ``preview --as``).

Statuses only move forward by accident-proof rules, the same in every store:

- a new address is added with the status it is given (``active`` unless an
  imported row says otherwise, so a suppression list can be imported);
- an ``active`` subscriber may become unsubscribed, bounced or complained;
- an inactive subscriber is left exactly as it is by an import or a plain add;
  only ``save(..., resubscribe=True)`` (``subscribers add --resubscribe``) makes
  it active again, or the reader's own use of a confirmation link
  (:mod:`composer.store.signups`);
- a ``pending`` reader signed up on ``newsletter serve`` and has not confirmed yet: no
  issue goes to them. The editor's import or add vouches for them (active, or the
  status the row gives); a ``pending`` row in an import never changes an existing one.
- an erased reader (:meth:`SubscriberStore.erase`) leaves only a suppression
  (:mod:`composer.store.personal`): no import or save adds the address again; only
  the person's own confirmation of a signup (:meth:`SubscriberStore.confirm`) lifts it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol

from composer.errors import AddressSuppressed, StoreBusy, StoreError
from composer.model import Tier

if TYPE_CHECKING:
    from composer.config import SubscriberSettings
    from composer.store.deliveries import (
        DispatchedIssue,
        DispatchJournal,
        DispatchRecord,
        IssueIdentity,
        TracedDelivery,
    )
    from composer.store.feedback import Feedback, FeedbackCounts, FeedbackRecord, FeedbackResult
    from composer.store.mailqueue import MailOutcome, QueuedMail
    from composer.store.personal import PersonalData
    from composer.store.schedules import ScheduleBook
    from composer.store.signups import Confirmation, Signup, SignupResult
    from composer.store.tables import Table

Status = Literal["pending", "active", "unsubscribed", "bounced", "complained"]
# Least to most protective: merging two rows of one reader keeps the later status here.
STATUSES: tuple[Status, ...] = ("pending", "active", "unsubscribed", "bounced", "complained")
InactiveStatus = Literal["unsubscribed", "bounced", "complained"]
Segment = Literal["free", "paid", "all"]

# What saving one row did: the vocabulary of import reports and `subscribers add`.
Change = Literal["added", "updated", "unchanged", "kept_inactive", "resubscribed"]


@dataclass(frozen=True)
class Subscriber:
    """One row of the list. ``email`` is the first spelling seen, used for delivery;
    ``key`` is :func:`address_key` of it, which makes it unique and which unsubscribe
    tokens carry."""

    id: int
    email: str
    key: str
    name: str
    tier: Tier
    tags: tuple[str, ...]
    status: Status
    status_changed_at: dt.datetime
    status_reason: str


@dataclass(frozen=True)
class NewSubscriber:
    """An address to add or update. ``None`` leaves an existing subscriber's field as it
    is (and gives a new one the default: no name, tier ``free``, no tags)."""

    email: str
    key: str
    name: str | None = None
    tier: Tier | None = None
    tags: tuple[str, ...] | None = None
    status: Status = "active"
    status_changed_at: dt.datetime | None = None
    status_reason: str = ""


@dataclass(frozen=True)
class ImportCounts:
    """What an import did, row by row; ``duplicates`` repeat an address (in any letter
    case) seen earlier in the same import and are folded into that first row;
    ``suppressed`` are addresses erased at their owner's request, left out."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    kept_inactive: int = 0
    duplicates: int = 0
    suppressed: int = 0


class SubscriberStore(Protocol):
    """The subscriber list's storage. Every method commits before it returns."""

    def get(self, key: str) -> Subscriber | None:
        """The subscriber with normalised address ``key``, or None."""

    def save(
        self, new: NewSubscriber, *, resubscribe: bool = False, reason: str = ""
    ) -> tuple[Subscriber, Change]:
        """Add or update one subscriber by the rules in this module's docstring;
        :class:`~composer.errors.AddressSuppressed` for an erased address."""

    def import_many(self, rows: Iterable[NewSubscriber], *, batch_size: int = 1000) -> ImportCounts:
        """Save a stream of rows in batched transactions, folding repeated addresses and
        leaving out suppressed ones; never resubscribes anyone and never holds more than
        one batch in memory."""

    def rename(self, key: str, name: str) -> Subscriber | None:
        """Set the name of subscriber ``key``; None when ``key`` is unknown."""

    def personal_data(self, key: str) -> PersonalData | None:
        """Everything held about subscriber ``key`` (row, status history, deliveries), or
        None when ``key`` is unknown."""

    def erase(self, key: str) -> bool:
        """Delete subscriber ``key`` with their history, deliveries, the bounces and
        complaints matched to them and their queued or sent confirmations and welcomes,
        and suppress the address (:mod:`composer.store.personal`), in one transaction;
        False when ``key`` is unknown (nothing is done)."""

    def is_suppressed(self, key: str) -> bool:
        """Whether address key ``key`` belongs to an erased reader."""

    def mark_status(self, key: str, status: InactiveStatus, reason: str) -> Subscriber | None:
        """Record an unsubscribe, bounce or complaint; None when ``key`` is unknown.
        Marking a subscriber with the status it already has changes nothing."""

    def iter_all(self, *, batch_size: int = 1000) -> Iterator[Subscriber]:
        """Every subscriber in insertion order, read ``batch_size`` rows at a time."""

    def iter_active(
        self, segment: Segment = "all", *, batch_size: int = 1000
    ) -> Iterator[Subscriber]:
        """The active subscribers of ``segment`` in insertion order, read in batches by
        keyset pagination, so a dispatch never loads the whole list."""

    def count_active(self, segment: Segment = "all") -> int:
        """How many subscribers :meth:`iter_active` would yield now."""

    def count_by_status(self) -> dict[Status, int]:
        """How many subscribers have each status (every status present, zero or more)."""

    def deliveries(self, key: str, identity: IssueIdentity | None = None) -> DispatchJournal:
        """The delivery record and dispatch lock of the dispatch keyed ``key``; close it
        after use. ``identity``, when given, is recorded with the dispatch when its lock
        is taken, so that :meth:`dispatches` finds it by the issue's id, content or file
        name (without it, the dispatch is found by its key as a file name)."""

    def dispatches(self, issue: IssueIdentity) -> list[DispatchRecord]:
        """Every dispatch recorded under ``issue``'s key, or with its id, content digest or
        file name: the candidates of :func:`~composer.store.deliveries.resumed_dispatch`
        and :func:`~composer.store.deliveries.repeated_dispatches`."""

    def dispatched_issues(self) -> list[DispatchedIssue]:
        """What every dispatch that sent, or may have sent, at least one copy (a delivery
        in a state of :data:`~composer.store.deliveries.MAY_HAVE_ARRIVED`) recorded of its
        issue, in one query that reads no more than one delivery per dispatch: what the
        web archive publishes by (:func:`~composer.store.deliveries.was_dispatched`)."""

    def find_delivery(self, message_id: str) -> TracedDelivery | None:
        """The delivery whose copy had ``message_id`` (as in the header, angle brackets
        included), with its subscriber; None when no delivery has it. A bounce, a
        complaint or a click names the message it is about this way."""

    def schedules(self) -> ScheduleBook:
        """The scheduled dispatches (:mod:`composer.store.schedules`), on this store's
        connection: usable while the store is open."""

    def record_feedback(self, feedback: Feedback, *, soft_limit: int = 3) -> FeedbackResult:
        """Apply a bounce or complaint in one transaction by the rules of
        :mod:`composer.store.feedback`: find its copy (return token, Message-ID, then the
        original recipient's latest delivery), keep the event with its reason, move the
        reader and the copy as :func:`~composer.store.feedback.decide` says. An event
        already recorded under the same ``(source, event_id)`` changes nothing
        (``duplicate``)."""

    def record_feedback_batch(
        self, batch: Iterable[Feedback], *, soft_limit: int = 3
    ) -> list[FeedbackResult]:
        """:meth:`record_feedback` for each of ``batch``, in order, in one transaction
        (a mailbox of reports is recorded a few hundred per commit)."""

    def recent_feedback(self, limit: int = 50) -> list[FeedbackRecord]:
        """The latest ``limit`` bounces and complaints recorded, newest first."""

    def feedback_counts(self, dispatch_key: str) -> FeedbackCounts:
        """The bounces and complaints recorded against the dispatch keyed ``dispatch_key``."""

    def sign_up(self, signups: Sequence[Signup], *, double_opt_in: bool) -> list[SignupResult]:
        """Record each of ``signups`` (a reader's own request on ``serve``) by the rules of
        :func:`composer.store.signups.plan_signup`, queueing the mail it calls for, all
        in one transaction; what came of each, in order."""

    def confirm(self, confirmation: Confirmation) -> tuple[Subscriber, bool]:
        """Make the reader of a verified confirmation link active, queueing their welcome
        (:func:`composer.store.signups.plan_confirmation`); the subscriber, and whether
        anything changed (False: already active)."""

    def expire_signups(self, before: dt.datetime) -> int:
        """Delete the ``pending`` readers who signed up before ``before`` and never
        confirmed (with their history and any bounce of their confirmation), and the
        queued mail settled before then; how many readers."""

    def due_mail(self, now: dt.datetime, limit: int) -> list[QueuedMail]:
        """Up to ``limit`` queued messages whose next attempt is due at ``now``, oldest
        first."""

    def requeue_interrupted_mail(self) -> int:
        """Queue again every message left ``sending`` (its process ended between marking
        it and recording the server's reply); how many."""

    def record_mail(self, outcomes: Sequence[MailOutcome]) -> None:
        """Record where each queued message stands now, in one transaction."""

    # Whole tables, for moving a list to another store (composer.store.copy).

    def table_names(self) -> set[str]:
        """The tables the store holds."""

    def count_rows(self, table: Table) -> int:
        """How many rows ``table`` holds."""

    def table_rows(self, table: Table, *, batch_size: int) -> Iterator[list[tuple[Any, ...]]]:
        """Every row of ``table`` in the order of its key, ``batch_size`` at a time, in the
        form :mod:`composer.store.tables` describes."""

    def put_rows(self, table: Table, rows: list[tuple[Any, ...]]) -> None:
        """Add ``rows`` to ``table`` in one transaction, keeping any row whose key is there
        already, without the history a new subscriber would get (the rows bring theirs)."""

    def close(self) -> None:
        """Release the connection."""

    def __enter__(self) -> SubscriberStore: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def open_store(settings: SubscriberSettings, *, apply_queued: bool = True) -> SubscriberStore:
    """Open (creating and migrating on first use) the store ``[subscribers]`` names: the
    SQLite file, or the PostgreSQL server (:mod:`composer.store.postgresql`, the optional
    extra ``newsletter[postgresql]``). Then apply the unsubscribes ``newsletter serve``
    queued while it was busy (:mod:`composer.store.pending`), so that no command acts on
    a reader who has left: when they cannot be applied yet,
    :class:`~composer.errors.StoreBusy`. ``serve`` itself, which applies its queue in the
    background, opens it with ``apply_queued=False``: a page is never kept waiting for a
    busy database."""
    from composer.store.pending import PendingUnsubscribes

    store = open_backend(settings)
    pending = PendingUnsubscribes(settings)
    if apply_queued and pending.waiting():
        try:
            applied = pending.apply(store)
        except BaseException:
            store.close()
            raise
        if not applied:
            store.close()
            raise StoreBusy(
                f"{settings.name}: the subscriber database is busy: another process (a"
                " send, an import, a database shell) kept its write lock past the wait, so"
                f" the unsubscribes queued in {pending.path} could not be applied and nothing"
                " was done: try again in a moment, once it has finished"
            )
    return store


def open_backend(settings: SubscriberSettings) -> SubscriberStore:
    """The store ``settings`` names, created and migrated, without looking at the queue
    of unsubscribes: :func:`open_store` is what commands use."""
    if settings.database is not None:
        from composer.store.sqlite import SqliteSubscriberStore

        return SqliteSubscriberStore(settings.database)
    try:
        from composer.store.postgresql import PostgresSubscriberStore
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("psycopg"):
            raise
        raise StoreError(
            f"{settings.url}: a PostgreSQL list needs the psycopg driver, which is not"
            " installed: pip install 'newsletter[postgresql]'"
        ) from exc
    return PostgresSubscriberStore(settings.url, settings.password_env)


def address_key(normalized: str) -> str:
    """The identity of an address already normalised by email-validator: the whole of
    it lower-cased, so ``Ann@Example.org`` and ``ann@example.org`` are one reader.

    Every mailbox provider that matters treats the local part case-insensitively.
    Dots and ``+tags`` are left alone: providers differ on those, and two readers who
    differ only by them may really be two people.
    """
    # lower(), not casefold(): casefold turns "ß" into "ss", which would merge
    # addresses that are different mailboxes.
    return normalized.lower()


def segment_tiers(segment: Segment) -> tuple[Tier, ...]:
    """The tiers a dispatch segment reaches."""
    return ("free", "paid") if segment == "all" else (segment,)


def suppressed_address(email: str) -> AddressSuppressed:
    """The error for saving an address whose owner had their data erased."""
    return AddressSuppressed(
        f"{email} is suppressed: its owner had their data deleted, so it is not added"
        " again; only their own confirmed signup can bring it back"
    )


def classify(old: Subscriber | None, new: NewSubscriber, *, resubscribe: bool) -> Change:
    """What saving ``new`` over ``old`` does under the forward-only status rules."""
    if old is None:
        return "added"
    if new.status == "pending":
        # An exported sign-up in flight never overrides what the list knows of a reader.
        return "unchanged"
    if old.status == "pending":
        return "updated"  # the editor vouches for them, or files them as they left
    if old.status != "active":
        return "resubscribed" if resubscribe and new.status == "active" else "kept_inactive"
    if new.status != "active":
        return "updated"
    same = (
        (new.name is None or new.name == old.name)
        and (new.tier is None or new.tier == old.tier)
        and (new.tags is None or new.tags == old.tags)
    )
    return "unchanged" if same else "updated"
