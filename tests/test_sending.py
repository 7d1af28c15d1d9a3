"""Sending against a real SMTP server on loopback (aiosmtpd, faults injected per
recipient): who received what, and how often."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from composer.__main__ import cli
from composer.composing.pipeline import compose_file
from composer.composing.render import UNSUBSCRIBE_URL
from composer.config import load_config
from composer.errors import DispatchLocked, SmtpAuthError, SmtpConnectError
from composer.sending import Recipient
from composer.sending.dispatch import DispatchSettings
from composer.sending.journal import SqliteDispatchJournal
from composer.sending.personalise import MessageTemplate
from composer.sending.send import send_issue
from composer.store import NewSubscriber, open_store
from composer.unsubscribe import UnsubscribeLinks
from tests.conftest import EXAMPLE_MD, ROOT, SECRET, with_smtp
from tests.smtp_server import SmtpServer


def subscribe(config_path: Path, count: int) -> list[str]:
    """``count`` subscribers reader<n>@example.org, every third paid; returns addresses."""
    config = load_config(config_path)
    addresses = [f"reader{n}@example.org" for n in range(count)]
    with open_store(config.subscribers) as store:
        store.import_many(
            NewSubscriber(
                email=address,
                key=address,
                name=f"Reader {n}",
                tier="paid" if n % 3 == 0 else "free",
            )
            for n, address in enumerate(addresses)
        )
    return addresses


def fast(config_path: Path, **overrides) -> DispatchSettings:
    config = load_config(config_path)
    values = dict(
        sender=config.newsletter.sender.addr_spec,
        concurrency=2,
        max_attempts=3,
        retry_base=0.01,
        retry_cap=0.05,
    )
    values.update(overrides)
    return DispatchSettings(**values)


def send(config_path: Path, **overrides):
    config = load_config(config_path)
    return send_issue(EXAMPLE_MD, config, "all", settings=fast(config_path, **overrides)).report


# -- personalisation ---------------------------------------------------------------------


def test_each_copy_decodes_to_the_composed_tier_with_the_readers_own_link(config, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    links = UnsubscribeLinks.from_config(config)
    import email
    from email import policy

    for tier in ("free", "paid"):
        composed = compose_file(EXAMPLE_MD, config, tier)
        template = MessageTemplate.build(composed, config, links=links)
        ids = set()
        for n in range(3):
            reader = Recipient(f"r{n}@example.org", f"Zoë {n}", f"r{n}@example.org", tier, n)
            data = template.render(reader)
            lines = data.split(b"\r\n")
            assert data.isascii() and b"\n" not in b"".join(lines)
            body_lines = data.split(b"\r\n\r\n", 1)[1].split(b"\r\n")
            assert max(len(line) for line in body_lines) <= 76
            message = email.message_from_bytes(data, policy=policy.default)
            assert not message.defects
            url = links.url(reader.key, composed.issue.slug)
            text, html = (p.get_content().replace("\r\n", "\n") for p in message.iter_parts())
            assert text == composed.text.replace(UNSUBSCRIBE_URL, url)
            assert html == composed.html.replace(UNSUBSCRIBE_URL, url)
            assert message["To"].addresses[0].display_name == f"Zoë {n}"
            assert (
                message["List-Unsubscribe"]
                == f"<{url}>, <mailto:unsubscribe@example.com?subject=unsubscribe>"
            )
            assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            ids.add(message["Message-ID"])
        assert len(ids) == 3


def test_crlf_in_a_name_or_subject_never_adds_a_header_on_the_wire(send_config, smtp):
    config = load_config(send_config)
    composed = compose_file(EXAMPLE_MD, config, "paid")
    composed = dataclasses.replace(composed, subject="Hello\r\nBcc: victim@example.net")
    template = MessageTemplate.build(composed, config, links=None)
    names = [
        "Ann\r\nBcc: victim@example.net",
        "Ann\nBcc: victim@example.net",
        "Ann\rBcc: victim@example.net",
        "Zoë\r\nBcc: victim@example.net",
        'Ann" <x@example.net>\r\nBcc: victim@example.net',
    ]
    expected = {
        "to", "message-id", "subject", "from", "reply-to", "date", "mime-version", "content-type",
    }  # fmt: skip
    for n, name in enumerate(names):
        data = template.render(Recipient(f"r{n}@example.org", name, f"r{n}@example.org"))
        header_block = data.split(b"\r\n\r\n", 1)[0]
        fields = {
            line.split(b":", 1)[0].decode().lower()
            for line in header_block.split(b"\r\n")
            if not line.startswith((b" ", b"\t"))
        }
        assert fields == expected, name
    # And through a real server: what arrives has no Bcc and one recipient.
    with pytest.raises(Exception, match="not a plain ASCII address"):
        template.render(Recipient("a@example.org\r\nRCPT TO:<b@example.org>"))
    subscribe(send_config, 0)
    with open_store(config.subscribers) as store:
        store.save(NewSubscriber("ann@example.org", "ann@example.org", name=names[0], tier="paid"))
    report = send(send_config)
    assert report.sent == 1
    [message] = smtp.messages()
    assert "Bcc" not in message and message["To"].addresses[0].addr_spec == "ann@example.org"


# -- dispatch ----------------------------------------------------------------------------


def test_every_active_subscriber_gets_their_tier_once_and_a_rerun_sends_nothing(send_config, smtp):
    addresses = subscribe(send_config, 30)
    config = load_config(send_config)
    with open_store(config.subscribers) as store:
        store.mark_status("reader1@example.org", "unsubscribed", "test")
    report = send(send_config)
    assert report.complete and report.sent == 29
    received = smtp.received()
    assert set(received) == set(addresses) - {"reader1@example.org"}
    assert set(received.values()) == {1}
    for message in smtp.messages():
        n = int(message["To"].addresses[0].username.removeprefix("reader"))
        text = message.get_body(("plain",)).get_content()
        assert ("Keep reading" in text) == (n % 3 != 0), "free readers get the free edition"

    again = send(send_config)
    assert again.sent == 0 and again.complete
    assert len(smtp.messages()) == 29


def test_451_is_retried_with_backoff_then_delivered_once(send_config, smtp):
    subscribe(send_config, 5)
    smtp.handler.faults["reader2@example.org"] = [
        "451 4.7.1 Greylisted, try again",
        "451 4.7.1 again",
    ]
    report = send(send_config)
    assert report.complete and report.sent == 5
    assert smtp.received()["reader2@example.org"] == 1
    assert smtp.handler.attempts["reader2@example.org"] == 3


def test_a_550_no_such_user_fails_that_one_marks_them_bounced_and_the_rest_go(
    send_config, smtp, tmp_path
):
    subscribe(send_config, 10)
    smtp.handler.faults["reader4@example.org"] = ["550 5.1.1 No such user here"]
    report = send(send_config)
    assert report.sent == 9 and report.failed == 1 and report.bounced == 1
    assert not report.complete
    assert "reader4@example.org" not in smtp.received()
    assert smtp.handler.attempts["reader4@example.org"] == 1, "a 5xx is never retried"
    config = load_config(send_config)
    with open_store(config.subscribers) as store:
        assert store.get("reader4@example.org").status == "bounced"

    result = CliRunner().invoke(cli, ["status", str(EXAMPLE_MD), "--config", str(send_config)])
    assert result.exit_code == 0
    assert "reader4@example.org" in result.output and "No such user here" in result.output

    result = CliRunner().invoke(
        cli, ["send", str(EXAMPLE_MD), "--yes", "--retry-failed", "--config", str(send_config)]
    )
    assert smtp.handler.attempts["reader4@example.org"] == 1, "a bounced address is never retried"


def test_temporary_failures_that_run_out_of_attempts_are_failed_and_retry_failed_sends_them(
    send_config, smtp
):
    subscribe(send_config, 4)
    smtp.handler.faults["reader3@example.org"] = ["452 4.2.2 Mailbox full"] * 3
    smtp.handler.faults["reader2@example.org"] = ["550 5.7.1 Refused by policy"]
    report = send(send_config)
    assert report.sent == 2 and report.failed == 2
    result = CliRunner().invoke(
        cli, ["send", str(EXAMPLE_MD), "--yes", "--config", str(send_config)]
    )
    assert "Nothing to send" in result.output, "a plain rerun leaves failures alone"
    report = send_issue(
        EXAMPLE_MD, load_config(send_config), "all", settings=fast(send_config), retry_failed=True
    ).report
    assert report.sent == 1 and report.failed == 0
    received = smtp.received()
    assert received["reader3@example.org"] == 1
    assert "reader2@example.org" not in received, "a refused address is not retried"


def test_a_connection_dropped_mid_data_is_resent_on_a_new_connection(send_config, smtp):
    subscribe(send_config, 6)
    smtp.handler.faults["reader3@example.org"] = ["drop"]
    smtp.handler.faults["reader5@example.org"] = ["421"]
    report = send(send_config)
    assert report.complete and report.sent == 6
    assert set(smtp.received().values()) == {1}
    assert smtp.handler.attempts["reader3@example.org"] == 2
    assert smtp.handler.attempts["reader5@example.org"] == 2


def test_a_server_that_stalls_past_the_timeout_is_abandoned_and_the_message_retried(
    send_config, smtp
):
    subscribe(send_config, 4)
    smtp.handler.stall_seconds = 2.0  # the config's timeout is 0.5 s
    smtp.handler.faults["reader1@example.org"] = ["stall"]
    started = time.monotonic()
    report = send(send_config)
    assert report.complete and report.sent == 4
    assert smtp.received()["reader1@example.org"] == 1
    assert time.monotonic() - started < 5


def test_consecutive_failures_pause_the_dispatch_instead_of_burning_the_list(send_config, smtp):
    subscribe(send_config, 40)
    for n in range(40):
        smtp.handler.faults[f"reader{n}@example.org"] = ["data:554 5.7.0 Message rejected"]
    report = send(send_config, pause_after=5)
    assert report.stopped == "paused" and "Message rejected" in report.reason
    assert report.sent == 0
    assert sum(smtp.handler.attempts.values()) < 10
    result = CliRunner().invoke(cli, ["status", str(EXAMPLE_MD), "--config", str(send_config)])
    assert "not yet attempted" in result.output


def test_a_refused_login_stops_before_any_message(send_config, tmp_path, monkeypatch):
    from aiosmtpd.smtp import AuthResult

    def deny(server, session, envelope, mechanism, auth_data):
        return AuthResult(success=False, handled=False, message="535 5.7.8 Bad credentials")

    server = SmtpServer(tmp_path / "auth", authenticator=deny, auth_require_tls=False)
    try:
        config_path = with_smtp(send_config, port=server.port, username='"editor"')
        monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD", "wrong")
        subscribe(config_path, 3)
        with pytest.raises(SmtpAuthError, match="535"):
            send(config_path)
        assert server.handler.attempts.total() == 0
        result = CliRunner().invoke(
            cli, ["send", str(EXAMPLE_MD), "--yes", "--config", str(config_path)]
        )
        assert result.exit_code == 1 and "refused the login" in result.output
        assert "Traceback" not in result.output
    finally:
        server.close()


def test_starttls_is_required_when_configured_so_a_stripped_offer_sends_nothing(send_config, smtp):
    with_smtp(send_config, security='"starttls"')
    subscribe(send_config, 2)
    with pytest.raises(SmtpConnectError, match="STARTTLS"):
        send(send_config)
    assert smtp.handler.attempts.total() == 0


def test_a_second_process_on_the_same_issue_is_turned_away(send_config, smtp):
    subscribe(send_config, 3)
    config = load_config(send_config)
    slug = compose_file(EXAMPLE_MD, config, "paid").issue.slug
    with SqliteDispatchJournal(config.subscribers.database, slug) as holder:
        holder.acquire("all")
        with pytest.raises(DispatchLocked):
            send(send_config)
        result = CliRunner().invoke(
            cli, ["send", str(EXAMPLE_MD), "--yes", "--config", str(send_config)]
        )
        assert result.exit_code == 1 and "already being sent" in result.output
    assert smtp.messages() == []
    assert send(send_config).sent == 3, "the lock is released with the holder"


def test_send_test_goes_only_to_the_given_addresses_with_a_test_subject(send_config, smtp):
    subscribe(send_config, 3)
    result = CliRunner().invoke(
        cli,
        ["send-test", str(EXAMPLE_MD), "--to", "ed@example.org", "--to", "me@example.org",
         "--tier", "free", "--config", str(send_config)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(smtp.received()) == ["ed@example.org", "me@example.org"]
    assert all(m["Subject"].startswith("[TEST] ") for m in smtp.messages())


def test_a_killed_dispatch_resumes_with_no_one_missed_and_at_most_concurrency_duplicates(
    send_config, smtp
):
    addresses = subscribe(send_config, 300)
    smtp.handler.data_delay = 0.004
    command = [sys.executable, "-m", "composer", "send", str(EXAMPLE_MD), "--yes",
               "--concurrency", "4", "--config", str(send_config)]  # fmt: skip
    env = {**os.environ, "NEWSLETTER_SECRET": SECRET}
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while len(smtp.folder.messages()) < 80:
        assert process.poll() is None, "the dispatch ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = len(smtp.folder.messages())
    assert killed_at < 300

    rerun = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    received = smtp.received()
    assert set(received) == set(addresses), "no one is skipped"
    duplicates = sum(received.values()) - len(addresses)
    assert duplicates <= 4, f"{duplicates} duplicates with 4 connections"
    status = CliRunner().invoke(cli, ["status", str(EXAMPLE_MD), "--config", str(send_config)])
    assert "300" in status.output


def test_ctrl_c_stops_after_the_messages_in_flight_and_records_them(send_config, smtp):
    subscribe(send_config, 300)
    smtp.handler.data_delay = 0.004
    command = [sys.executable, "-m", "composer", "send", str(EXAMPLE_MD), "--yes",
               "--config", str(send_config)]  # fmt: skip
    env = {**os.environ, "NEWSLETTER_SECRET": SECRET}
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while len(smtp.folder.messages()) < 40:
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 1
    assert "to resume" in err and "Traceback" not in err
    stored = len(smtp.folder.messages())
    assert stored < 300
    config = load_config(send_config)
    with SqliteDispatchJournal(config.subscribers.database, EXAMPLE_MD.stem) as journal:
        counts = journal.status().counts
    assert counts["sent"] == stored, "every message the server took is recorded as sent"
    assert counts["sending"] == 0


def test_rate_limits_message_starts(send_config, smtp):
    subscribe(send_config, 11)
    started = time.monotonic()
    report = send(send_config, rate_per_second=50.0)
    assert report.sent == 11
    assert time.monotonic() - started >= 0.18


def test_lines_starting_with_a_dot_survive_the_smtp_transaction(send_config, smtp, write_issue):
    issue = write_issue(
        '+++\ntitle = "Dots"\ndate = 2024-05-03\n+++\n\n## Notes\n\n.\n\n.5 percent\n\n..two\n'
    )
    subscribe(send_config, 1)
    config = load_config(send_config)
    send_issue(issue, config, "all", settings=fast(send_config))
    [message] = smtp.messages()
    text = message.get_body(("plain",)).get_content()
    composed = compose_file(issue, config, "paid")
    assert (
        text.replace("\r\n", "\n").split("Unsubscribe:")[0]
        == composed.text.split("Unsubscribe:")[0]
    )


def test_outbox_command_stores_each_message_and_prints_a_line(tmp_path, config_path):
    env = {**os.environ, "NEWSLETTER_SECRET": SECRET}
    outbox = subprocess.Popen(
        [sys.executable, "-m", "composer", "outbox", "--port", "0", "--dir", str(tmp_path / "box"),
         "--config", str(config_path)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        ready = outbox.stdout.readline()
        port = int(ready.split("127.0.0.1:")[1].split(",")[0])
        with_smtp_port = config_path.read_text() + f"\n[smtp]\nport = {port}\ntimeout = 5\n"
        config_path.write_text(with_smtp_port)
        result = CliRunner(env={"NEWSLETTER_SECRET": SECRET}).invoke(
            cli, ["send-test", str(EXAMPLE_MD), "--config", str(config_path)]
        )
        assert result.exit_code == 0, result.output
        line = outbox.stdout.readline()
        assert "editor@example.com" in line and ".eml" in line
        [stored] = list((tmp_path / "box").glob("*.eml"))
        assert b"Subject: [TEST] " in stored.read_bytes()
    finally:
        outbox.send_signal(signal.SIGINT)
        outbox.wait(timeout=10)
