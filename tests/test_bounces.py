"""Bounces and complaints read from a real mailbox (a Maildir, and dovecot over IMAP) into
the list, after a real dispatch to the test SMTP server with VERP return paths."""

from __future__ import annotations

import imaplib
import itertools
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from composer.config import load_config
from composer.returnpath import ReturnPaths
from composer.sending.send import send_issue
from composer.store import open_store
from composer.unsubscribe import load_secret
from tests.bounce_reports import BOUNCES, report
from tests.conftest import EXAMPLE_MD, both_backends, fast, newsletter, subscribe
from tests.imap_server import PASSWORD as IMAP_PASSWORD
from tests.imap_server import USER as IMAP_USER
from tests.imap_server import Dovecot
from tests.imap_server import available as imap_available
from tests.smtp_server import SmtpServer

_names = itertools.count()


def bounce_settings(config_path: Path, source: str, **more: str) -> None:
    extra = "".join(f"{key} = {value}\n" for key, value in more.items())
    config_path.write_text(
        config_path.read_text(encoding="utf-8")
        + f'\n[bounces]\naddress = "{BOUNCES}"\nsource = "{source}"\n{extra}',
        encoding="utf-8",
    )


def maildir(path: Path) -> Path:
    for sub in ("new", "cur", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def deliver(folder: Path, raw: bytes) -> None:
    (folder / "new" / f"1714737600.M{next(_names)}P1.test").write_bytes(raw)


def dispatch(config_path: Path) -> None:
    """Send the example to every subscriber."""
    config = load_config(config_path)
    result = send_issue(EXAMPLE_MD, config, "all", settings=fast(config_path))
    assert result.report.complete


def copies(smtp: SmtpServer) -> dict[str, tuple[str, str]]:
    """What the server received: per reader, the copy's return path and Message-ID."""
    paths = {rcpts[0]: str(sender) for sender, rcpts, _ in smtp.handler.envelopes}
    return {
        message["To"].addresses[0].addr_spec: (
            paths[message["To"].addresses[0].addr_spec],
            str(message["Message-ID"]),
        )
        for message in smtp.messages()
    }


def statuses(config_path: Path) -> dict[str, str]:
    with open_store(load_config(config_path).subscribers) as store:
        return {subscriber.email: subscriber.status for subscriber in store.iter_all()}


def test_every_copy_goes_out_from_its_own_signed_return_path(send_config, smtp) -> None:
    bounce_settings(send_config, "maildir:bounces")
    addresses = subscribe(send_config, 12)
    dispatch(send_config)
    config = load_config(send_config)
    paths = ReturnPaths(BOUNCES, load_secret(config.path))
    sent = copies(smtp)
    assert set(sent) == set(addresses)
    tokens = {paths.token_of(return_path) for return_path, _ in sent.values()}
    assert None not in tokens and len(tokens) == len(addresses)
    assert all(len(path.split("@")[0]) <= 64 for path, _ in sent.values())


def test_the_outbox_keeps_each_copys_return_path_in_its_file(send_config, smtp) -> None:
    bounce_settings(send_config, "maildir:bounces")
    subscribe(send_config, 2)
    dispatch(send_config)
    for reader, (return_path, _) in copies(smtp).items():
        [stored] = [m for m in smtp.messages() if reader in str(m["To"])]
        assert stored["Return-Path"] == f"<{return_path}>"
        assert return_path.startswith("bounces+")


def test_without_a_bounce_address_copies_go_out_from_the_sender(send_config, smtp) -> None:
    subscribe(send_config, 3)
    dispatch(send_config)
    assert {sender for sender, _, _ in smtp.handler.envelopes} == {"news@example.com"}


@both_backends
def test_200_reports_for_150_readers_bounce_exactly_the_right_ones_once(
    send_config, smtp, tmp_path
) -> None:
    box = maildir(tmp_path / "bounces")
    bounce_settings(send_config, "maildir:bounces")
    readers = subscribe(send_config, 160)
    dispatch(send_config)
    sent = copies(smtp)

    def about(n: int, name: str, *, verp: bool = False, event: str = "") -> bytes:
        address = readers[n]
        return_path, message_id = sent[address]
        return report(
            name,
            recipient=address,
            message_id=message_id,
            to=return_path if verp else BOUNCES,
            event=event or f"{name}.{n}",
        )

    plan: list[bytes] = []
    hard = set(range(80)) | set(range(140, 150))
    plan += [about(n, "postfix-dsn-hard", verp=True) for n in range(40)]
    plan += [about(n, "gmail-dsn-hard") for n in range(40, 60)]
    plan += [about(n, "exim-bounce-plain") for n in range(60, 70)]
    plan += [about(n, "qmail-bounce", verp=True) for n in range(70, 80)]
    plan += [
        about(n, "postfix-dsn-delayed", event=f"d{n}.{k}") for n in range(80, 90) for k in (1, 2)
    ]
    plan += [about(n, "exchange-dsn-policy-block") for n in range(90, 100)]
    autos = (
        "vacation-auto-submitted",
        "outlook-out-of-office",
        "x-autoreply",
        "precedence-auto-reply",
    )
    plan += [
        about(n, autos[k], event=f"a{n}.{k}") for n in range(100, 120) for k in (n % 4, (n + 1) % 4)
    ]
    plan += [about(n, "arf-abuse") for n in range(120, 130)]
    plan += [about(n, "human-reply") for n in range(130, 140)]
    plan += [about(n, "yahoo-bounce") for n in range(140, 150)]
    plan += [report("garbage", event=f"g{n}") for n in range(10)]
    plan += [about(n, "postfix-dsn-hard", verp=True) for n in range(10)]  # the same reports again
    assert len(plan) == 200
    for raw in plan:
        deliver(box, raw)

    first = newsletter("bounces", "fetch", config_path=send_config, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert (
        "200 messages: 90 bounced, 30 soft, 10 complaints, 40 auto-replies ignored,"
        " 0 unmatched, 0 about readers already inactive, 10 recorded before,"
        " 20 not understood"
    ) in first.stdout
    assert first.stdout.count("not understood, left in the mailbox") == 20

    expected = {
        address: "bounced" if n in hard else "complained" if 120 <= n < 130 else "active"
        for n, address in enumerate(readers)
    }
    assert statuses(send_config) == expected
    assert len(list((box / "new").iterdir())) == 20  # only what was not understood

    again = newsletter("bounces", "fetch", config_path=send_config, cwd=tmp_path)
    assert "20 messages: 0 bounced, 0 soft, 0 complaints" in again.stdout
    assert statuses(send_config) == expected

    # A crash after recording but before marking: the reports come back unmarked.
    for path in (box / "cur").iterdir():
        path.rename(box / "new" / path.name.partition(":")[0])
    rerun = newsletter("bounces", "fetch", config_path=send_config, cwd=tmp_path)
    assert "0 bounced, 0 soft, 0 complaints, 40 auto-replies ignored" in rerun.stdout
    assert "140 recorded before" in rerun.stdout
    assert statuses(send_config) == expected

    status = newsletter("status", EXAMPLE_MD, config_path=send_config, cwd=tmp_path)
    assert "Came back: 90 copies bounced, 10 complained about" in status.stdout
    assert "90 hard bounces, 30 soft, 10 complaints" in status.stdout
    listed = newsletter("bounces", "list", "--limit", "5", config_path=send_config, cwd=tmp_path)
    assert len(listed.stdout.splitlines()) == 5
    bounced = newsletter("subscribers", "list", "--status", "bounced", config_path=send_config)
    assert len(bounced.stdout.splitlines()) == 90


def test_a_missing_maildir_is_one_line_naming_it(config_path, tmp_path) -> None:
    bounce_settings(config_path, "maildir:nowhere")
    result = newsletter("bounces", "fetch", config_path=config_path, cwd=tmp_path)
    assert result.returncode == 2
    assert "nowhere: not a Maildir" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("pop3://x@host/INBOX", "[bounces] source must be"),
        ("imaps://host/INBOX", "[bounces] source must be"),
        ("imaps://user:secret@host/INBOX", "must not hold the password"),
    ],
)
def test_a_wrong_bounce_source_is_named_in_the_config_check(config_path, source, problem) -> None:
    bounce_settings(config_path, source)
    result = newsletter("bounces", "list", config_path=config_path)
    assert result.returncode == 2 and problem in result.stderr


