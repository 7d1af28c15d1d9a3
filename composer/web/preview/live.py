"""The live preview of one issue: :class:`Preview` composes the issue for every tier with
the pipeline ``build`` uses and lints it with ``check``, then recomposes whenever the
issue file, a template or config.toml changes (watched with watchfiles). Each result is
a :class:`~composer.web.preview.snapshot.Snapshot`: the composed variants, then the
same with the check's findings, or the error that stopped the composition, so a broken
edit is shown in the page instead of stopping the server. Pages follow it through
:meth:`Preview.updates`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from watchfiles import Change, awatch

from composer.composing.check import Finding, check_composed_issue
from composer.composing.load import load_issue
from composer.composing.pipeline import GMAIL_CLIP_BYTES, compose
from composer.config import TEMPLATES_FOLDER, load_config
from composer.errors import NewsletterError
from composer.model import TIERS
from composer.web.preview.snapshot import PreviewError, Snapshot, find_reader

logger = logging.getLogger(__name__)

# watchfiles yields once no further change has arrived for this long: an editor's
# save (write a temporary file, rename it over the old one) lands as one batch.
WATCH_STEP_MS = 15
CHECK_DELAY_SECONDS = 0.1
# How long after watching a new folder to look at it again, by when the watch is up.
REWATCH_SECONDS = 0.5


@dataclass(frozen=True)
class WatchedPaths:
    """What a change to means a recomposition: the issue file, config.toml and anything
    under the templates folder. Directories are watched rather than the two files, since
    many editors save by renaming a new file over the old one."""

    directories: frozenset[Path]
    files: frozenset[Path]
    templates: Path

    def __call__(self, change: Change, path: str) -> bool:
        changed = Path(path)
        return changed in self.files or changed.is_relative_to(self.templates)


class Preview:
    """The live state of one issue's preview: the latest :class:`Snapshot`, recomposed on
    every change, and the streams of the pages that follow it."""

    def __init__(
        self,
        issue_path: Path,
        config_path: Path,
        on_update: Callable[[Snapshot], None] | None = None,
    ) -> None:
        self.issue_path = issue_path
        self.config_path = config_path
        # Tells a page that reconnects to a restarted server that its version numbers
        # mean nothing here.
        self.run_id = secrets.token_hex(4)
        self._on_update = on_update
        self._version = 0
        # The newsletter's own templates folder, watched; the config may move it.
        self._templates = config_path.parent / TEMPLATES_FOLDER
        self._streams: set[asyncio.Queue[Snapshot | None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self.snapshot = self.check(self.recompose())

    def recompose(self) -> Snapshot:
        """Load the config and the issue and compose every tier; never raises. The
        check is left to :meth:`check`, so that the page can show the email first."""
        started = time.perf_counter()
        self._version += 1
        try:
            config = load_config(self.config_path)
            self._templates = config.newsletter.templates
            issue = load_issue(self.issue_path)
            composed = {tier: compose(issue, config, tier) for tier in TIERS}
            snapshot = Snapshot(self._version, composed, None, config, None, _since(started))
        except Exception as exc:
            # Whatever an edit breaks, even a bug of ours, the page shows it and the
            # server waits for the next save; the terminal keeps the traceback.
            if not isinstance(exc, NewsletterError):
                logger.exception("composing %s failed", self.issue_path)
            error = PreviewError.from_exception(exc)
            snapshot = Snapshot(self._version, error=error, milliseconds=_since(started))
        self.snapshot = snapshot
        return snapshot

    def check(self, snapshot: Snapshot) -> Snapshot:
        """``snapshot`` with the check's findings (an error snapshot as it is); never
        raises."""
        checked = snapshot
        if snapshot.error is None and snapshot.config is not None:
            composed = list(snapshot.composed.values())
            issue = composed[0].issue
            try:
                findings = check_composed_issue(issue, composed, snapshot.config).findings
            except Exception as exc:
                logger.exception("checking %s failed", self.issue_path)
                findings = (Finding("error", f"the check could not run: {exc}", issue.path),)
            checked = dataclasses.replace(snapshot, findings=findings)
        if self.snapshot.version == checked.version:
            self.snapshot = checked
        if self._on_update is not None:
            self._on_update(checked)
        return checked

    def watched_paths(self) -> WatchedPaths:
        """The folders to watch now (the templates folder may move with the config)."""
        issue = self.issue_path.resolve()
        config = self.config_path.resolve()
        templates = self._templates.resolve()
        directories = {issue.parent, config.parent}
        if templates.is_dir():
            # Watched one level at a time: a recursive watch of the config's folder
            # would take in .venv, .git and build output.
            directories.add(templates)
            directories.update(path for path in templates.rglob("*") if path.is_dir())
        return WatchedPaths(
            frozenset(d for d in directories if d.is_dir()), frozenset({issue, config}), templates
        )

    def start_watching(self) -> asyncio.Task[None]:
        """Recompose after each change, in a task on the running loop, until :meth:`stop`."""
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        return asyncio.create_task(self._watch(self._stopping))

    async def _watch(self, stopping: asyncio.Event) -> None:
        lock = asyncio.Lock()
        catch_up: asyncio.Task[None] | None = None
        while not stopping.is_set():
            watched = self.watched_paths()
            async for _changes in awatch(
                *watched.directories,
                watch_filter=watched,
                recursive=False,
                step=WATCH_STEP_MS,
                stop_event=stopping,
            ):
                await self._refresh(lock)
                if self.watched_paths() != watched:
                    # A new templates folder or subfolder: watch afresh. A file written
                    # into it before the new watch is up has no event of its own (a
                    # template copied, then edited at once), so look again once it is.
                    catch_up = asyncio.create_task(self._refresh(lock, REWATCH_SECONDS))
                    break
        if catch_up is not None:
            catch_up.cancel()

    async def _refresh(self, lock: asyncio.Lock, delay: float = 0.0) -> None:
        """Recompose and publish, then check and publish again, one refresh at a time."""
        await asyncio.sleep(delay)
        async with lock:
            snapshot = await run_in_threadpool(self.recompose)
            self._publish(snapshot)
            # The pages fetch the new email now; the check would hold the GIL against
            # that, so it waits its turn. Nobody reads findings that fast.
            await asyncio.sleep(CHECK_DELAY_SECONDS)
            checked = await run_in_threadpool(self.check, snapshot)
            if checked is not snapshot:
                self._publish(checked)

    def _publish(self, snapshot: Snapshot) -> None:
        for stream in self._streams:
            stream.put_nowait(snapshot)

    async def updates(self) -> AsyncIterator[Snapshot]:
        """The current snapshot, then each new one, until :meth:`stop`."""
        stream: asyncio.Queue[Snapshot | None] = asyncio.Queue()
        self._streams.add(stream)
        try:
            yield self.snapshot
            while (snapshot := await stream.get()) is not None:
                yield snapshot
        finally:
            self._streams.discard(stream)

    def stop(self) -> None:
        """End the watch and every open event stream; safe to call from any thread or a
        signal handler. Open streams would otherwise keep uvicorn from shutting down."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop)

    def _stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
        for stream in self._streams:
            stream.put_nowait(None)

    def describe(self, snapshot: Snapshot, as_email: str | None) -> dict[str, Any]:
        """What the page shows around the email, as JSON-ready values."""
        state: dict[str, Any] = {
            "key": f"{self.run_id}-{snapshot.version}",
            "issue": str(self.issue_path),
            "milliseconds": round(snapshot.milliseconds),
            "clip_bytes": GMAIL_CLIP_BYTES,
            "error": None,
            "reader": None,
            "reader_problem": None,
            "test_recipients": [],
        }
        if snapshot.error is not None:
            state["error"] = {"where": snapshot.error.where, "reason": snapshot.error.reason}
            return state
        assert snapshot.config is not None
        some = next(iter(snapshot.composed.values()))
        state.update(
            subject=some.subject,
            preheader=some.preheader,
            sizes={tier: composed.html_size for tier, composed in snapshot.composed.items()},
            findings=None
            if snapshot.findings is None
            else [{"severity": f.severity, "text": str(f)} for f in snapshot.findings],
            test_recipients=list(snapshot.config.newsletter.test_recipients),
        )
        if as_email:
            try:
                subscriber = find_reader(snapshot.config, as_email).subscriber
            except NewsletterError as exc:
                state["reader_problem"] = exc.message
            else:
                state["reader"] = {
                    "email": subscriber.email,
                    "name": subscriber.name,
                    "tier": subscriber.tier,
                    "status": subscriber.status,
                }
        return state


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
