"""``newsletter preview``: the composed email in a local page that follows every save.

:class:`Preview` composes the issue for every tier with the pipeline ``build`` uses
and lints it with ``check``, then recomposes whenever the issue file, a template or
config.toml changes (watched with watchfiles). Each result is a :class:`Snapshot`:
the composed variants, then the same with the check's findings, or the error that
stopped the composition, so a broken edit is shown in the page instead of stopping
the server.

The app (:func:`create_app`, starlette, like ``newsletter serve``) answers:

- ``GET /``: the page, a toolbar around the email in frames (static; it escapes
  everything it shows because it only ever sets text, never markup);
- ``GET /email?tier=&format=html|text&as=``: exactly the bytes ``build`` writes,
  or a subscriber's copy with their own unsubscribe link;
- ``GET /state?as=``: the snapshot as JSON (subject, sizes, findings, error);
- ``GET /events?as=``: the same JSON as server-sent events, once on connecting and
  again after each recomposition and each check, which is how the page reloads
  itself (a new ``key`` is a new email; the check's findings follow with the same key);
- ``POST /send-test`` (``{"tier": …}`` or ``?tier=``): what ``newsletter send-test``
  does, to ``[newsletter] test_recipients``; only from the page itself (see
  :func:`from_the_page`), and answered with :func:`send_test_outcome`'s JSON.

Every route answers only a request naming ``127.0.0.1:PORT`` or ``localhost:PORT``
(anything else, such as a name rebound to this machine, gets 403 and nothing more),
takes a body of at most :data:`MAX_BODY_BYTES`, and may be framed by the page only
(:mod:`composer.web.guards`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import secrets
import socket
import threading
import time
import webbrowser
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import quote

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp
from watchfiles import Change, awatch

from composer.composing.check import Finding, check_composed_issue
from composer.composing.load import load_issue
from composer.composing.pipeline import (
    GMAIL_CLIP_BYTES,
    ComposedIssue,
    compose,
    generic_unsubscribe_url,
)
from composer.config import TEMPLATES_FOLDER, Config, load_config
from composer.errors import (
    AddressRejected,
    IssueError,
    NewsletterError,
    SendError,
    SubscriberError,
    location,
)
from composer.model import TIERS, Tier
from composer.sending.dispatch import DispatchReport
from composer.sending.send import addresses_for_test, send_test
from composer.store import Subscriber, open_store
from composer.store.membership import AddressChecker
from composer.unsubscribe import UnsubscribeLinks
from composer.web.guards import BodyLimit, LoopbackHostOnly, SecurityHeaders

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
# watchfiles yields once no further change has arrived for this long: an editor's
# save (write a temporary file, rename it over the old one) lands as one batch.
WATCH_STEP_MS = 15
CHECK_DELAY_SECONDS = 0.1
_NO_STORE = {"Cache-Control": "no-store"}
_HTML = "text/html; charset=utf-8"
_TEXT = "text/plain; charset=utf-8"
# The page sends this header with every request that acts; see from_the_page.
GUARD_HEADER = "X-Newsletter-Preview"
# The page frames its own /email; nothing else may frame any of it.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "SAMEORIGIN",
    "Content-Security-Policy": "frame-ancestors 'self'",
    "Referrer-Policy": "no-referrer",
}
# The largest body accepted: only send-test takes one, {"tier": "paid"}.
MAX_BODY_BYTES = 4096


@dataclass(frozen=True)
class PreviewError:
    """Why the latest composition failed: ``where`` is ``file:line:column`` when known."""

    where: str | None
    reason: str

    @classmethod
    def from_exception(cls, exc: Exception) -> PreviewError:
        if isinstance(exc, IssueError):
            return cls(location(exc.path, exc.line, exc.column), exc.reason)
        if isinstance(exc, NewsletterError):
            return cls(None, exc.message)
        return cls(None, f"unexpected {type(exc).__name__}: {exc} (details in the terminal)")

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}" if self.where else self.reason


@dataclass(frozen=True)
class Snapshot:
    """One composition of the issue: every tier's email with the placeholder unsubscribe
    link still in it, and the check findings (None until the check has run); or the
    error instead of both."""

    version: int
    composed: Mapping[Tier, ComposedIssue] = field(default_factory=dict)
    findings: tuple[Finding, ...] | None = None
    config: Config | None = None
    error: PreviewError | None = None
    milliseconds: float = 0.0


@dataclass(frozen=True)
class Reader:
    """A subscriber the preview is shown as: their tier and their own unsubscribe link."""

    subscriber: Subscriber
    links: UnsubscribeLinks


def find_reader(config: Config, email: str) -> Reader:
    """The subscriber ``email`` on ``config``'s list, or :class:`SubscriberError`."""
    database = config.subscribers.database
    # Looking someone up must not leave an empty database behind as a side effect.
    if not database.exists():
        raise SubscriberError(f"no subscriber list yet at {database}; add subscribers first")
    try:
        key = AddressChecker().key(email.strip())
    except AddressRejected as exc:
        raise SubscriberError(f"{email!r} is not a valid address: {exc.reason}") from exc
    with open_store(config.subscribers) as store:
        subscriber = store.get(key)
    if subscriber is None:
        raise SubscriberError(f"{email} is not on the subscriber list")
    return Reader(subscriber, UnsubscribeLinks.from_config(config))