def test_a_bounce_address_with_a_plus_is_refused(config_path) -> None:
    config_path.write_text(
        config_path.read_text() + '\n[bounces]\naddress = "bounces+x@news.example.com"\n'
    )
    result = newsletter("bounces", "list", config_path=config_path)
    assert result.returncode == 2 and "[bounces] address must be" in result.stderr


# -- IMAP: a real dovecot ----------------------------------------------------------------


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    if not imap_available():
        pytest.skip(
            "dovecot is not installed (apt-get install dovecot-imapd; .ci/run does):"
            " the IMAP bounce mailbox is NOT tested"
        )
    server = Dovecot()
    yield server
    server.close()


def imap_client(server: Dovecot) -> imaplib.IMAP4_SSL:
    context = ssl.create_default_context(cafile=server.ca_file)
    client = imaplib.IMAP4_SSL("127.0.0.1", server.imaps_port, ssl_context=context)
    client.login(IMAP_USER, IMAP_PASSWORD)
    return client


def imap_config(config_path: Path, server: Dovecot, scheme: str = "imaps") -> None:
    port = server.imaps_port if scheme == "imaps" else server.imap_port
    bounce_settings(
        config_path,
        f"{scheme}://{IMAP_USER}@127.0.0.1:{port}/INBOX",
        ca_file=f'"{server.ca_file}"',
        password_env='"TEST_BOUNCES_PASSWORD"',
    )


