"""``send``, ``send-test`` and ``status``: the dispatch, read top to bottom.

compose each tier once → check those variants, refusing an issue with errors unless
  ``skip_check`` → serialise each once (MessageTemplate)
  → find the dispatch the issue continues (by its id or content, whatever the file is
    called), refusing content already sent in another one unless ``again``
  → give each copy its own return path (VERP) when [bounces] address is set
  → take part in it (alone with its lock, or as one of its workers on a shared store)
  → claim the subscribers still to send to, a batch at a time
  → dispatch, the reputation brake watching what comes back → leave it with the
    result; on a shared store, wait while other workers send, taking over what one
    that is gone left → read where the dispatch stands,
    for the summary (the same report ``status`` shows)
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from composer.composing.check import check_composed_issue
from composer.composing.load import load_issue
from composer.composing.pipeline import ComposedIssue, compose_file
from composer.config import Config
from composer.errors import (
    AddressRejected,
    AlreadyDispatched,
    ConfigError,
    IssueNotReady,
    JournalError,
    NewsletterError,
    StoreError,
)
from composer.model import Issue, Tier
from composer.reader_links import ReaderLinks
from composer.returnpath import ReturnPaths
from composer.sending.brake import ReputationBrake
from composer.sending.dispatch import (
    Brake,
    DispatchReport,
    DispatchSettings,
    Journal,
    MemoryJournal,
    Progress,
    dispatch,
)
from composer.sending.personalise import MessageTemplate, PersonalCopy
from composer.sending.stop import StopRequest
from composer.sending.transport import SmtpTransport, Transport, describe_server
from composer.store import Segment, SubscriberStore, open_store, segment_tiers
from composer.store.deliveries import (
    DispatchJournal,
    DispatchRecord,
    DispatchStatus,
    DispatchWorker,
    IssueIdentity,
    Lease,
    Recipient,
    repeated_dispatches,
    resumed_dispatch,
)
from composer.store.feedback import FeedbackCounts
from composer.store.membership import AddressChecker
from composer.unsubscribe import UnsubscribeLinks

# How often a worker that has settled its claims looks whether the others still send,
# or one of them is gone and left recipients to take over.
OTHERS_POLL_SECONDS = 1.0
# How often the progress of a shared dispatch is read from the store.
PROGRESS_SECONDS = 0.5


@dataclass(frozen=True)
class SendPlan:
    """What ``send`` is about to do, for the confirmation."""

    issue: ComposedIssue
    segment: Segment
    active: int  # active subscribers in the segment
    done: int  # of those, already recorded as sent (or failed or unknown, not to be retried)
    server: str

    @property
    def to_send(self) -> int:
        return max(0, self.active - self.done)


@dataclass(frozen=True)
class SendResult:
    """What this run did (``report``) and where the whole dispatch stands after it
    (``status``, read from the delivery record like ``newsletter status``); ``ended``
    says, a line each, which of this run's worker processes died before the end."""

    plan: SendPlan
    report: DispatchReport
    status: DispatchStatus
    ended: tuple[str, ...] = ()


def dispatch_settings(
    config: Config, concurrency: int | None = None, rate: float | None = None
) -> DispatchSettings:
    """The ``[send]`` settings, with the command line's overrides."""
    return DispatchSettings(
        sender=config.newsletter.sender.addr_spec,
        concurrency=concurrency or config.send.concurrency,
        rate_per_second=config.send.rate_per_second if rate is None else rate,
        max_attempts=config.send.max_attempts,
    )


def plan_send(
    issue_path: Path,
    config: Config,
    segment: Segment,
    *,
    retry_failed: bool = False,
    again: bool = False,
    include_unknown: bool = False,
    skip_check: bool = False,
) -> SendPlan:
    """Compose the issue and count who would get it; sends nothing, and needs neither the
    server nor its password. An issue that ``check`` finds errors in raises
    :class:`IssueNotReady` unless ``skip_check``; content already sent in another
    dispatch raises :class:`AlreadyDispatched` unless ``again``."""
    composed = compose_file(issue_path, config, "paid")
    if not skip_check:
        _refuse_errors([composed], config)
    return plan_composed(
        composed,
        config,
        segment,
        retry_failed=retry_failed,
        include_unknown=include_unknown,
        again=again,
    )