def email_copy(snapshot: Snapshot, tier: Tier, reader: Reader | None = None) -> ComposedIssue:
    """The copy a reader of ``tier`` gets, as ``build`` writes it, or ``reader``'s own copy
    (their tier, their unsubscribe link)."""
    assert snapshot.config is not None and not snapshot.error
    if reader is None:
        return snapshot.composed[tier].with_unsubscribe_url(
            generic_unsubscribe_url(snapshot.config)
        )
    composed = snapshot.composed[reader.subscriber.tier]
    return composed.with_unsubscribe_url(
        reader.links.url(reader.subscriber.key, composed.issue.slug)
    )


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
        while not stopping.is_set():
            watched = self.watched_paths()
            async for _changes in awatch(
                *watched.directories,
                watch_filter=watched,
                recursive=False,
                step=WATCH_STEP_MS,
                stop_event=stopping,
            ):
                snapshot = await run_in_threadpool(self.recompose)
                self._publish(snapshot)
                # The pages fetch the new email now; the check would hold the GIL
                # against that, so it waits its turn. Nobody reads findings that fast.
                await asyncio.sleep(CHECK_DELAY_SECONDS)
                checked = await run_in_threadpool(self.check, snapshot)
                if checked is not snapshot:
                    self._publish(checked)
                if self.watched_paths() != watched:
                    break  # a new templates folder or subfolder: watch afresh

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


def from_the_page(request: Request) -> bool:
    """Whether ``request``, one that acts (sends mail), comes from the preview page itself.

    Another site's page cannot set a custom header on a request to this origin without a
    CORS preflight, which this app never grants; and the Origin, when the browser sends
    one, must be ours. (A page on a rebound name, same-origin with itself, never gets
    here: :class:`~composer.web.guards.LoopbackHostOnly` refuses its Host first.)
    """
    host = request.headers.get("host", "")
    origin = request.headers.get("origin")
    return request.headers.get(GUARD_HEADER) == "1" and origin in (None, f"http://{host}")


def send_test_outcome(report: DispatchReport, to: tuple[str, ...]) -> dict[str, Any]:
    """What the page shows after a test send: how many of ``to`` were sent, and each
    failed address with the server's code and reply."""
    return {
        "sent": report.sent,
        "recipients": list(to),
        "failed": [
            {"address": outcome.recipient.email, "code": outcome.code, "reply": outcome.reply}
            for outcome in report.failures
        ],
        # Only a run that stopped early (a string of failures) has something to add.
        "error": report.reason or None,
    }


