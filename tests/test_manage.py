"""A reader's own subscription page over real HTTP (uvicorn, httpx, a SQLite file, and
for what reaches the store's personal-data methods a PostgreSQL database too):
what a GET shows and never changes, the forms' CSRF and same-site checks, rename,
download, unsubscribe and erasure, and the suppression an erasure leaves."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from pathlib import Path

import httpx
import pytest

from composer.config import Config
from composer.errors import AddressSuppressed
from composer.reader_links import ReaderLinks
from composer.signing import load_secret
from composer.store import NewSubscriber, SubscriberStore
from composer.store.csvio import import_csv
from composer.store.deliveries import Outcome, Recipient
from composer.store.feedback import Feedback
from composer.store.membership import add_subscriber, record_unsubscribe
from composer.store.signups import Confirmation, Signup
from composer.unsubscribe import UnsubscribeLinks
from composer.web.csrf import MAX_AGE_SECONDS, FormTokens
from tests.conftest import both_backends, raw_sql, write_csv

ANN = "ann@example.com"
SAME_SITE = {"Origin": "https://news.example.com"}


@pytest.fixture
def ann(store: SubscriberStore) -> SubscriberStore:
    store.save(NewSubscriber(email="Ann@Example.com", key=ANN, name="Ann", tier="free"))
    store.save(NewSubscriber(email="bob@example.com", key="bob@example.com", name="Bob"))
    return store


def manage_path(config: Config, key: str = ANN) -> str:
    url = ReaderLinks.from_config(config).manage_url(key)
    return url.removeprefix(config.newsletter.base_url)


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def post(server: httpx.Client, config: Config, action: str, **fields: str) -> httpx.Response:
    path = manage_path(config).replace("/manage?", f"/manage/{action}?")
    return server.post(path, data=fields, headers=SAME_SITE)


def rows(store: SubscriberStore) -> list[tuple[str, str, str, str]]:
    return [(s.email, s.name, s.tier, s.status) for s in store.iter_all()]


def test_manage_page_shows_the_readers_address_name_edition_and_status(
    server: httpx.Client, config: Config, ann: SubscriberStore
) -> None:
    page = server.get(manage_path(config))
    assert page.status_code == 200
    assert "Ann@Example.com" in page.text and 'value="Ann"' in page.text
    assert "Free" in page.text and "Subscribed" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "same-origin"


def test_get_never_changes_anything_whatever_path_it_names(
    server: httpx.Client, config: Config, ann: SubscriberStore
) -> None:
    before = rows(ann)
    token = manage_path(config).split("token=")[1]
    for path in ("name", "unsubscribe", "export", "delete"):
        response = server.get(f"/manage/{path}?token={token}&name=Eve&confirm=yes")
        assert response.status_code == 405
    server.get(manage_path(config))
    assert rows(ann) == before


@pytest.mark.parametrize("action", ["name", "unsubscribe", "export", "delete"])
@pytest.mark.parametrize(
    "forgery",
    ["no csrf", "csrf of another reader", "stale csrf", "cross-site origin", "cross-site referer"],
)
def test_a_forged_or_cross_site_post_is_refused_and_changes_nothing(
    server: httpx.Client, config: Config, ann: SubscriberStore, action: str, forgery: str
) -> None:
    before = rows(ann)
    tokens = FormTokens(load_secret(config.path))
    good = csrf_of(server.get(manage_path(config)))
    fields = {"name": "Mallory", "confirm": "yes"}
    headers = dict(SAME_SITE)
    if forgery == "csrf of another reader":
        fields["csrf"] = tokens.token("bob@example.com")
    elif forgery == "stale csrf":
        fields["csrf"] = tokens.token(ANN, now=time.time() - MAX_AGE_SECONDS - 60)
    elif forgery == "cross-site origin":
        fields["csrf"], headers = good, {"Origin": "https://evil.example"}
    elif forgery == "cross-site referer":
        fields["csrf"], headers = good, {"Referer": "https://evil.example/page"}
    path = manage_path(config).replace("/manage?", f"/manage/{action}?")
    response = server.post(path, data=fields, headers=headers)
    assert response.status_code == 403
    assert "nothing was changed" in response.text
    assert rows(ann) == before


def test_a_manage_link_that_does_not_verify_is_a_400_page_and_no_token_explains(
    server: httpx.Client, config: Config, ann: SubscriberStore
) -> None:
    path = manage_path(config)
    assert server.get(path[:-3]).status_code == 400
    # A token of another purpose (an unsubscribe or a read token) opens nothing here.
    unsubscribe = UnsubscribeLinks.from_config(config).token(ANN)
    read = ReaderLinks.from_config(config).web_url(ANN, "x").split("token=")[1]
    for token in (unsubscribe, read):
        assert server.get(f"/manage?token={token}").status_code == 400
    how = server.get("/manage")
    assert how.status_code == 200 and "Manage your subscription" in how.text


@both_backends
def test_rename_saves_the_name_and_shows_it(
    server: httpx.Client, config: Config, ann: SubscriberStore
) -> None:
    csrf = csrf_of(server.get(manage_path(config)))
    response = post(server, config, "name", csrf=csrf, name="  Ann\r\nLee  ")
    assert response.status_code == 200 and "Your name is saved." in response.text
    reader = ann.get(ANN)
    assert reader is not None and reader.name == "Ann Lee"
    assert [r[1] for r in rows(ann)] == ["Ann Lee", "Bob"]


def test_unsubscribe_from_the_manage_page(
    server: httpx.Client, config: Config, ann: SubscriberStore
) -> None:
    csrf = csrf_of(server.get(manage_path(config)))
    response = post(server, config, "unsubscribe", csrf=csrf)
    assert response.status_code == 200 and "will get no more issues" in response.text
    reader = ann.get(ANN)
    assert reader is not None and reader.status == "unsubscribed"
    assert reader.status_reason == "manage page"


@both_backends
def test_download_is_the_readers_row_history_and_deliveries_as_a_json_attachment(
    server: httpx.Client, config: Config, ann: SubscriberStore
) -> None:
    reader = ann.get(ANN)
    assert reader is not None
    recipient = Recipient(email=reader.email, key=ANN, tier="free", subscriber_id=reader.id)
    with ann.deliveries("2024-05-03-example") as journal:
        journal.acquire("all")
        journal.record([Outcome(recipient=recipient, state="sent", attempts=1, code=250)])
        journal.release("done")
    ann.mark_status(ANN, "unsubscribed", "test")
    csrf = csrf_of(server.get(manage_path(config)))
    response = post(server, config, "export", csrf=csrf)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-disposition"].startswith("attachment;")
    assert response.headers["cache-control"] == "no-store"
    data = json.loads(response.content)
    assert data["subscriber"]["email"] == "Ann@Example.com"
    assert data["subscriber"]["name"] == "Ann"
    assert [change["status"] for change in data["status_history"]] == ["active", "unsubscribed"]
    [delivery] = data["deliveries"]
    assert (delivery["issue"], delivery["state"], delivery["code"]) == (
        "2024-05-03-example",
        "sent",
        250,
    )
    assert "bob" not in response.text


def test_delete_needs_the_confirmation_ticked(
    server: httpx.Client, config: Config, ann: SubscriberStore
) -> None:
    csrf = csrf_of(server.get(manage_path(config)))
    response = post(server, config, "delete", csrf=csrf)
    assert response.status_code == 400 and "Nothing was deleted" in response.text
    assert ann.get(ANN) is not None


@both_backends
def test_delete_erases_the_reader_and_leaves_only_a_suppression(
    server: httpx.Client, config: Config, ann: SubscriberStore, tmp_path: Path
) -> None:
    csrf = csrf_of(server.get(manage_path(config)))
    response = post(server, config, "delete", csrf=csrf, confirm="yes")
    assert response.status_code == 200 and "deleted" in response.text
    assert ann.get(ANN) is None and ann.is_suppressed(ANN)
    assert [r[0] for r in rows(ann)] == ["bob@example.com"]
    database = config.subscribers.database
    if database is not None:
        # Nothing of the address is left in the files, not even in free pages or the log.
        files = [database, database.with_name(database.name + "-wal")]
        raw = b"".join(path.read_bytes() for path in files if path.exists())
        assert b"ann@example.com" not in raw.lower() and b"bob@example.com" in raw
    else:
        # PostgreSQL keeps dead rows until vacuum (README: Erasure on PostgreSQL); no
        # row of any table holds the address, and only Bob's history is left.
        for table in ("subscribers", "status_changes", "deliveries", "feedback"):
            query = f"SELECT count(*) FROM {table} AS t WHERE t::text ILIKE ?"
            assert raw_sql(ann, query, (f"%{ANN}%",)) == [(0,)], table
        assert raw_sql(ann, "SELECT count(*) FROM status_changes") == [(1,)]
    assert server.get(manage_path(config)).status_code == 404


def test_delete_also_erases_the_readers_signup_mail_and_the_reports_about_them(
    server: httpx.Client, config: Config, store: SubscriberStore
) -> None:
    # A reader who signed up on the form has rows in the mail queue, and one whose copy
    # bounced has a report naming them: neither may keep the address, nor stop the erasure.
    store.sign_up([Signup(email=ANN, key=ANN, name="Annabel")], double_opt_in=True)
    store.confirm(Confirmation(key=ANN, email=ANN))
    subscriber = store.get(ANN)
    assert subscriber is not None
    recipient = Recipient(email=ANN, tier="free", key=ANN, subscriber_id=subscriber.id)
    with store.deliveries("id:one") as journal:
        journal.record([Outcome(recipient=recipient, state="sent", attempts=1, code=250)])
    store.record_feedback(
        Feedback(
            kind="soft",
            source="mailbox",
            event_id="e1",
            reason=f"4.2.2 <{ANN}> mailbox of Annabel full",
            occurred_at=dt.datetime.now(dt.UTC),
            recipient=ANN,
        )
    )
    csrf = csrf_of(server.get(manage_path(config)))
    response = post(server, config, "delete", csrf=csrf, confirm="yes")
    assert response.status_code == 200 and "deleted" in response.text
    database = config.subscribers.database
    files = [database, database.with_name(database.name + "-wal")]
    raw = b"".join(path.read_bytes() for path in files if path.exists())
    assert b"ann@example.com" not in raw.lower() and b"Annabel" not in raw


@both_backends
def test_an_erased_address_is_suppressed_for_import_add_and_unsubscribe(
    config: Config, store: SubscriberStore, tmp_path: Path
) -> None:
    store.save(NewSubscriber(email=ANN, key=ANN, name="Ann"))
    assert store.erase(ANN) and not store.erase(ANN)
    report = import_csv(
        write_csv(tmp_path / "list.csv", "email\nANN@example.com\nc@x.org\n"), store
    )
    assert (report.counts.added, report.counts.suppressed) == (1, 1)
    assert "1 suppressed" in report.summary()
    with pytest.raises(AddressSuppressed, match=r"ann@example\.com is suppressed"):
        add_subscriber(store, ANN, resubscribe=True)
    assert record_unsubscribe(store, ANN, ANN, "old link") is None
    assert store.get(ANN) is None and store.is_suppressed(ANN)
