"""The store's side of a reader's own signup: the pending status, the rules of a signup
and a confirmation, the mail queue they fill, and the expiry of unconfirmed signups;
all through open_store, so that every backend answers to them."""

from __future__ import annotations

import datetime as dt
import sqlite3

import pytest

from composer.config import Config
from composer.store import NewSubscriber, SubscriberStore, open_store
from composer.store.feedback import Feedback
from composer.store.mailqueue import MailOutcome
from composer.store.signups import Confirmation, Signup
from composer.store.sqlite import database
from tests.conftest import both_backends


def soon() -> dt.datetime:
    """A moment after now: what is due by then includes whatever was queued just now."""
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)


def signup(store: SubscriberStore, *addresses: str, double_opt_in: bool = True) -> list[str]:
    """Sign ``addresses`` up in one batch; what each did."""
    signups = [Signup(email=a, key=a.lower(), name="Ann") for a in addresses]
    return [r.action for r in store.sign_up(signups, double_opt_in=double_opt_in)]


def queued(store: SubscriberStore) -> list[tuple[str, str]]:
    """(kind, address) of every message due now."""
    return [(m.kind, m.email) for m in store.due_mail(soon(), 1000)]


@both_backends
def test_a_new_address_is_pending_gets_no_issue_and_is_sent_a_confirmation(store):
    assert signup(store, "ann@example.org") == ["pending"]
    assert store.get("ann@example.org").status == "pending"
    assert store.count_active() == 0 and list(store.iter_active()) == []
    assert store.count_by_status()["pending"] == 1
    assert queued(store) == [("confirm", "ann@example.org")]


@both_backends
def test_an_address_gets_one_confirmation_a_day_however_often_it_is_submitted(store):
    actions = signup(store, *["ann@example.org"] * 5, "ANN@example.org")
    assert actions == ["pending", *["limited"] * 5]
    assert queued(store) == [("confirm", "ann@example.org")]


@both_backends
def test_an_active_reader_who_signs_up_again_is_left_alone_and_sent_nothing(store):
    store.save(NewSubscriber(email="ann@example.org", key="ann@example.org", tier="paid"))
    assert signup(store, "ann@example.org") == ["nothing"]
    assert store.get("ann@example.org").tier == "paid"
    assert queued(store) == []


@both_backends
@pytest.mark.parametrize("double_opt_in", [True, False])
def test_an_address_that_left_comes_back_only_by_confirming(store, double_opt_in):
    store.save(NewSubscriber(email="ann@example.org", key="ann@example.org"))
    store.mark_status("ann@example.org", "unsubscribed", "asked")
    assert signup(store, "ann@example.org", double_opt_in=double_opt_in) == ["confirm_again"]
    assert store.get("ann@example.org").status == "unsubscribed"
    assert queued(store) == [("confirm", "ann@example.org")]

    subscriber, changed = store.confirm(Confirmation(key="ann@example.org", email="x"))
    assert changed and subscriber.status == "active"
    assert subscriber.email == "ann@example.org", "the spelling on file is kept"
    assert ("welcome", "ann@example.org") in queued(store)


@both_backends
@pytest.mark.parametrize("double_opt_in", [True, False])
def test_an_erased_address_comes_back_only_by_its_own_confirmation(store, double_opt_in):
    store.save(NewSubscriber(email="ann@example.org", key="ann@example.org"))
    assert store.erase("ann@example.org")
    assert signup(store, "ann@example.org", double_opt_in=double_opt_in) == ["confirm_again"]
    assert store.get("ann@example.org") is None, "a signup alone writes no row"
    assert store.is_suppressed("ann@example.org")
    assert queued(store) == [("confirm", "ann@example.org")]

    subscriber, changed = store.confirm(
        Confirmation(key="ann@example.org", email="ann@example.org")
    )
    assert changed and subscriber.status == "active"
    assert not store.is_suppressed("ann@example.org")
    assert ("welcome", "ann@example.org") in queued(store)


@both_backends
def test_a_reader_who_erased_their_data_can_sign_up_again_the_same_day(store):
    # The confirmation sent at their first signup went with the rest of their data, so
    # the one-a-day limit does not leave them waiting for a link that never comes.
    signup(store, "ann@example.org")
    store.confirm(Confirmation(key="ann@example.org", email="ann@example.org"))
    assert store.erase("ann@example.org")
    assert queued(store) == []
    assert signup(store, "ann@example.org") == ["confirm_again"]
    assert queued(store) == [("confirm", "ann@example.org")]


@both_backends
def test_without_double_opt_in_a_new_address_is_active_at_once_and_welcomed(store):
    assert signup(store, "ann@example.org", double_opt_in=False) == ["subscribed"]
    assert store.get("ann@example.org").status == "active"
    assert queued(store) == [("welcome", "ann@example.org")]
    assert signup(store, "ann@example.org", double_opt_in=False) == ["nothing"]