def plan_composed(
    composed: ComposedIssue,
    config: Config,
    segment: Segment,
    *,
    retry_failed: bool = False,
    include_unknown: bool = False,
    again: bool = False,
) -> SendPlan:
    """The plan of sending the issue already composed as ``composed`` (its highest tier
    the segment reaches); content already sent in another dispatch raises
    :class:`AlreadyDispatched` unless ``again``."""
    with (
        open_store(config.subscribers) as store,
        open_journal(store, composed.issue, again=again) as journal,
    ):
        return _plan(
            composed,
            store,
            journal,
            segment,
            retry_failed,
            include_unknown,
            describe_server(config.smtp),
        )


def compose_variants(
    issue_path: Path, config: Config, segment: Segment, *, skip_check: bool = False
) -> dict[Tier, ComposedIssue]:
    """The issue composed for each tier ``segment`` reaches, lowest first (the last one
    keys the dispatch and titles the plan), checked as ``send`` checks them: an issue
    that ``check`` finds errors in raises :class:`IssueNotReady` unless ``skip_check``."""
    variants = {tier: compose_file(issue_path, config, tier) for tier in segment_tiers(segment)}
    if not skip_check:
        _refuse_errors(list(variants.values()), config)
    return variants


def send_issue(
    issue_path: Path,
    config: Config,
    segment: Segment,
    *,
    settings: DispatchSettings | None = None,
    retry_failed: bool = False,
    again: bool = False,
    include_unknown: bool = False,
    skip_check: bool = False,
    transport: Transport | None = None,
    on_start: Callable[[SendPlan], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> SendResult:
    """Dispatch the issue to every active subscriber of ``segment`` not yet recorded as
    sent, continuing its dispatch whatever the file is now called. An issue that
    ``check`` finds errors in raises :class:`IssueNotReady` unless ``skip_check``;
    content already sent in another dispatch raises :class:`AlreadyDispatched` unless
    ``again``. Ctrl-C (SIGINT) or SIGTERM stops after the messages in flight; so does a
    delivery record that cannot be written (:class:`JournalError`), and so does the
    reputation brake (:mod:`composer.sending.brake`), when the complaints or hard
    bounces recorded against the dispatch since the run started pass ``[send]``'s
    limits.

    On a shared store (PostgreSQL) this process joins the dispatch as one of its
    workers, whoever started it; once it has settled what it claimed, it waits while
    the others send and takes over what one that is gone left, so that it ends with
    the dispatch. ``on_progress`` then counts the whole dispatch, read from the store."""
    settings = settings or dispatch_settings(config)
    transport = transport or SmtpTransport.from_settings(config.smtp)
    links = UnsubscribeLinks.from_config(config)
    reader_links = ReaderLinks.from_config(config)
    variants = compose_variants(issue_path, config, segment, skip_check=skip_check)
    templates = {
        tier: MessageTemplate.build(composed, config, links=links, reader_links=reader_links)
        for tier, composed in variants.items()
    }
    returns = ReturnPaths.from_config(config)
    # The highest tier's variant: its issue keys the dispatch and its title the plan.
    top_variant = list(variants.values())[-1]

    def render(recipient: Recipient) -> PersonalCopy:
        return templates[recipient.tier].render(recipient)

    with (
        open_store(config.subscribers) as store,
        open_journal(store, top_variant.issue, again=again) as journal,
    ):
        if returns is not None:
            # The return paths name the dispatch by its key, known once it is found.
            return_path = returns.for_dispatch(journal.key)
            templates = {
                tier: replace(template, return_path=return_path)
                for tier, template in templates.items()
            }
        lease_seconds = config.send.lease_seconds
        journal.acquire(segment, lease_seconds=lease_seconds)
        plan = _plan(
            top_variant,
            store,
            journal,
            segment,
            retry_failed,
            include_unknown,
            transport.description,
        )
        if on_start is not None:
            on_start(plan)
        if journal.shared and on_progress is not None:
            on_progress = WholeDispatchProgress(journal, on_progress)
        started = time.monotonic()
        report = DispatchReport()
        while True:
            claims = _claims(
                journal, segment, retry_failed=retry_failed, include_unknown=include_unknown
            )
            brake = ReputationBrake(lambda: store.feedback_counts(journal.key), config.send)
            lease = journal.lease if journal.shared else None
            try:
                run = _run(claims, render, transport, journal, settings, on_progress, brake, lease)
            except JournalError as exc:
                raise _stopped_by_journal(exc, journal) from exc
            report = _merged(report, run, time.monotonic() - started)
            journal.release(_describe(report), settled=run.stopped is None)
            if run.stopped is not None or not _left_by_others(journal):
                break
            journal.acquire(segment, lease_seconds=lease_seconds)
        status = journal.status()
    return SendResult(plan, report, status)


class WholeDispatchProgress:
    """The progress of a dispatch that several workers send: the outcomes all of them
    recorded since this one started watching, read from the store at most every
    :data:`PROGRESS_SECONDS`, passed to ``on_progress`` (called with this process's
    own counts, which it replaces)."""

    def __init__(self, journal: DispatchJournal, on_progress: Callable[[Progress], None]):
        self.journal = journal
        self.on_progress = on_progress
        self.started = time.monotonic()
        crew = journal.workers()
        # Before a new run starts, the rows of the last one are no part of it.
        self.base = _settled(crew) if any(w.alive for w in crew) else (0, 0, 0)
        self._next = 0.0

    def __call__(self, _: Progress) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + PROGRESS_SECONDS
        try:
            counts = self.read()
        except StoreError:
            return  # the next commit's update reads again
        self.on_progress(counts)

    def read(self) -> Progress:
        """The whole dispatch's counts since this one started watching."""
        sent, failed, unknown = (
            now - then
            for now, then in zip(_settled(self.journal.workers()), self.base, strict=True)
        )
        return Progress(sent=sent, failed=failed, unknown=unknown, started=self.started)


def _settled(workers: Iterable[DispatchWorker]) -> tuple[int, int, int]:
    """The sent, failed and unknown outcomes ``workers`` recorded, all together."""
    crew = list(workers)
    return (
        sum(w.sent for w in crew),
        sum(w.failed for w in crew),
        sum(w.unknown for w in crew),
    )


def _claims(
    journal: DispatchJournal, segment: Segment, *, retry_failed: bool, include_unknown: bool
) -> Iterator[Recipient]:
    """The recipients this process claims, a batch at a time, until none is left."""
    while batch := journal.claim(
        segment, retry_failed=retry_failed, include_unknown=include_unknown
    ):
        yield from batch


def _left_by_others(journal: DispatchJournal) -> bool:
    """Wait while other workers of the dispatch send; True as soon as one that is gone
    left recipients to take over, False once none sends (or a stop was asked for).
    Alone (a store without workers) there is never anything to wait for."""
    if not journal.shared:
        return False
    stop = StopRequest()
    with stop.handling():
        while not stop.requested:
            crew = journal.workers()
            if any(not w.alive and w.unfinished for w in crew):
                return True
            if not any(w.alive for w in crew):
                return False
            stop.wait(OTHERS_POLL_SECONDS)
    return False


def _merged(before: DispatchReport, run: DispatchReport, elapsed: float) -> DispatchReport:
    """What the rounds of one process came to: ``before``, then ``run``."""
    return DispatchReport(
        sent=before.sent + run.sent,
        failed=before.failed + run.failed,
        unknown=before.unknown + run.unknown,
        deferred=run.deferred,
        bounced=before.bounced + run.bounced,
        failures=before.failures + run.failures,
        stopped=run.stopped,
        reason=run.reason,
        elapsed=elapsed,
    )


def addresses_for_test(config: Config, to: Sequence[str] = ()) -> tuple[str, ...]:
    """Where a test goes: ``to`` when given, else ``[newsletter] test_recipients``; each
    reader once, in the spelling first given (the same address twice would be one
    reader twice in the dispatch's bookkeeping). An address that is not a bare, valid
    one raises before anything is composed or sent."""
    given = tuple(to) or config.newsletter.test_recipients
    if not given:
        raise ConfigError(
            f"{config.path}: no test recipients; list them in [newsletter] test_recipients"
            " (or give send-test --to ADDRESS)"
        )
    checker = AddressChecker()
    unique: dict[str, str] = {}
    for address in given:
        try:
            key = checker.key(address)
        except AddressRejected as exc:
            if to:
                raise NewsletterError(
                    f"send-test --to {address!r} is not a valid address: {exc.reason}"
                    " Give the bare address, such as ann@example.com"
                ) from exc
            raise ConfigError(
                f"{config.path}: [newsletter] test_recipients has {address!r}, not a valid"
                f" address: {exc.reason} Give the bare address, such as ann@example.com"
            ) from exc
        unique.setdefault(key, address)
    return tuple(unique.values())


def send_test(
    issue_path: Path,
    config: Config,
    tier: Tier,
    to: Sequence[str],
    *,
    transport: Transport | None = None,
) -> DispatchReport:
    """Send the issue, subject prefixed ``[TEST]``, to ``to`` only; nothing is journalled."""
    composed = compose_file(issue_path, config, tier)
    template = MessageTemplate.build(
        composed,
        config,
        links=UnsubscribeLinks.from_config(config),
        reader_links=ReaderLinks.from_config(config),
        subject_prefix="[TEST] ",
        unique_ids=True,
    )
    settings = dispatch_settings(config)
    settings = replace(settings, concurrency=max(1, min(settings.concurrency, len(to))))
    recipients = [Recipient(email=address, key=address, tier=tier) for address in to]
    return _run(
        recipients,
        template.render,
        transport or SmtpTransport.from_settings(config.smtp),
        MemoryJournal(),
        settings,
        None,
    )


def dispatch_status(issue_path: Path, config: Config) -> DispatchStatus:
    """Where the dispatch of the issue at ``issue_path`` stands: the one ``send`` would
    continue."""
    identity = IssueIdentity.of(load_issue(issue_path))
    with open_store(config.subscribers) as store:
        key, _ = _dispatch_key(store, identity)
        with store.deliveries(key, identity) as journal:
            return journal.status()


def dispatch_feedback(issue_path: Path, config: Config) -> FeedbackCounts:
    """The bounces and complaints recorded against the dispatch of the issue at
    ``issue_path`` (the one ``send`` would continue)."""
    identity = IssueIdentity.of(load_issue(issue_path))
    with open_store(config.subscribers) as store:
        key, _ = _dispatch_key(store, identity)
        return store.feedback_counts(key)


def _dispatch_key(
    store: SubscriberStore, identity: IssueIdentity
) -> tuple[str, list[DispatchRecord]]:
    """The key of the dispatch the issue continues (or starts), and every dispatch
    sharing its id, content or file name."""
    known = store.dispatches(identity)
    resumed = resumed_dispatch(identity, known)
    return (resumed.key if resumed else identity.key), known


def _refuse_errors(variants: list[ComposedIssue], config: Config) -> None:
    """Raise :class:`IssueNotReady` if ``check`` finds errors in the issue, linting the
    variants already composed rather than composing them again; warnings pass."""
    issue = variants[0].issue
    errors = check_composed_issue(issue, variants, config).errors
    if errors:
        first = errors[0]
        where = f"line {first.line}" if first.line else ""
        if first.block:
            where = f"{where} in {first.block}" if where else f"in {first.block}"
        count = f"{len(errors)} check error{'' if len(errors) == 1 else 's'}"
        raise IssueNotReady(
            f"{issue.path}: {count} (the first: {first.message}{f', {where}' if where else ''});"
            f" fix them (newsletter check {issue.path}) or pass --skip-check"
        )


def open_journal(store: SubscriberStore, issue: Issue, *, again: bool) -> DispatchJournal:
    """The delivery record that sending ``issue`` continues or starts; content already
    sent under another key raises :class:`AlreadyDispatched` unless ``again``."""
    identity = IssueIdentity.of(issue)
    key, known = _dispatch_key(store, identity)
    repeats = repeated_dispatches(identity, known, key)
    if repeats and not again:
        latest = max(repeats, key=lambda record: record.last_run_at)
        raise AlreadyDispatched(_repeat(issue, latest))
    return store.deliveries(key, identity)


def _repeat(issue: Issue, earlier: DispatchRecord) -> str:
    """Why ``issue`` is not sent: the dispatch ``earlier`` already sent its content."""
    instead = ""
    if earlier.id:
        instead = f'; to continue that dispatch instead, give the file its id = "{earlier.id}"'
    return (
        f"{issue.path}: this issue's content was already sent as {earlier.slug}"
        f" ({earlier.sent:,} cop{'y' if earlier.sent == 1 else 'ies'} to {earlier.segment},"
        f" first on {earlier.started_at:%Y-%m-%d}, last on {earlier.last_run_at:%Y-%m-%d});"
        f" sending it again would reach those readers twice. Add --again if that is what"
        f" you want{instead}"
    )


def _plan(
    composed: ComposedIssue,
    store: SubscriberStore,
    journal: DispatchJournal,
    segment: Segment,
    retry_failed: bool,
    include_unknown: bool,
    server: str,
) -> SendPlan:
    """The plan of sending ``composed`` to ``segment``, counted by the store without
    reading the list."""
    active = store.count_active(segment)
    to_send = journal.count_to_send(
        segment, retry_failed=retry_failed, include_unknown=include_unknown
    )
    return SendPlan(composed, segment, active=active, done=active - to_send, server=server)


def _stopped_by_journal(exc: JournalError, journal: DispatchJournal) -> JournalError:
    """The one line for a dispatch whose delivery record could not be written: why, what
    a rerun will send again, whether the lock is free, and what to do."""
    try:
        journal.release("stopped: the delivery record could not be written")
        lock = "the dispatch lock is released"
    except JournalError:
        # The lock names this process; once it has ended, the next run takes it over.
        lock = "the dispatch lock could not be released (it is free once this process ends)"
    if exc.unsaved:
        recorded = (
            f"{exc.unsaved:,} copies the server took could be recorded only as in flight,"
            " and a rerun sends those again"
        )
    else:
        recorded = "every message the server took is recorded"
    return JournalError(
        f"{exc.message}; the dispatch stopped after the messages in flight, {recorded};"
        f" {lock}. Free disk space (or fix what the error names), then run the same"
        " command to resume",
        unsaved=exc.unsaved,
    )


def _run(
    recipients: Iterable[Recipient],
    render: Callable[[Recipient], PersonalCopy],
    transport: Transport,
    journal: Journal,
    settings: DispatchSettings,
    on_progress: Callable[[Progress], None] | None,
    brake: Brake | None = None,
    lease: Callable[[], Lease] | None = None,
) -> DispatchReport:
    async def main() -> DispatchReport:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        handled = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(signum)
            try:
                loop.add_signal_handler(signum, stop.set)
                handled[signum] = previous
            except (ValueError, RuntimeError):  # not the main thread: no signals to catch
                pass
        try:
            return await dispatch(
                recipients,
                render,
                transport,
                journal,
                settings,
                stop=stop,
                on_progress=on_progress,
                brake=brake,
                lease=lease,
            )
        finally:
            for signum, previous in handled.items():
                loop.remove_signal_handler(signum)
                # asyncio puts back the default handler, not the one it found: a
                # long-running caller (the worker) keeps its own.
                if previous is not None:
                    signal.signal(signum, previous)

    return asyncio.run(main())


def _describe(report: DispatchReport) -> str:
    if report.stopped:
        return f"{report.stopped}: {report.reason}"
    if report.complete:
        return "complete"
    left = [f"{report.failed} failed"] if report.failed else []
    if report.unknown:
        left.append(f"{report.unknown} unknown")
    if report.deferred:
        left.append(f"{report.deferred} deferred")
    return ", ".join(left)
