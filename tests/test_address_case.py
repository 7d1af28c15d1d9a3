"""One address, one reader: letter case never makes two subscribers (import, add, remove,
unsubscribe links, preview, dispatch)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
from click.testing import Result

from composer.config import Config, load_config
from composer.sending.send import send_issue
from composer.store import NewSubscriber, SubscriberStore, open_store
from composer.store.csvio import import_csv
from composer.unsubscribe import UnsubscribeLinks
from composer.web.preview import find_reader
from tests.conftest import EXAMPLE_MD, write_csv
from tests.smtp_server import SmtpServer


def test_one_address_in_three_letter_cases_is_one_reader_who_gets_one_copy(
    send_config: Path, smtp: SmtpServer, tmp_path: Path
) -> None:
    config = load_config(send_config)
    text = (
        "email,name,tier\n"
        "Reader5@Example.org,Reader Five,paid\n"
        "reader5@example.org,,\n"
        "READER5@EXAMPLE.ORG,Shouting,free\n"
        "ann@example.org,Ann,\n"
    )
    with open_store(config.subscribers) as store:
        first = import_csv(write_csv(tmp_path / "list.csv", text), store)
        again = import_csv(write_csv(tmp_path / "again.csv", "email\nrEaDeR5@example.ORG\n"), store)
        readers = [(s.email, s.key, s.name, s.tier) for s in store.iter_all()]
    assert (first.counts.added, first.counts.duplicates) == (2, 2)
    assert (again.counts.added, again.counts.unchanged) == (0, 1)
    assert readers == [
        ("Reader5@Example.org", "reader5@example.org", "Reader Five", "paid"),
        ("ann@example.org", "ann@example.org", "Ann", "free"),
    ]

    result = send_issue(EXAMPLE_MD, config, "all")
    assert result.report.sent == 2
    # Delivered to the first spelling seen, once.
    assert smtp.received() == {"Reader5@Example.org": 1, "ann@example.org": 1}


def test_add_in_another_letter_case_updates_the_reader_and_remove_finds_them(
    run_cli: Callable[..., Result], store: SubscriberStore
) -> None:
    assert run_cli("subscribers", "add", "reader@example.org").exit_code == 0
    added = run_cli("subscribers", "add", "READER@Example.ORG", "--name", "R", "--tier", "paid")
    assert added.exit_code == 0, added.output
    assert added.stdout == "Updated reader@example.org (paid)\n"
    assert [(s.email, s.name, s.tier) for s in store.iter_all()] == [
        ("reader@example.org", "R", "paid")
    ]
    removed = run_cli("subscribers", "remove", "Reader@EXAMPLE.org")
    assert removed.stdout == "Unsubscribed reader@example.org\n"


def test_preview_as_finds_the_reader_in_any_letter_case(
    config: Config, store: SubscriberStore
) -> None:
    store.save(NewSubscriber(email="Reader5@Example.org", key="reader5@example.org", tier="paid"))
    reader = find_reader(config, "READER5@example.ORG")
    assert (reader.subscriber.email, reader.subscriber.tier) == ("Reader5@Example.org", "paid")


def test_a_link_signed_with_the_old_case_preserving_key_still_unsubscribes(
    server: httpx.Client, config: Config, store: SubscriberStore
) -> None:
    store.save(NewSubscriber(email="Reader5@Example.org", key="reader5@example.org"))
    store.save(NewSubscriber(email="other@example.org", key="other@example.org"))
    # Before keys were lower-cased, a token carried the local part as written.
    url = UnsubscribeLinks.from_config(config).url("Reader5@example.org", "issue-1")
    path = url.removeprefix(config.newsletter.base_url)

    page = server.get(path)
    assert "Reader5@Example.org" in page.text and "<form" in page.text
    response = server.post(path, data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    assert {s.email: (s.status, s.status_reason) for s in store.iter_all()} == {
        "Reader5@Example.org": ("unsubscribed", "unsubscribe link in issue-1"),
        "other@example.org": ("active", ""),
    }
