"""Bounce reports read from the formats servers send: RFC 3464 DSNs, RFC 5965 ARF
complaints, the non-standard bounces of Exim, qmail and Yahoo, and auto-replies."""

from __future__ import annotations

import pytest

from composer.bounces.parse import read_report
from tests.bounce_reports import MESSAGE_ID, RECIPIENT, report

# fixture -> (report kind, kind of each finding, the copy's Message-ID found)
EXPECTED = {
    "postfix-dsn-hard": ("failure", ["hard"], True),
    "postfix-dsn-delayed": ("failure", ["soft"], True),
    "sendmail-dsn-expired": ("failure", ["soft"], True),
    "gmail-dsn-hard": ("failure", ["hard"], True),
    "office365-ndr-hard": ("failure", ["hard"], True),
    "exchange-dsn-policy-block": ("failure", ["soft"], True),
    "exim-bounce-hard": ("failure", ["hard"], True),
    "exim-bounce-plain": ("failure", ["hard"], True),
    "qmail-bounce": ("failure", ["hard"], True),
    "yahoo-bounce": ("failure", ["hard"], True),
    "arf-abuse": ("complaint", ["complaint"], True),
    "vacation-auto-submitted": ("auto-reply", [], False),
    "outlook-out-of-office": ("auto-reply", [], False),
    "x-autoreply": ("auto-reply", [], False),
    "precedence-auto-reply": ("auto-reply", [], False),
    "human-reply": ("not-understood", [], False),
    "garbage": ("not-understood", [], False),
}


@pytest.mark.parametrize("name", EXPECTED)
def test_each_format_is_read_for_its_kind_recipient_and_copy(name: str) -> None:
    kind, findings, has_copy = EXPECTED[name]
    read = read_report(report(name))
    assert read.kind == kind
    assert [finding.kind for finding in read.findings] == findings
    for finding in read.findings:
        assert finding.recipient == RECIPIENT
        assert finding.reason
    assert (read.message_id == MESSAGE_ID) == has_copy


def test_a_dsn_keeps_the_status_and_the_servers_words() -> None:
    [finding] = read_report(report("postfix-dsn-hard")).findings
    assert finding.reason.startswith("5.1.1 smtp; 550 5.1.1 <ann@example.org>: Recipient")
    assert "User unknown in virtual mailbox table" in finding.reason


def test_a_non_standard_bounce_gives_the_servers_reply_as_its_reason() -> None:
    [finding] = read_report(report("exim-bounce-plain")).findings
    assert "550 No such user here" in finding.reason


def test_a_complaint_with_the_recipient_redacted_still_names_the_copy() -> None:
    read = read_report(report("arf-redacted"))
    assert read.kind == "complaint"
    assert read.message_id == MESSAGE_ID
    assert "abuse" in read.findings[0].reason


def test_a_report_is_known_by_its_own_message_id_or_else_by_a_digest() -> None:
    assert read_report(report("postfix-dsn-hard", event="7")).event_id.startswith(
        "<20240503120102.4VQ1x2.7@"
    )
    first = read_report(report("garbage", event="a")).event_id
    assert first.startswith("sha256:")
    assert first == read_report(report("garbage", event="a")).event_id
    assert first != read_report(report("garbage", event="b")).event_id


def test_the_address_a_report_came_back_to_is_kept_for_its_return_token() -> None:
    read = read_report(report("qmail-bounce", to="bounces+1f-abcdefgh-x@news.example.com"))
    assert "bounces+1f-abcdefgh-x@news.example.com" in read.delivered_to