@both_backends
def test_confirming_makes_a_pending_reader_active_once_and_queues_one_welcome(store):
    signup(store, "ann@example.org")
    confirmation = Confirmation(key="ann@example.org", email="ann@example.org")
    subscriber, changed = store.confirm(confirmation)
    assert changed and subscriber.status == "active" and subscriber.name == "Ann"
    _, again = store.confirm(confirmation)
    assert not again
    assert [kind for kind, _ in queued(store)] == ["confirm", "welcome"]


@both_backends
def test_a_confirmation_whose_pending_row_expired_adds_the_reader(store):
    subscriber, changed = store.confirm(
        Confirmation(key="ann@example.org", email="Ann@example.org")
    )
    assert changed and subscriber.status == "active" and subscriber.email == "Ann@example.org"


@both_backends
def test_unconfirmed_signups_expire_and_the_address_can_sign_up_again(store):
    signup(store, "ann@example.org")
    store.save(NewSubscriber(email="bob@example.org", key="bob@example.org"))
    assert store.expire_signups(soon() - dt.timedelta(days=1)) == 0
    assert store.expire_signups(soon()) == 1
    assert store.get("ann@example.org") is None
    assert store.get("bob@example.org").status == "active", "only pending readers expire"
    assert signup(store, "ann@example.org") == ["pending"]
    assert store.get("ann@example.org").status == "pending"
    # The confirmation sent today still counts against the address until tomorrow.
    assert queued(store) == [("confirm", "ann@example.org")]


@both_backends
def test_a_pending_reader_whose_confirmation_bounced_expires_with_that_bounce(store):
    signup(store, "ann@example.org")
    bounce = Feedback(
        kind="hard",
        source="mailbox",
        event_id="dsn-1",
        reason="5.1.1 user unknown",
        occurred_at=dt.datetime.now(dt.UTC),
        recipient="ann@example.org",
    )
    assert store.record_feedback(bounce).effect == "ignored", "only active readers bounce"
    assert store.expire_signups(soon()) == 1
    assert store.get("ann@example.org") is None
    assert store.recent_feedback() == []


@both_backends
def test_the_editor_vouches_for_a_pending_reader_and_a_pending_row_overrides_nobody(store):
    signup(store, "ann@example.org", "bob@example.org")
    store.save(NewSubscriber(email="carol@example.org", key="carol@example.org"))
    counts = store.import_many(
        [
            NewSubscriber(email="ann@example.org", key="ann@example.org"),
            NewSubscriber(email="carol@example.org", key="carol@example.org", status="pending"),
        ]
    )
    assert counts.updated == 1 and counts.unchanged == 1
    assert store.get("ann@example.org").status == "active"
    assert store.get("carol@example.org").status == "active"
    assert store.get("bob@example.org").status == "pending"


@both_backends
def test_mail_left_sending_by_a_killed_process_is_queued_again(store):
    signup(store, "ann@example.org", "bob@example.org")
    ann, bob = store.due_mail(soon(), 10)
    store.record_mail(
        [
            MailOutcome(id=ann.id, state="sending", attempts=1),
            MailOutcome(id=bob.id, state="sent", attempts=1, reply="250 OK"),
        ]
    )
    assert queued(store) == []
    assert store.requeue_interrupted_mail() == 1
    assert [(m.email, m.attempts) for m in store.due_mail(soon(), 10)] == [("ann@example.org", 1)]


@both_backends
def test_a_retry_waits_for_its_time(store):
    signup(store, "ann@example.org")
    (mail,) = store.due_mail(soon(), 10)
    later = soon() + dt.timedelta(minutes=1)
    store.record_mail([MailOutcome(id=mail.id, state="queued", attempts=1, next_attempt_at=later)])
    assert store.due_mail(soon() + dt.timedelta(seconds=30), 10) == []
    assert [m.id for m in store.due_mail(later, 10)] == [mail.id]


def test_a_list_from_before_signups_keeps_every_row_id_and_history(config: Config, monkeypatch):
    step = next(
        n
        for n, script in enumerate(database.MIGRATIONS)
        if isinstance(script, str) and "CREATE TABLE mail_queue" in script
    )
    monkeypatch.setattr(database, "MIGRATIONS", database.MIGRATIONS[:step])
    with open_store(config.subscribers) as old:
        old.save(NewSubscriber(email="ann@example.org", key="ann@example.org", tier="paid"))
        old.save(NewSubscriber(email="bob@example.org", key="bob@example.org"))
        old.mark_status("bob@example.org", "bounced", "5.1.1")
        with old.deliveries("id:x") as journal:
            journal.acquire("all")
    monkeypatch.undo()

    with open_store(config.subscribers) as store:
        assert [(s.id, s.email, s.status, s.tier) for s in store.iter_all()] == [
            (1, "ann@example.org", "active", "paid"),
            (2, "bob@example.org", "bounced", "free"),
        ]
        assert signup(store, "carol@example.org") == ["pending"]
        store.mark_status("ann@example.org", "unsubscribed", "asked")
    with sqlite3.connect(config.subscribers.database) as db:
        history = db.execute("SELECT subscriber_id, status FROM status_changes ORDER BY id")
        assert history.fetchall() == [
            (1, "active"),
            (2, "active"),
            (2, "bounced"),
            (3, "pending"),
            (1, "unsubscribed"),
        ]
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
