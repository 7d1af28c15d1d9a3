"""Sending against a real SMTP server on loopback (aiosmtpd, faults injected per
recipient): who received what, and how often."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import ipaddress
import itertools
import os
import re
import resource
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import trustme
from aiosmtpd.smtp import AuthResult, LoginPassword
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from composer.cli import cli
from composer.composing.pipeline import ReaderUrls, compose_file
from composer.composing.render import UNSUBSCRIBE_URL
from composer.composing.scaffold import new_issue
from composer.config import load_config
from composer.errors import (
    DispatchLocked,
    IssueNotReady,
    JournalError,
    SmtpAuthError,
    SmtpConnectError,
)
from composer.reader_links import ReaderLinks
from composer.sending.personalise import MessageTemplate
from composer.sending.send import addresses_for_test, dispatch_status, send_issue
from composer.sending.transport import SmtpTransport
from composer.store import NewSubscriber, open_store
from composer.store.deliveries import Recipient
from composer.store.sqlite.deliveries import SqliteDispatchJournal
from composer.unsubscribe import UnsubscribeLinks
from tests.conftest import (
    EXAMPLE_MD,
    ROOT,
    SECRET,
    fast,
    modules_after_import,
    subscribe,
    with_settings,
)
from tests.smtp_server import SmtpServer


def send(config_path: Path, **overrides):
    config = load_config(config_path)
    return send_issue(EXAMPLE_MD, config, "all", settings=fast(config_path, **overrides)).report


# -- personalisation ---------------------------------------------------------------------


def test_each_copy_decodes_to_the_composed_tier_with_the_readers_own_links(config, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    links = UnsubscribeLinks.from_config(config)
    reader_links = ReaderLinks.from_config(config)
    import email
    from email import policy

    for tier in ("free", "paid"):
        composed = compose_file(EXAMPLE_MD, config, tier)
        template = MessageTemplate.build(composed, config, links=links, reader_links=reader_links)
        ids = set()
        for n in range(3):
            reader = Recipient(
                email=f"r{n}@example.org",
                name=f"Zoë {n}",
                key=f"r{n}@example.org",
                tier=tier,
                subscriber_id=n,
            )
            data = template.render(reader).data
            lines = data.split(b"\r\n")
            assert data.isascii() and b"\n" not in b"".join(lines)
            body_lines = data.split(b"\r\n\r\n", 1)[1].split(b"\r\n")
            assert max(len(line) for line in body_lines) <= 76
            message = email.message_from_bytes(data, policy=policy.default)
            assert not message.defects
            url = links.url(reader.key, composed.issue.slug)
            urls = ReaderUrls(
                unsubscribe=url,
                manage=reader_links.manage_url(reader.key),
                web=reader_links.web_url(reader.key, composed.issue.slug),
            )
            text, html = (p.get_content().replace("\r\n", "\n") for p in message.iter_parts())
            assert text == urls.fill(composed.text)
            assert html == urls.fill(composed.html)
            assert urls.manage in text and urls.manage in html
            assert urls.web in text and urls.web in html
            assert message["To"].addresses[0].display_name == f"Zoë {n}"
            assert (
                message["List-Unsubscribe"]
                == f"<{url}>, <mailto:unsubscribe@example.com?subject=unsubscribe>"
            )
            assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            ids.add(message["Message-ID"])
        assert len(ids) == 3


def test_no_quoted_printable_line_passes_76_characters_wherever_a_link_falls(config):
    import email
    from email import policy

    composed = compose_file(EXAMPLE_MD, config, "paid")
    for width in range(70, 80):
        # The text before each link ends in a line of ``width`` characters, and the link
        # itself (the generic page: base_url + "/unsubscribe") is ``width`` long.
        before, after = "a" * width, "é" * (width // 2)
        text = f"{before}{UNSUBSCRIBE_URL}\n{after}\n"
        page = f'<p>{before}<a href="{UNSUBSCRIBE_URL}">{after}</a></p>'
        base_url = "https://" + "n" * (width - len("https:///unsubscribe"))
        settings = dataclasses.replace(config.newsletter, base_url=base_url)
        variant = dataclasses.replace(composed, text=text, html=page)
        template = MessageTemplate.build(
            variant, dataclasses.replace(config, newsletter=settings), links=None
        )
        reader = Recipient(email="r@example.org", name="R", key="r@example.org", tier="paid")
        data = template.render(reader).data
        body = data.split(b"\r\n\r\n", 1)[1]
        longest = max(body.split(b"\r\n"), key=len)
        assert len(longest) <= 76, (width, longest)
        message = email.message_from_bytes(data, policy=policy.default)
        url = f"{base_url}/unsubscribe"
        plain, rich = (part.get_content() for part in message.iter_parts())
        assert plain.replace("\r\n", "\n") == text.replace(UNSUBSCRIBE_URL, url)
        assert rich == page.replace(UNSUBSCRIBE_URL, url)


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
        reader = Recipient(
            email=f"r{n}@example.org", name=name, key=f"r{n}@example.org", tier="paid"
        )
        data = template.render(reader).data
        header_block = data.split(b"\r\n\r\n", 1)[0]
        fields = {
            line.split(b":", 1)[0].decode().lower()
            for line in header_block.split(b"\r\n")
            if not line.startswith((b" ", b"\t"))
        }
        assert fields == expected, name
    # And through a real server: what arrives has no Bcc and one recipient.
    with pytest.raises(Exception, match="not a plain address"):
        template.render(Recipient(email="a@example.org\r\nRCPT TO:<b@example.org>", tier="paid"))
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


def test_greylisting_every_reader_once_retries_them_all_and_never_pauses(send_config, smtp):
    # What a greylisting server does on first contact: one temporary refusal per reader,
    # more of them in a row than the 50 final failures that pause a dispatch.
    addresses = subscribe(send_config, 60)
    for address in addresses:
        smtp.handler.faults[address] = ["451 4.3.0 try again later"]
    # Retries come back after every first attempt has been made, as they would in earnest.
    report = send(send_config, retry_base=1.0, retry_cap=1.0)
    assert report.stopped is None and report.complete and report.sent == 60
    assert smtp.received() == {address: 1 for address in addresses}
    assert set(smtp.handler.attempts.values()) == {2}


def test_temporary_refusals_that_never_pass_pause_the_dispatch_once_attempts_run_out(
    send_config, smtp
):
    addresses = subscribe(send_config, 40)
    for address in addresses:
        smtp.handler.faults[address] = ["451 4.3.0 try again later"] * 3
    report = send(send_config, pause_after=5)
    assert report.stopped == "paused" and "try again later" in report.reason
    assert report.sent == 0 and report.failed >= 5


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


def test_a_5_1_8_about_the_sender_bounces_no_reader_and_retry_failed_sends_once_fixed(
    send_config, smtp
):
    # Postfix rejects a sender domain it cannot resolve at RCPT (smtpd_delay_reject),
    # with 5.1.8 "bad sender's system address": nothing is wrong with the reader.
    addresses = subscribe(send_config, 3)
    for address in addresses:
        smtp.handler.faults[address] = [
            "550 5.1.8 <news@example.com>: Sender address rejected: Domain not found"
        ]
    report = send(send_config)
    assert report.failed == 3 and report.bounced == 0
    config = load_config(send_config)
    with open_store(config.subscribers) as store:
        assert {store.get(a).status for a in addresses} == {"active"}
    report = send_issue(
        EXAMPLE_MD, load_config(send_config), "all", settings=fast(send_config), retry_failed=True
    ).report
    assert report.sent == 3 and set(smtp.received().values()) == {1}


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


def test_a_server_dropping_every_seventh_message_is_reconnected_at_once(send_config, smtp):
    addresses = subscribe(send_config, 300)
    for address in addresses[6::7]:
        smtp.handler.faults[address] = ["drop"]
    started = time.monotonic()
    # The shipped back-off (2 s, doubling): a replaced connection must not wait for it.
    report = send(send_config, concurrency=4, retry_base=2.0, retry_cap=60.0)
    elapsed = time.monotonic() - started
    assert report.complete and report.sent == 300
    assert smtp.received() == {address: 1 for address in addresses}
    assert elapsed < 10, f"300 messages, 42 dropped connections: {elapsed:.1f} s"


def test_a_server_that_stops_taking_connections_is_reconnected_once_then_waited_for(
    send_config, smtp
):
    subscribe(send_config, 3)
    smtp.handler.faults["reader1@example.org"] = ["drop"]
    with socket.create_server(("127.0.0.1", 0)) as closed:
        dead_port = closed.getsockname()[1]
    config = load_config(send_config)
    live = SmtpTransport(config.smtp)
    dead = SmtpTransport(dataclasses.replace(config.smtp, port=dead_port))
    connects: list[float] = []

    class GoesAway:
        """The server, which refuses every connection after the first."""

        description = live.description

        async def connect(self):
            connects.append(time.monotonic())
            return await (live if len(connects) == 1 else dead).connect()

    settings = fast(send_config, concurrency=1, max_attempts=2, retry_base=0.6, retry_cap=5)
    report = send_issue(EXAMPLE_MD, config, "all", settings=settings, transport=GoesAway()).report
    assert report.sent == 1 and report.failed == 2
    gaps = [later - earlier for earlier, later in itertools.pairwise(connects)]
    # After the drop: a new connection at once. After it failed too: the back-off
    # (0.3-0.6 s, then 0.6-1.2 s) before each further one.
    assert len(connects) == 4 and gaps[0] < 0.3 and all(gap >= 0.3 for gap in gaps[1:]), gaps


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


def test_a_server_that_stores_but_never_answers_the_final_dot_gets_one_retry_then_unknown(
    send_config, smtp
):
    def run(*args: str) -> Result:
        return CliRunner().invoke(cli, [*args, "--config", str(send_config)])

    subscribe(send_config, 4)
    with_settings(send_config, "send", max_attempts=5)
    smtp.handler.stall_seconds = 1.0  # the config's timeout is 0.5 s
    smtp.handler.faults["reader1@example.org"] = ["store-stall"] * 5
    result = run("send", str(EXAMPLE_MD), "--yes")
    assert result.exit_code == 1
    assert smtp.received()["reader1@example.org"] == 2, "the first copy and one retry, no more"
    said = " ".join(result.output.split())
    assert "1 unknown" in said and "--retry-failed --include-unknown`" in said
    assert "--retry-failed` tries" not in said, "nothing failed, nothing to advise"

    status = run("status", str(EXAMPLE_MD))
    assert "unknown" in status.output
    [line] = [line for line in status.output.splitlines() if "reader1@" in line]
    assert "unknown after 2 attempts" in line and "--include-unknown" in line

    again = run("send", str(EXAMPLE_MD), "--yes", "--retry-failed")
    assert "Nothing to send" in again.output, again.output
    alone = run("send", str(EXAMPLE_MD), "--yes", "--include-unknown")
    assert alone.exit_code == 2 and "--retry-failed" in alone.output
    assert smtp.received()["reader1@example.org"] == 2

    smtp.handler.faults["reader1@example.org"] = []
    asked = run("send", str(EXAMPLE_MD), "--yes", "--retry-failed", "--include-unknown")
    assert asked.exit_code == 0, asked.output
    assert smtp.received() == {f"reader{n}@example.org": 3 if n == 1 else 1 for n in range(4)}


def test_after_a_copy_of_unknown_outcome_a_temporary_refusal_ends_it_as_unknown(send_config, smtp):
    subscribe(send_config, 2)
    smtp.handler.stall_seconds = 1.0
    smtp.handler.faults["reader1@example.org"] = ["store-stall", "451 4.3.0 later", "451 later"]
    report = send(send_config, max_attempts=5)
    assert (report.sent, report.failed, report.unknown) == (1, 0, 1)
    assert smtp.handler.attempts["reader1@example.org"] == 2
    assert smtp.received()["reader1@example.org"] == 1
    [row] = dispatch_status(EXAMPLE_MD, load_config(send_config)).failures
    assert (row.email, row.state, row.attempts) == ("reader1@example.org", "unknown", 2)


def test_the_summary_after_a_pause_shows_the_same_counts_as_status(send_config, smtp):
    def run(*args: str) -> Result:
        return CliRunner().invoke(cli, [*args, "--config", str(send_config)])

    addresses = subscribe(send_config, 150)
    for address in addresses:
        smtp.handler.faults[address] = ["data:554 5.7.0 Message rejected"]
    summary = run("send", str(EXAMPLE_MD), "--yes")  # 50 failures in a row pause it
    assert "Paused" in summary.output
    status = run("status", str(EXAMPLE_MD))
    left = dispatch_status(EXAMPLE_MD, load_config(send_config)).not_attempted
    assert left > 50, "most of the list is still to send"
    table = status.output[status.output.index("┏") : status.output.index("┘") + 1]
    assert f"{left:,}" in table
    assert table in summary.output, f"summary:\n{summary.output}\nstatus:\n{status.output}"


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


@dataclasses.dataclass
class RefusingServer:
    """A server that refuses every login, and the mechanisms it was asked to log in with."""

    server: SmtpServer
    mechanisms: list[str]


@pytest.fixture
def refusing_server(send_config, tmp_path, monkeypatch):
    """``send_config`` pointed, with a username and a wrong password, at a server that
    refuses every login; three subscribers wait for the issue."""
    mechanisms: list[str] = []

    def deny(server, session, envelope, mechanism, auth_data):
        mechanisms.append(mechanism)
        return AuthResult(success=False, handled=False, message="535 5.7.8 Bad credentials")

    server = SmtpServer(tmp_path / "auth", authenticator=deny, auth_require_tls=False)
    try:
        with_settings(send_config, "smtp", port=server.port, username='"editor"')
        monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD", "wrong")
        subscribe(send_config, 3)
        yield RefusingServer(server, mechanisms)
    finally:
        server.close()


def test_a_refused_login_stops_before_any_message(send_config, refusing_server):
    with pytest.raises(SmtpAuthError, match="535"):
        send(send_config)
    assert refusing_server.server.handler.attempts.total() == 0
    result = CliRunner().invoke(
        cli, ["send", str(EXAMPLE_MD), "--yes", "--config", str(send_config)]
    )
    assert result.exit_code == 1 and "refused the login" in result.output
    assert "Traceback" not in result.output


def test_a_refused_login_is_tried_with_one_mechanism_so_it_counts_once(
    send_config, refusing_server
):
    with pytest.raises(SmtpAuthError, match="535"):
        send(send_config)
    # aiosmtpd offers LOGIN and PLAIN.
    assert refusing_server.mechanisms == ["PLAIN"]


def test_a_username_for_a_server_that_offers_no_login_stops_before_any_message(
    send_config, smtp, monkeypatch
):
    with_settings(send_config, "smtp", username='"editor"')
    monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD", "sesame")
    subscribe(send_config, 2)
    with pytest.raises(SmtpAuthError, match=r"offers no login .*\(AUTH not offered"):
        send(send_config)
    assert smtp.handler.attempts.total() == 0


def test_a_login_in_clear_to_a_server_off_this_machine_is_refused_unless_allowed(send_config):
    with_settings(send_config, "smtp", host='"smtp.example.net"', username='"editor"')
    result = CliRunner().invoke(
        cli, ["send", str(EXAMPLE_MD), "--yes", "--config", str(send_config)]
    )
    assert result.exit_code == 2
    [line] = result.output.splitlines()
    assert str(send_config) in line and "starttls" in line and "allow_insecure_auth" in line
    with_settings(send_config, "smtp", allow_insecure_auth="true")
    assert load_config(send_config).smtp.allow_insecure_auth
    # Encrypted, without a login, or on this machine: nothing to allow.
    for values in ({"security": '"starttls"'}, {"username": '""'}, {"host": '"127.0.0.2"'},
                   {"host": '"localhost"'}, {"host": '"::1"'}):  # fmt: skip
        with_settings(send_config, "smtp", host='"smtp.example.net"', username='"editor"',
                      security='"none"', allow_insecure_auth="false")  # fmt: skip
        with_settings(send_config, "smtp", **values)
        assert not load_config(send_config).smtp.allow_insecure_auth, values


def test_a_transport_refuses_a_login_in_clear_even_from_settings_never_loaded(send_config):
    settings = dataclasses.replace(
        load_config(send_config).smtp, host="smtp.example.net", username="editor"
    )
    with pytest.raises(SmtpAuthError, match="password would cross the network"):
        SmtpTransport(settings, "sesame")
    SmtpTransport(dataclasses.replace(settings, allow_insecure_auth=True), "sesame")
    SmtpTransport(dataclasses.replace(settings, host="127.0.0.1"), "sesame")


def test_starttls_is_required_when_configured_so_a_stripped_offer_sends_nothing(send_config, smtp):
    with_settings(send_config, "smtp", security='"starttls"')
    subscribe(send_config, 2)
    with pytest.raises(SmtpConnectError, match="STARTTLS"):
        send(send_config)
    assert smtp.handler.attempts.total() == 0


def test_send_refuses_an_issue_check_finds_errors_in_unless_skip_check(send_config, smtp, tmp_path):
    subscribe(send_config, 4)
    skeleton = new_issue(tmp_path / "issues", "first-issue")  # "TK" for every title and text
    for flags in (["--yes"], ["--dry-run"]):
        result = CliRunner().invoke(
            cli, ["send", str(skeleton), *flags, "--config", str(send_config)]
        )
        assert result.exit_code == 1, result.output
        assert result.output.startswith(f"Error: {skeleton}: ")
        assert 'check errors (the first: the title still has a "TK" placeholder' in result.output
        assert f"fix them (newsletter check {skeleton}) or pass --skip-check" in result.output
        assert len(result.output.splitlines()) == 1, result.output
    assert smtp.messages() == []
    with pytest.raises(IssueNotReady):
        send_issue(skeleton, load_config(send_config), "all", settings=fast(send_config))
    assert smtp.messages() == []

    result = CliRunner().invoke(
        cli, ["send", str(skeleton), "--yes", "--skip-check", "--config", str(send_config)]
    )
    assert result.exit_code == 0, result.output
    assert len(smtp.messages()) == 4


def test_check_warnings_do_not_stop_a_send(send_config, smtp, tmp_path):
    subscribe(send_config, 2)
    issue = tmp_path / "short-preheader.md"
    text = EXAMPLE_MD.read_text(encoding="utf-8")
    issue.write_text(re.sub(r"(?m)^preheader = .*$", 'preheader = "Short"', text), "utf-8")
    result = CliRunner().invoke(cli, ["check", str(issue), "--config", str(send_config)])
    assert result.exit_code == 0 and "warning" in result.output, result.output
    result = CliRunner().invoke(cli, ["send", str(issue), "--yes", "--config", str(send_config)])
    assert result.exit_code == 0, result.output
    assert len(smtp.messages()) == 2


def test_dry_run_and_status_need_no_password_and_open_no_connection(send_config, monkeypatch):
    # A real listening port: a connection would wait in its queue for accept() to find.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        config_path = with_settings(send_config, "smtp", port=port, username='"editor"')
        monkeypatch.delenv("NEWSLETTER_SMTP_PASSWORD", raising=False)
        subscribe(config_path, 3)
        for command in (["send", "--dry-run"], ["status"]):
            result = CliRunner().invoke(
                cli, [*command, str(EXAMPLE_MD), "--config", str(config_path)]
            )
            assert result.exit_code == 0, result.output
        assert (
            f"127.0.0.1:{port}"
            in CliRunner()
            .invoke(cli, ["send", "--dry-run", str(EXAMPLE_MD), "--config", str(config_path)])
            .output
        )
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()


def test_only_the_outbox_imports_aiosmtpd():
    imported = modules_after_import(
        "composer.sending.send", "composer.web.preview", "composer.web.serve"
    )
    assert "aiosmtpd" not in imported


# -- international addresses -------------------------------------------------------------


def test_an_international_domain_is_sent_as_punycode_once_with_its_punycode_twin(
    send_config, smtp, tmp_path
):
    rows = "email,name\nute@bücher.de,Ute\nUTE@xn--bcher-kva.de,Twin\nann@example.org,Ann\n"
    (tmp_path / "list.csv").write_text(rows, encoding="utf-8")
    result = CliRunner().invoke(
        cli, ["subscribers", "import", str(tmp_path / "list.csv"), "--config", str(send_config)]
    )
    assert result.exit_code == 0, result.output
    report = send(send_config)
    assert report.complete and report.sent == 2
    assert smtp.received() == {"ute@xn--bcher-kva.de": 1, "ann@example.org": 1}
    assert smtp.handler.attempts["ute@xn--bcher-kva.de"] == 1
    assert all(options == [] for _, _, options in smtp.handler.envelopes)
    [ute] = [m for m in smtp.messages() if "bcher" in str(m["To"])]
    assert ute["To"].addresses[0].display_name == "Ute" and not ute["To"].defects


def subscribe_addresses(config_path: Path, names: dict[str, str]) -> None:
    config = load_config(config_path)
    with open_store(config.subscribers) as store:
        for address, name in names.items():
            store.save(NewSubscriber(address, address.lower(), name=name, tier="paid"))


def test_a_non_ascii_local_part_goes_with_smtputf8_where_the_server_offers_it(
    send_config, tmp_path
):
    import email
    from email import policy

    server = SmtpServer(tmp_path / "utf8", enable_SMTPUTF8=True)
    try:
        config_path = with_settings(send_config, "smtp", port=server.port)
        subscribe_addresses(config_path, {"jörg@bücher.de": "Jörg", "ann@example.org": "Ann"})
        report = send(config_path)
        assert report.complete and report.sent == 2
        envelopes = {rcpt: options for _, [rcpt], options in server.handler.envelopes}
        assert envelopes == {"jörg@xn--bcher-kva.de": ["SMTPUTF8"], "ann@example.org": []}
        [raw] = [p.read_bytes() for p in server.folder.messages() if not p.read_bytes().isascii()]
        header_block = raw.split(b"\r\n\r\n", 1)[0]
        assert header_block.isascii() is False and b"\n" not in header_block.replace(b"\r\n", b"")
        message = email.message_from_string(raw.decode("utf-8"), policy=policy.default)
        [to] = message["To"].addresses
        assert (to.display_name, to.addr_spec) == ("Jörg", "jörg@xn--bcher-kva.de")
        assert len(message.get_all("To")) == 1 and message["Subject"]
    finally:
        server.close()


def test_a_non_ascii_local_part_is_a_clear_failure_for_that_reader_without_smtputf8(
    send_config, smtp
):
    subscribe_addresses(send_config, {"jörg@example.de": "Jörg", "ann@example.org": "Ann"})
    report = send(send_config)
    assert report.sent == 1 and report.failed == 1 and report.bounced == 0
    [failure] = report.failures
    assert failure.recipient.email == "jörg@example.de"
    assert "SMTPUTF8" in failure.reply and "jörg@example.de" in failure.reply
    assert smtp.received() == {"ann@example.org": 1}
    assert smtp.handler.attempts.total() == 1, "nothing was sent for jörg"
    result = CliRunner().invoke(cli, ["status", str(EXAMPLE_MD), "--config", str(send_config)])
    assert "jörg@example.de" in result.output and "SMTPUTF8" in result.output


# -- TLS and login ------------------------------------------------------------------------
#
# Certificates are made per test session: a CA (trustme) that issues the server's
# certificate for 127.0.0.1, and the client trusts it through [smtp] ca_file.


@pytest.fixture(scope="module")
def ca():
    return trustme.CA(key_type=trustme.KeyType.ECDSA)


def trusted_server(ca) -> ssl.SSLContext:
    """A server context with a certificate for 127.0.0.1 signed by ``ca``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost", key_type=trustme.KeyType.ECDSA).configure_cert(context)
    return context


