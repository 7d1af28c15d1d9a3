"""The reputation brake: a real dispatch to aiosmtpd pauses when complaints recorded
against it mid-run (through the store, as the webhooks record them) pass the limit,
says why in one line, and the same command resumes it."""

from __future__ import annotations

import datetime as dt
import email
import threading
from email import policy
from pathlib import Path

import pytest

from composer.config import SendSettings, SubscriberSettings, load_config
from composer.errors import ConfigError
from composer.sending.brake import brake_reason
from composer.sending.send import send_issue
from composer.store import open_store
from composer.store.feedback import Feedback
from tests.conftest import EXAMPLE_MD, both_backends, fast, subscribe, with_settings
from tests.smtp_server import SmtpServer

LIMITS = SendSettings(
    concurrency=1,
    rate_per_second=0,
    max_attempts=1,
    brake_complaints_percent=0.3,
    brake_bounces_percent=5.0,
    brake_min_delivered=1000,
)


@pytest.mark.parametrize(
    ("complaints", "hard_bounces", "delivered", "pauses"),
    [
        (3, 0, 1000, False),  # 0.3 %: at the limit, not over it
        (4, 0, 1000, True),  # 0.4 %
        (0, 50, 1000, False),  # 5 %
        (0, 51, 1000, True),
        (50, 500, 999, False),  # too few copies yet to tell
        (40, 0, 10_000, True),
        (30, 0, 10_000, False),
    ],
)
def test_the_brake_pauses_only_over_its_limits_and_after_its_minimum(
    complaints, hard_bounces, delivered, pauses
):
    reason = brake_reason(
        LIMITS, complaints=complaints, hard_bounces=hard_bounces, delivered=delivered
    )
    assert (reason is not None) == pauses


def test_the_reason_names_the_count_the_share_and_the_setting_in_one_line():
    reason = brake_reason(LIMITS, complaints=4, hard_bounces=0, delivered=1000)
    assert reason == (
        "the reputation brake: 4 complaints for the 1,000 copies this run delivered"
        " (0.40 %, over [send] brake_complaints_percent = 0.3)"
    )
    bounced = brake_reason(LIMITS, complaints=0, hard_bounces=60, delivered=1000)
    assert bounced is not None and "60 hard bounces" in bounced
    assert "brake_bounces_percent = 5" in bounced


class Complainer:
    """Files a complaint, through the store as the webhooks do, about every
    ``every``-th copy the SMTP server stores, while ``on``."""

    def __init__(self, smtp: SmtpServer, settings: SubscriberSettings, every: int) -> None:
        self.settings = settings
        self.every = every
        self.on = True
        self.stored = 0
        self.filed = 0
        self.lock = threading.Lock()
        smtp.handler.on_message = self.stored_one

    def stored_one(self, sender: str, recipients: list[str], path: Path) -> None:
        with self.lock:
            self.stored += 1
            if not self.on or self.stored % self.every:
                return
            self.filed += 1
            copy = email.message_from_bytes(path.read_bytes(), policy=policy.default)
            with open_store(self.settings, apply_queued=False) as store:
                store.record_feedback(
                    Feedback(
                        kind="complaint",
                        source="ses",
                        event_id=f"complaint-{self.stored}",
                        reason="complaint (abuse)",
                        occurred_at=dt.datetime.now(dt.UTC),
                        message_id=str(copy["Message-ID"]),
                        recipient=recipients[0],
                    )
                )


@both_backends
def test_complaints_past_the_limit_pause_a_running_dispatch_and_the_same_command_resumes(
    send_config, smtp
):
    with_settings(send_config, "send", brake_min_delivered=20, brake_complaints_percent=1)
    addresses = subscribe(send_config, 120)
    config = load_config(send_config)
    complainer = Complainer(smtp, config.subscribers, every=10)
    # Paced so that the brake, asked every 50 ms, sees the run well before its end.
    settings = fast(send_config, rate_per_second=60, brake_seconds=0.05)

    first = send_issue(EXAMPLE_MD, config, "all", settings=settings)
    report = first.report
    assert report.stopped == "paused"
    assert report.reason.startswith("the reputation brake: ")
    assert "complaints for the" in report.reason and "\n" not in report.reason
    assert "brake_complaints_percent = 1" in report.reason
    assert 20 <= report.sent < 100, report.sent
    assert first.status.last_result == f"paused: {report.reason}"

    # The rest get theirs, once, on a rerun of the same command, which the complaints
    # recorded before it do not stop again (the brake counts this run).
    complainer.on = False
    second = send_issue(EXAMPLE_MD, config, "all", settings=settings)
    assert second.report.stopped is None, second.report.reason
    assert second.report.sent == len(addresses) - report.sent
    assert smtp.received() == dict.fromkeys(addresses, 1)
    with open_store(config.subscribers) as store:
        assert store.count_by_status()["complained"] == complainer.filed


def test_a_dispatch_with_no_complaints_runs_to_its_end(send_config, smtp):
    with_settings(send_config, "send", brake_min_delivered=5)
    subscribe(send_config, 30)
    config = load_config(send_config)
    result = send_issue(EXAMPLE_MD, config, "all", settings=fast(send_config, brake_seconds=0.01))
    assert result.report.stopped is None and result.report.sent == 30


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"brake_complaints_percent": 101}, "[send] brake_complaints_percent must be a percentage"),
        ({"brake_bounces_percent": -1}, "[send] brake_bounces_percent must be a percentage"),
        ({"brake_min_delivered": 0}, "[send] brake_min_delivered must be at least 1"),
    ],
)
def test_brake_settings_are_checked_when_config_is_read(send_config, values, problem):
    with_settings(send_config, "send", **values)
    with pytest.raises(ConfigError) as raised:
        load_config(send_config)
    assert problem in raised.value.format_message()