@pytest.mark.parametrize("scheme", ["imaps", "imap"])
def test_reports_in_an_imap_folder_are_recorded_and_marked_seen_only_once_understood(
    send_config, smtp, dovecot, monkeypatch, tmp_path, scheme
) -> None:
    monkeypatch.setenv("TEST_BOUNCES_PASSWORD", IMAP_PASSWORD)
    imap_config(send_config, dovecot, scheme)
    readers = subscribe(send_config, 3)
    dispatch(send_config)
    sent = copies(smtp)
    client = imap_client(dovecot)
    for name, n in (("gmail-dsn-hard", 0), ("vacation-auto-submitted", 1), ("human-reply", 2)):
        raw = report(name, recipient=readers[n], message_id=sent[readers[n]][1])
        client.append("INBOX", None, None, raw)

    first = newsletter("bounces", "fetch", config_path=send_config, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "3 messages: 1 bounced, 0 soft, 0 complaints, 1 auto-replies ignored" in first.stdout
    assert "1 not understood" in first.stdout
    assert statuses(send_config) == {
        readers[0]: "bounced",
        readers[1]: "active",
        readers[2]: "active",
    }
    client.select("INBOX")
    assert client.uid("SEARCH", "UNSEEN")[1][0].split() == [b"3"]

    again = newsletter("bounces", "fetch", config_path=send_config, cwd=tmp_path)
    assert "1 messages: 0 bounced" in again.stdout and "1 not understood" in again.stdout
    client.logout()


def test_a_refused_imap_login_is_one_line(config_path, dovecot, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TEST_BOUNCES_PASSWORD", "wrong")
    imap_config(config_path, dovecot)
    result = newsletter("bounces", "fetch", config_path=config_path, cwd=tmp_path)
    assert result.returncode == 2
    assert "the server refused the login of bounces" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_self_signed_imap_server_needs_its_ca_file(config_path, dovecot, monkeypatch) -> None:
    monkeypatch.setenv("NEWSLETTER_BOUNCES_PASSWORD", IMAP_PASSWORD)
    bounce_settings(config_path, f"imaps://{IMAP_USER}@127.0.0.1:{dovecot.imaps_port}/INBOX")
    result = newsletter("bounces", "fetch", config_path=config_path)
    assert result.returncode == 2
    assert "TLS failed" in result.stderr and "[bounces] ca_file" in result.stderr


def test_without_the_password_variable_fetch_names_it(config_path, monkeypatch) -> None:
    monkeypatch.delenv("NEWSLETTER_BOUNCES_PASSWORD", raising=False)
    bounce_settings(config_path, "imaps://bounces@127.0.0.1:1/INBOX")
    result = newsletter("bounces", "fetch", config_path=config_path)
    assert result.returncode == 2 and "NEWSLETTER_BOUNCES_PASSWORD" in result.stderr
