"""The MIME message: structure, headers and encodings a mail client expects."""

from __future__ import annotations

import email
from email import policy

from composer.composing.message import build_message
from composer.composing.pipeline import compose_file
from tests.conftest import EXAMPLE_MD


def _parsed(message):
    return email.message_from_bytes(message.as_bytes(), policy=policy.default)


def test_message_is_multipart_alternative_with_text_then_html(config):
    composed = compose_file(EXAMPLE_MD, config, "paid")
    parsed = _parsed(build_message(composed, config, to="Reader <reader@example.org>"))
    assert parsed.get_content_type() == "multipart/alternative"
    parts = list(parsed.iter_parts())
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]
    assert all(part.get_content_charset() == "utf-8" for part in parts)
    assert parts[0].get_content().replace("\r\n", "\n") == composed.text
    assert parts[1].get_content().replace("\r\n", "\n").rstrip("\n") == composed.html.rstrip("\n")


def test_headers_come_from_the_config_and_the_issue(config):
    composed = compose_file(EXAMPLE_MD, config, "paid")
    parsed = _parsed(build_message(composed, config, to="reader@example.org"))
    assert parsed["Subject"] == "The data pipeline behind the apps everyone uses"
    assert parsed["From"] == "China Boss News <news@example.com>"
    assert parsed["Reply-To"] == "editor@example.com"
    assert parsed["To"] == "reader@example.org"
    assert parsed["MIME-Version"] == "1.0"
    assert parsed["Date"].datetime is not None
    assert parsed["Message-ID"].endswith("@example.com>")


def test_each_message_gets_a_unique_message_id(config):
    composed = compose_file(EXAMPLE_MD, config, "paid")
    ids = {build_message(composed, config)["Message-ID"] for _ in range(20)}
    assert len(ids) == 20


def test_wire_format_has_crlf_lines_within_the_smtp_limit(config):
    composed = compose_file(EXAMPLE_MD, config, "paid")
    data = build_message(composed, config).as_bytes()
    lines = data.split(b"\r\n")
    assert b"\n" not in b"".join(lines), "every line ends in CRLF"
    assert max(len(line) for line in lines) <= 78
    assert data.isascii(), "8-bit text is quoted-printable encoded"


def test_non_ascii_subject_is_encoded_and_decodes_back(write_issue, config):
    path = write_issue('title = "本周 — “quotes” 📈"\ndate = 2024-05-03\n', "u.toml")
    composed = compose_file(path, config, "paid")
    message = build_message(composed, config, subject_prefix="[TEST] ")
    assert message.as_bytes().isascii()
    assert _parsed(message)["Subject"] == "[TEST] 本周 — “quotes” 📈"


def test_a_title_cannot_inject_a_header(write_issue, config):
    path = write_issue('title = "Hi\\r\\nBcc: victim@example.com"\ndate = 2024-05-03\n', "i.toml")
    data = build_message(compose_file(path, config, "paid"), config).as_bytes()
    header_block = data.split(b"\r\n\r\n", 1)[0]
    assert not any(line.startswith(b"Bcc:") for line in header_block.split(b"\r\n"))
