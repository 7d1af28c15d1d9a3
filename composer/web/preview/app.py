"""The preview's ASGI app (:func:`create_app`, starlette, like ``newsletter serve``):

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

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from importlib.resources import files
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from composer.errors import NewsletterError, SendError
from composer.model import TIERS
from composer.sending.dispatch import DispatchReport
from composer.sending.send import addresses_for_test, send_test
from composer.web.guards import BodyLimit, LoopbackHostOnly, SecurityHeaders
from composer.web.preview.live import Preview
from composer.web.preview.snapshot import PreviewError, email_copy, find_reader

logger = logging.getLogger(__name__)

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


def _refusal(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status, headers=_NO_STORE)
