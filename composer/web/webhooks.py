"""Mail that comes back, as email service providers report it to ``newsletter serve``:
``POST /webhooks/<service>`` for each service ``[webhooks] services`` lists (``ses``,
``postmark``, ``mailgun``, ``sendgrid``; any other is 404).

A request is verified by its service's own method (:mod:`composer.web.esp`) or refused
with 401, recording nothing; a verified one that cannot be read is 400. Each bounce or
complaint it reports is recorded through the store
(:meth:`~composer.store.SubscriberStore.record_feedback`), which keeps every event once:
the same event again, however often a service retries, changes nothing. A database that
stays busy is 503, so the service tries again later. The answer is JSON: what each event
did. Secrets come from the environment variables the settings name, read once when the
service starts, and never appear in a log line.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from composer.config import Config, SubscriberSettings, WebhookService
from composer.errors import ConfigError, MalformedWebhook, StoreError, WebhookRefused
from composer.store import open_store
from composer.store.feedback import Feedback, FeedbackResult
from composer.web.esp import Webhook
from composer.web.esp.mailgun import MailgunWebhook
from composer.web.esp.postmark import PostmarkWebhook
from composer.web.esp.sendgrid import SendgridWebhook, load_public_key
from composer.web.esp.ses import SesWebhook
from composer.web.esp.sns import SnsFetcher

log = logging.getLogger(__name__)

PREFIX = "/webhooks/"
# The largest webhook body accepted: an SNS message is at most 256 KB, and the other
# services batch their events well within it. Every other route keeps its small cap.
MAX_BODY_BYTES = 256 * 1024


def routes(config: Config, fetcher: SnsFetcher | None = None) -> list[Route]:
    """``/webhooks/<service>`` for each service ``config`` lists; SNS certificates and
    subscription confirmations are fetched through ``fetcher`` (default: from
    ``sns.<region>.amazonaws.com`` only). A secret missing from the environment is a
    :class:`ConfigError` naming its variable."""
    hooks = [webhook(service, config, fetcher) for service in config.webhooks.services]
    return [
        Route(f"{PREFIX}{hook.source}", _endpoint(hook, config), methods=["POST"]) for hook in hooks
    ]


def webhook(service: WebhookService, config: Config, fetcher: SnsFetcher | None) -> Webhook:
    """The verifier and reader of ``service``'s webhook, with its secret."""
    settings = config.webhooks
    match service:
        case "ses":
            return SesWebhook(settings.ses_topic_arn, settings.max_age, fetcher or SnsFetcher())
        case "postmark":
            password = _secret(
                config, "postmark_password_env", "the password in Postmark's webhook URL"
            )
            return PostmarkWebhook(settings.postmark_username, password)
        case "mailgun":
            key = _secret(config, "mailgun_signing_key_env", "Mailgun's webhook signing key")
            return MailgunWebhook(key.encode(), settings.max_age)
        case "sendgrid":
            text = _secret(config, "sendgrid_public_key_env", "SendGrid's verification key")
            try:
                public_key = load_public_key(text)
            except ValueError as exc:
                variable = settings.sendgrid_public_key_env
                raise ConfigError(
                    f"{config.path}: the environment variable {variable} ([webhooks]"
                    f" sendgrid_public_key_env) holds {exc}; set it to the verification key"
                    " SendGrid shows under Mail Settings, Signed Event Webhook"
                ) from exc
            return SendgridWebhook(public_key, settings.max_age)


def _secret(config: Config, setting: str, what: str) -> str:
    """The secret in the environment variable ``[webhooks] setting`` names."""
    variable: str = getattr(config.webhooks, setting)
    value = os.environ.get(variable, "")
    if not value:
        service = setting.split("_", 1)[0]
        raise ConfigError(
            f"{config.path}: [webhooks] services lists {service}, but the environment variable"
            f" {variable} ([webhooks] {setting}) is not set; set it to {what}"
        )
    return value


def _endpoint(hook: Webhook, config: Config) -> Callable[[Request], Awaitable[Response]]:
    settings = config.subscribers
    soft_limit = config.bounces.soft_limit

    async def receive(request: Request) -> Response:
        body = await request.body()
        try:
            events = await run_in_threadpool(hook.read, body, request.headers, time.time())
        except WebhookRefused as exc:
            log.warning("/webhooks/%s refused: %s", hook.source, exc)
            headers = (
                {"WWW-Authenticate": 'Basic realm="webhooks"'} if hook.source == "postmark" else {}
            )
            return PlainTextResponse("not verified", 401, headers=headers)
        except MalformedWebhook as exc:
            log.warning("/webhooks/%s unreadable: %s", hook.source, exc)
            return PlainTextResponse(f"unreadable: {exc}", 400)
        try:
            results = await run_in_threadpool(_record, settings, events, soft_limit)
        except StoreError as exc:
            log.error("/webhooks/%s not recorded: %s", hook.source, exc.format_message())
            return PlainTextResponse("not recorded, try again", 503)
        for result in results:
            log.info(
                "%s %s from %s: %s",
                result.feedback.source,
                result.feedback.kind,
                result.email or result.feedback.recipient or "an unknown reader",
                result.effect,
            )
        return JSONResponse({"effects": [result.effect for result in results]})

    return receive


def _record(
    settings: SubscriberSettings, events: Sequence[Feedback], soft_limit: int
) -> list[FeedbackResult]:
    with open_store(settings, apply_queued=False) as store:
        # One transaction for the request: a retry after a failure finds none of it recorded.
        return store.record_feedback_batch(events, soft_limit=soft_limit)