def self_signed_server(folder: Path) -> ssl.SSLContext:
    """A server context with a self-signed certificate for 127.0.0.1 (valid, but no CA)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(exist_ok=True)
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context


def tls_server(tmp_path: Path, security: str, context: ssl.SSLContext, **options) -> SmtpServer:
    """A server speaking ``security`` (``starttls``: offered and required; ``tls``:
    implicit) with ``context``."""
    if security == "starttls":
        return SmtpServer(tmp_path / "tls", tls_context=context, require_starttls=True, **options)
    return SmtpServer(tmp_path / "tls", implicit_tls=context, **options)


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_delivers_over_tls_to_a_server_whose_certificate_the_ca_file_trusts(
    send_config, tmp_path, ca, security
):
    ca.cert_pem.write_to_path(str(tmp_path / "relay-ca.pem"))
    server = tls_server(tmp_path, security, trusted_server(ca))
    try:
        # ca_file is relative to config.toml, which is in tmp_path.
        config_path = with_settings(
            send_config,
            "smtp",
            port=server.port,
            security=f'"{security}"',
            ca_file='"relay-ca.pem"',
        )
        subscribe(config_path, 3)
        report = send(config_path)
        assert report.complete and report.sent == 3
        assert len(server.handler.sessions) == 3
        assert all(cipher is not None for cipher, _ in server.handler.sessions), "in clear"
    finally:
        server.close()


@pytest.mark.parametrize("security", ["starttls", "tls"])
@pytest.mark.parametrize("trust", ["self-signed", "unknown CA"])
def test_an_untrusted_certificate_stops_before_any_login_or_message(
    send_config, tmp_path, ca, monkeypatch, security, trust
):
    logins = []

    def record(server, session, envelope, mechanism, auth_data):
        logins.append(auth_data)
        return AuthResult(success=True)

    if trust == "self-signed":
        # The client trusts the test CA, and the server shows a certificate of its own.
        ca.cert_pem.write_to_path(str(tmp_path / "relay-ca.pem"))
        context, ca_file = self_signed_server(tmp_path / "self"), {"ca_file": '"relay-ca.pem"'}
    else:
        # The client trusts the system's CAs only; the test CA is not among them.
        context, ca_file = trusted_server(ca), {}
    server = tls_server(tmp_path, security, context, authenticator=record)
    try:
        config_path = with_settings(
            send_config,
            "smtp",
            port=server.port,
            security=f'"{security}"',
            username='"editor"',
            **ca_file,
        )
        monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD", "sesame")
        subscribe(config_path, 2)
        with pytest.raises(SmtpConnectError, match="certificate verification failed"):
            send(config_path)
        result = CliRunner().invoke(
            cli, ["send", str(EXAMPLE_MD), "--yes", "--config", str(config_path)]
        )
        assert result.exit_code == 1
        [line] = result.output.strip().splitlines()[-1:]
        assert "certificate verification failed" in line and "ca_file" in line
        assert "Traceback" not in result.output
        assert logins == [] and server.handler.attempts.total() == 0
    finally:
        server.close()


def test_login_over_starttls_uses_the_named_variable_and_a_535_stops_before_any_message(
    send_config, tmp_path, ca, monkeypatch
):
    ca.cert_pem.write_to_path(str(tmp_path / "relay-ca.pem"))

    def check(server, session, envelope, mechanism, auth_data):
        if auth_data == LoginPassword(b"editor", b"sesame"):
            return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False, message="535 5.7.8 No")

    # aiosmtpd offers AUTH only once the session is encrypted (auth_require_tls).
    server = tls_server(tmp_path, "starttls", trusted_server(ca), authenticator=check)
    try:
        config_path = with_settings(
            send_config,
            "smtp",
            port=server.port,
            security='"starttls"',
            ca_file='"relay-ca.pem"',
            username='"editor"',
            password_env='"RELAY_PASSWORD"',
        )
        subscribe(config_path, 3)
        monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD", "sesame")  # not the named variable
        monkeypatch.setenv("RELAY_PASSWORD", "wrong")
        with pytest.raises(SmtpAuthError, match="535"):
            send(config_path)
        assert server.handler.attempts.total() == 0

        monkeypatch.setenv("RELAY_PASSWORD", "sesame")
        report = send(config_path)
        assert report.complete and report.sent == 3
        assert {login for _, login in server.handler.sessions} == {b"editor"}
        assert all(cipher is not None for cipher, _ in server.handler.sessions)
    finally:
        server.close()


def test_a_ca_file_that_is_missing_or_not_pem_is_a_config_error(send_config, tmp_path):
    from composer.errors import ConfigError

    with_settings(send_config, "smtp", ca_file='"missing.pem"')
    with pytest.raises(ConfigError, match=r"\[smtp\] ca_file .*missing.pem"):
        load_config(send_config)
    (tmp_path / "notes.pem").write_text("not a certificate\n")
    with_settings(send_config, "smtp", ca_file='"notes.pem"')
    with pytest.raises(ConfigError, match="PEM certificates"):
        load_config(send_config)


def test_a_second_process_on_the_same_issue_is_turned_away(send_config, smtp):
    subscribe(send_config, 3)
    config = load_config(send_config)
    slug = compose_file(EXAMPLE_MD, config, "paid").issue.slug
    with open_store(config.subscribers) as store, store.deliveries(slug) as holder:
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


def test_a_test_copy_with_no_reply_to_its_end_is_reported_unknown_not_failed(send_config, smtp):
    smtp.handler.stall_seconds = 1.0
    smtp.handler.faults["ed@example.org"] = ["store-stall", "store-stall"]
    result = CliRunner().invoke(
        cli, ["send-test", str(EXAMPLE_MD), "--to", "ed@example.org", "--config", str(send_config)]
    )
    assert result.exit_code == 1
    assert "0 of 1 sent, 0 failed, 1 unknown (may have arrived)" in result.output
    assert smtp.received() == {"ed@example.org": 2}


def test_a_test_goes_to_the_given_addresses_else_to_test_recipients(config):
    assert addresses_for_test(config, ["me@example.org"]) == ("me@example.org",)
    assert addresses_for_test(config) == ("editor@example.com",)


def test_a_test_goes_to_each_reader_once_in_the_spelling_first_given(config):
    # Twice in a dispatch, one reader's two deferred copies would share one retry slot.
    given = ["Ed@example.org", "me@example.org", "ed@example.org", "ED@EXAMPLE.ORG"]
    assert addresses_for_test(config, given) == ("Ed@example.org", "me@example.org")


def test_an_address_given_twice_in_any_case_gets_one_test_copy(send_config, smtp):
    result = CliRunner().invoke(
        cli,
        ["send-test", str(EXAMPLE_MD), "--to", "ed@example.org", "--to", "me@example.org",
         "--to", "ed@example.org", "--to", "ED@example.org", "--config", str(send_config)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert smtp.received() == {"ed@example.org": 1, "me@example.org": 1}


def test_send_test_with_no_address_anywhere_is_one_line_naming_the_setting(send_config, smtp):
    text = send_config.read_text(encoding="utf-8")
    send_config.write_text(text.replace('["editor@example.com"]', "[]"), encoding="utf-8")
    result = CliRunner().invoke(cli, ["send-test", str(EXAMPLE_MD), "--config", str(send_config)])
    assert result.exit_code == 2
    [line] = result.output.splitlines()
    assert str(send_config) in line and "[newsletter] test_recipients" in line and "--to" in line
    assert smtp.handler.attempts.total() == 0


@pytest.mark.parametrize("address", ["bad", "Ann <ann@example.com>"])
def test_send_test_to_an_invalid_address_is_one_line_naming_it_and_sends_nothing(
    send_config, smtp, address
):
    result = CliRunner().invoke(
        cli,
        ["send-test", str(EXAMPLE_MD), "--to", "ed@example.org", "--to", address,
         "--config", str(send_config)],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    [line] = result.output.splitlines()
    assert line.startswith(f"Error: send-test --to {address!r} is not a valid address: ")
    assert "such as ann@example.com" in line
    assert smtp.handler.attempts.total() == 0


def test_an_invalid_test_recipient_in_the_config_is_one_line_naming_it(send_config, smtp):
    text = send_config.read_text(encoding="utf-8")
    send_config.write_text(
        text.replace('"editor@example.com"]', '"Ed <ed@example.com>"]'), encoding="utf-8"
    )
    result = CliRunner().invoke(cli, ["send-test", str(EXAMPLE_MD), "--config", str(send_config)])
    assert result.exit_code == 2, result.output
    [line] = result.output.splitlines()
    assert str(send_config) in line and "test_recipients has 'Ed <ed@example.com>'" in line
    assert smtp.handler.attempts.total() == 0


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
    counts = dispatch_status(EXAMPLE_MD, load_config(send_config)).counts
    assert counts["sent"] == stored, "every message the server took is recorded as sent"
    assert counts["sending"] == 0


def test_a_full_disk_stops_the_dispatch_in_one_line_and_a_rerun_sends_nobody_twice(
    send_config, smtp
):
    addresses = subscribe(send_config, 300)
    smtp.handler.data_delay = 0.002
    config = load_config(send_config)
    database = config.subscribers.database
    # No file may grow past the database's size plus room for a few dozen commits: the
    # journal's log fills it mid-dispatch and the kernel refuses the write, as a full
    # disk would.
    limit = database.stat().st_size + 120_000

    def disk_fills_up() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    command = [sys.executable, "-m", "composer", "send", str(EXAMPLE_MD), "--yes",
               "--concurrency", "8", "--config", str(send_config)]  # fmt: skip
    env = {**os.environ, "NEWSLETTER_SECRET": SECRET}
    started = time.monotonic()
    full = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        preexec_fn=disk_fills_up,
    )  # fmt: skip
    assert time.monotonic() - started < 15
    assert full.returncode == 2, full.stderr
    assert "Traceback" not in full.stderr
    [line] = full.stderr.strip().splitlines()
    assert "cannot record the dispatch" in line and "run the same command" in line, line
    accepted = smtp.messages()
    assert 0 < len(accepted) < 300, "the disk filled up mid-dispatch"
    with open_store(config.subscribers) as store:
        states = [
            store.find_delivery(str(message["Message-ID"])).delivery.state for message in accepted
        ]
    assert set(states) == {"sent"}, "every message the server took is recorded as sent"

    rerun = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert smtp.received() == {address: 1 for address in addresses}, "nobody gets it twice"


def test_a_journal_out_of_room_stops_at_once_and_names_every_copy_a_rerun_sends_again(
    send_config, smtp, monkeypatch
):
    addresses = subscribe(send_config, 300)
    config = load_config(send_config)
    acquire = SqliteDispatchJournal.acquire

    def acquire_with_no_room_to_grow(
        journal: SqliteDispatchJournal, segment: str, **options: float
    ) -> None:
        acquire(journal, segment, **options)
        # Past this many pages SQLite answers SQLITE_FULL, "database or disk is full",
        # exactly as it does when the disk itself has no room left.
        pages = journal._db.execute("PRAGMA page_count").fetchone()[0]
        journal._db.execute(f"PRAGMA max_page_count = {pages + 1}")

    monkeypatch.setattr(SqliteDispatchJournal, "acquire", acquire_with_no_room_to_grow)
    raised: list[BaseException] = []

    def dispatch() -> None:
        try:
            send_issue(EXAMPLE_MD, config, "all", settings=fast(send_config, concurrency=8))
        except BaseException as exc:
            raised.append(exc)

    worker = threading.Thread(target=dispatch, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "the dispatch hangs once its journal cannot be written"
    [error] = raised
    assert isinstance(error, JournalError), error
    assert "database or disk is full" in error.message and "lock is released" in error.message
    accepted = smtp.messages()
    with open_store(config.subscribers) as store:
        states = collections.Counter(
            store.find_delivery(str(message["Message-ID"])).delivery.state for message in accepted
        )
    assert not dispatch_status(EXAMPLE_MD, config).running
    assert set(states) <= {"sent", "sending"}, "a copy the server took is never lost"
    assert states["sending"] == error.unsaved <= 8, "the line counts what a rerun sends again"
    if error.unsaved:
        assert f"{error.unsaved} copies" in error.message

    monkeypatch.undo()
    assert send(send_config).complete
    received = smtp.received()
    assert set(received) == set(addresses)
    assert sum(received.values()) - len(addresses) == error.unsaved


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

    def notes(text: str) -> str:
        return text.split("NOTES")[1].split("Share this issue")[0]

    assert ".5 percent" in notes(composed.text)
    assert notes(text.replace("\r\n", "\n")) == notes(composed.text)


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


def test_a_database_held_by_another_writer_is_one_clear_error(tmp_path):
    import sqlite3

    from composer.errors import StoreError
    from composer.store.sqlite import SqliteSubscriberStore

    database = tmp_path / "subscribers.db"
    with SqliteSubscriberStore(database) as store, store.deliveries("issue") as journal:
        other = sqlite3.connect(database, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            # The real wait is 10 s; a test need not sit through it.
            journal._db.execute("PRAGMA busy_timeout = 50")
            with pytest.raises(StoreError, match=r"busy.*try again in a moment"):
                journal.acquire("all")
        finally:
            other.execute("ROLLBACK")
            other.close()
        journal.acquire("all")  # once the other writer is done, the lock is taken