def create_app(preview: Preview) -> ASGIApp:
    """The preview's ASGI app; its lifespan runs :meth:`Preview.start_watching`."""
    page = files("composer.web").joinpath("preview.html").read_text(encoding="utf-8")

    async def index(request: Request) -> Response:
        return HTMLResponse(page, headers=_NO_STORE)

    async def email(request: Request) -> Response:
        tier = request.query_params.get("tier", "paid")
        format_ = request.query_params.get("format", "html")
        if tier not in TIERS or format_ not in ("html", "text"):
            return Response("tier is free or paid; format is html or text", 400)
        snapshot = preview.snapshot
        if snapshot.error is not None or snapshot.config is None:
            return Response(str(snapshot.error), 503, headers=_NO_STORE)
        reader = None
        if as_email := request.query_params.get("as"):
            try:
                reader = await run_in_threadpool(find_reader, snapshot.config, as_email)
            except NewsletterError as exc:
                return Response(exc.message, 404, headers=_NO_STORE)
        copy = email_copy(snapshot, tier, reader)
        if format_ == "text":
            return Response(copy.text.encode("utf-8"), headers=_NO_STORE, media_type=_TEXT)
        return Response(copy.html.encode("utf-8"), headers=_NO_STORE, media_type=_HTML)

    async def state(request: Request) -> Response:
        described = await run_in_threadpool(
            preview.describe, preview.snapshot, request.query_params.get("as")
        )
        return JSONResponse(described, headers=_NO_STORE)

    async def events(request: Request) -> Response:
        as_email = request.query_params.get("as")

        async def stream() -> AsyncIterator[str]:
            # A page whose server restarted reconnects within half a second.
            yield "retry: 500\n\n"
            async for snapshot in preview.updates():
                described = await run_in_threadpool(preview.describe, snapshot, as_email)
                yield f"data: {json.dumps(described)}\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream", headers=_NO_STORE)

    async def send_test_copy(request: Request) -> Response:
        if not from_the_page(request):
            return _refusal(403, "only the preview page itself may send a test")
        tier: object = request.query_params.get("tier")
        if tier is None and (raw := await request.body()):
            try:
                body = json.loads(raw)
            except ValueError:
                return _refusal(400, "the body is not JSON")
            tier = body.get("tier") if isinstance(body, dict) else None
        if tier not in TIERS:
            return _refusal(400, "tier is free or paid")
        snapshot = preview.snapshot
        if snapshot.error is not None or snapshot.config is None:
            return _refusal(409, f"fix the issue before sending a test: {snapshot.error}")
        try:
            to = addresses_for_test(snapshot.config)
            # The send talks SMTP on its own event loop in a worker thread, so this
            # loop keeps streaming reloads meanwhile.
            report = await run_in_threadpool(
                send_test, preview.issue_path, snapshot.config, tier, to
            )
        # Whatever goes wrong is the page's to show; the preview keeps running.
        except SendError as exc:  # the mail server is down, refused the login, ...
            return _refusal(502, exc.message)
        # No test recipients, or the issue or config broke since the snapshot.
        except NewsletterError as exc:
            return _refusal(409, str(PreviewError.from_exception(exc)))
        except Exception as exc:
            logger.exception("sending a test of %s failed", preview.issue_path)
            return _refusal(500, str(PreviewError.from_exception(exc)))
        return JSONResponse(send_test_outcome(report, to), headers=_NO_STORE)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        watcher = preview.start_watching()
        try:
            yield
        finally:
            preview.stop()
            await watcher

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/email", email),
            Route("/state", state),
            Route("/events", events),
            Route("/send-test", send_test_copy, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
    # The host check comes first: a request from a rebound name learns nothing, not even
    # how large a body may be.
    guarded = LoopbackHostOnly(BodyLimit(app, MAX_BODY_BYTES))
    return SecurityHeaders(guarded, SECURITY_HEADERS)


class PreviewServer(uvicorn.Server):
    """uvicorn serving a :class:`Preview`, which ends the pages' event streams on Ctrl+C
    so that shutting down does not wait for browsers to hang up."""

    def __init__(self, preview: Preview) -> None:
        super().__init__(
            uvicorn.Config(create_app(preview), log_level="warning", timeout_graceful_shutdown=3)
        )
        self.preview = preview

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.preview.stop()
        super().handle_exit(sig, frame)

    def stop(self) -> None:
        """Shut down from another thread (tests, the benchmark)."""
        self.preview.stop()
        self.should_exit = True


def listen(port: int) -> socket.socket:
    """A socket listening on ``127.0.0.1:port`` (0: any free port), or a readable error."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
        # Listening at once queues a browser that connects before uvicorn has started.
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise NewsletterError(
            f"cannot listen on {HOST}:{port} ({exc.strerror}); pass --port N (0 picks a free one)"
        ) from exc
    return sock


def page_url(sock: socket.socket, as_email: str | None = None) -> str:
    """The preview page's address on ``sock``, showing ``as_email``'s copy if given."""
    port = sock.getsockname()[1]
    return f"http://{HOST}:{port}/" + (f"?as={quote(as_email)}" if as_email else "")


def serve_preview(
    issue_path: Path,
    config_path: Path,
    *,
    port: int,
    open_browser: bool,
    as_email: str | None,
    echo: Callable[[str], None],
) -> None:
    """Run ``newsletter preview`` until Ctrl+C, reporting each recomposition to ``echo``."""

    def report(snapshot: Snapshot) -> None:
        now = time.strftime("%H:%M:%S")
        if snapshot.error is not None:
            echo(f"{now} {snapshot.error}")
        else:
            findings = snapshot.findings or ()
            errors = sum(f.severity == "error" for f in findings)
            warnings = len(findings) - errors
            echo(
                f"{now} composed in {snapshot.milliseconds:.0f} ms:"
                f" {errors} error(s), {warnings} warning(s)"
            )

    preview = Preview(issue_path, config_path, on_update=report)
    if as_email:
        # A wrong address is a usage error: say so before serving anything.
        find_reader(preview.snapshot.config or load_config(config_path), as_email)
    sock = listen(port)
    url = page_url(sock, as_email)
    echo(f"Previewing {issue_path} at {url} (Ctrl+C to stop)")
    if open_browser:
        # Some browsers keep webbrowser.open waiting until they exit.
        threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()
    # uvicorn re-raises the Ctrl+C it caught once it has shut down cleanly.
    with contextlib.suppress(KeyboardInterrupt):
        PreviewServer(preview).run(sockets=[sock])
    echo("Stopped.")


def _refusal(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status, headers=_NO_STORE)


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
