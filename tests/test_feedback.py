"""Bounces and complaints recorded through the store, on both backends: matching, the policy,
replays, and what erasing a reader does to their events."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from composer.returnpath import ReturnPaths
from composer.store import NewSubscriber, Subscriber, SubscriberStore, address_key
from composer.store.deliveries import Outcome, Recipient
from composer.store.feedback import Feedback, FeedbackCounts, FeedbackKind
from tests.conftest import both_backends

WHEN = dt.datetime(2024, 5, 3, 12, 0, tzinfo=dt.UTC)


def reader(store: SubscriberStore, email: str) -> Subscriber:
    subscriber, _ = store.save(NewSubscriber(email=email, key=address_key(email)))
    return subscriber


def send(store: SubscriberStore, dispatch: str, subscriber: Subscriber) -> str:
    """Record ``dispatch``'s copy to ``subscriber`` as sent; return its Message-ID."""
    message_id = f"<{dispatch}.{subscriber.id}@news.example.com>"
    recipient = Recipient(
        email=subscriber.email, tier="free", key=subscriber.key, subscriber_id=subscriber.id
    )
    with store.deliveries(dispatch) as journal:
        journal.record(
            [
                Outcome(recipient=recipient, state="sending", attempts=1, message_id=message_id),
                Outcome(recipient=recipient, state="sent", attempts=1, code=250, reply="ok"),
            ]
        )
    return message_id


def report(kind: FeedbackKind, event: str, **fields: object) -> Feedback:
    return Feedback(
        kind=kind,
        source="mailbox",
        event_id=event,
        reason=fields.pop("reason", "5.1.1 user unknown"),  # type: ignore[arg-type]
        occurred_at=WHEN,
        **fields,  # type: ignore[arg-type]
    )


def state_of(store: SubscriberStore, message_id: str) -> str:
    traced = store.find_delivery(message_id)
    assert traced is not None
    return traced.delivery.state


def status_of(store: SubscriberStore, email: str) -> str:
    subscriber = store.get(address_key(email))
    assert subscriber is not None
    return subscriber.status


@both_backends
def test_a_hard_bounce_by_message_id_bounces_the_reader_and_their_copy(
    store: SubscriberStore,
) -> None:
    ann = reader(store, "ann@example.org")
    message_id = send(store, "id:one", ann)
    result = store.record_feedback(report("hard", "e1", message_id=message_id))
    assert (result.effect, result.email, result.dispatch) == ("bounced", ann.email, "id:one")
    assert status_of(store, ann.email) == "bounced"
    assert state_of(store, message_id) == "bounced"
    subscriber = store.get(ann.key)
    assert subscriber is not None and "5.1.1 user unknown" in subscriber.status_reason


@both_backends
def test_a_complaint_before_the_250_is_recorded_is_not_overwritten_by_sent(
    store: SubscriberStore,
) -> None:
    # A webhook can report a complaint while the dispatch has yet to commit the copy's
    # 250: the later `sent` must not take the copy back from complained.
    ann = reader(store, "ann@example.org")
    message_id = "<early.1@news.example.com>"
    recipient = Recipient(email=ann.email, tier="free", key=ann.key, subscriber_id=ann.id)
    with store.deliveries("id:one") as journal:
        journal.record(
            [Outcome(recipient=recipient, state="sending", attempts=1, message_id=message_id)]
        )
        store.record_feedback(report("complaint", "c1", message_id=message_id, reason="abuse"))
        journal.record([Outcome(recipient=recipient, state="sent", attempts=1, code=250)])
    assert state_of(store, message_id) == "complained"
    assert status_of(store, ann.email) == "complained"


@both_backends
def test_the_same_event_twice_changes_nothing_the_second_time(store: SubscriberStore) -> None:
    ann = reader(store, "ann@example.org")
    first = send(store, "id:one", ann)
    second = send(store, "id:two", ann)
    store.record_feedback(report("soft", "e1", message_id=first, reason="4.2.2 full"))
    store.record_feedback(report("soft", "e2", message_id=second, reason="4.2.2 full"))
    replay = store.record_feedback(report("soft", "e2", message_id=second, reason="4.2.2 full"))
    assert replay.effect == "duplicate"
    assert status_of(store, ann.email) == "active"
    assert store.feedback_counts("id:two") == FeedbackCounts(soft=1)


@both_backends
def test_soft_failures_bounce_only_from_soft_limit_different_dispatches(
    store: SubscriberStore,
) -> None:
    ann = reader(store, "ann@example.org")
    copies = [send(store, f"id:{n}", ann) for n in range(3)]
    effects = [
        store.record_feedback(report("soft", f"same{n}", message_id=copies[0])).effect
        for n in range(4)
    ]
    assert effects == ["counted"] * 4
    assert status_of(store, ann.email) == "active"
    assert store.record_feedback(report("soft", "b", message_id=copies[1])).effect == "counted"
    result = store.record_feedback(report("soft", "c", message_id=copies[2]))
    assert result.effect == "bounced"
    assert status_of(store, ann.email) == "bounced"
    assert state_of(store, copies[2]) == "bounced"
    assert state_of(store, copies[0]) == "sent"


@both_backends
def test_soft_limit_is_the_callers(store: SubscriberStore) -> None:
    ann = reader(store, "ann@example.org")
    copy = send(store, "id:one", ann)
    result = store.record_feedback(report("soft", "e", message_id=copy), soft_limit=1)
    assert result.effect == "bounced"


@both_backends
def test_a_complaint_marks_the_reader_complained_and_no_import_brings_them_back(
    store: SubscriberStore,
) -> None:
    ann = reader(store, "ann@example.org")
    copy = send(store, "id:one", ann)
    store.record_feedback(report("hard", "bounce", message_id=copy))
    result = store.record_feedback(report("complaint", "arf", message_id=copy, reason="abuse"))
    assert result.effect == "complained"
    assert status_of(store, ann.email) == "complained"
    assert state_of(store, copy) == "complained"
    imported = store.import_many([NewSubscriber(email=ann.email, key=ann.key)])
    assert imported.kept_inactive == 1
    assert status_of(store, ann.email) == "complained"
    again = store.record_feedback(report("hard", "later", message_id=copy))
    assert again.effect == "ignored"
    assert state_of(store, copy) == "complained"


@both_backends
def test_a_bounce_leaves_an_unsubscribed_reader_unsubscribed(store: SubscriberStore) -> None:
    ann = reader(store, "ann@example.org")
    copy = send(store, "id:one", ann)
    store.mark_status(ann.key, "unsubscribed", "asked")
    assert store.record_feedback(report("hard", "e", message_id=copy)).effect == "ignored"
    assert status_of(store, ann.email) == "unsubscribed"


@both_backends
def test_the_return_token_wins_over_message_id_and_recipient(store: SubscriberStore) -> None:
    ann, bob = reader(store, "ann@example.org"), reader(store, "bob@example.org")
    ann_copy = send(store, "id:one", ann)
    send(store, "id:one", bob)
    paths = ReturnPaths("bounces@news.example.com", b"k" * 40)
    token = paths.token_of(paths.for_dispatch("id:one").address(bob.id))
    assert token is not None
    result = store.record_feedback(
        report("hard", "e", return_token=token, message_id=ann_copy, recipient=ann.email)
    )
    assert (result.email, result.dispatch) == (bob.email, "id:one")
    assert status_of(store, ann.email) == "active"


@both_backends
def test_the_original_recipient_matches_their_latest_copy(store: SubscriberStore) -> None:
    ann = reader(store, "Ann@Example.org")
    send(store, "id:one", ann)
    time.sleep(1.05)  # the record keeps times to the second
    latest = send(store, "id:two", ann)
    result = store.record_feedback(report("hard", "e", recipient="ann@EXAMPLE.org"))
    assert (result.effect, result.dispatch) == ("bounced", "id:two")
    assert state_of(store, latest) == "bounced"


@both_backends
def test_an_unmatched_report_is_kept_and_listed(store: SubscriberStore) -> None:
    result = store.record_feedback(report("hard", "e", recipient="nobody@example.org"))
    assert result.effect == "unmatched"
    assert store.record_feedback(report("hard", "e", recipient="x@y.z")).effect == "duplicate"
    [listed] = store.recent_feedback()
    assert (listed.effect, listed.feedback.recipient, listed.email) == (
        "unmatched",
        "nobody@example.org",
        None,
    )


@both_backends
def test_erasing_a_reader_erases_the_bounces_and_complaints_matched_to_them(
    store: SubscriberStore,
) -> None:
    ann, bob = reader(store, "ann@example.org"), reader(store, "bob@example.org")
    ann_copy, bob_copy = send(store, "id:one", ann), send(store, "id:one", bob)
    store.record_feedback(report("soft", "e1", message_id=ann_copy, reason="ann@example.org full"))
    store.record_feedback(report("complaint", "e2", message_id=ann_copy, reason="abuse"))
    store.record_feedback(report("hard", "e3", message_id=bob_copy))
    assert store.erase(ann.key)
    assert [(r.feedback.event_id, r.email) for r in store.recent_feedback()] == [("e3", bob.email)]
    assert store.feedback_counts("id:one") == FeedbackCounts(hard=1)


@both_backends
def test_recent_feedback_lists_newest_first_with_what_each_did(store: SubscriberStore) -> None:
    ann = reader(store, "ann@example.org")
    copy = send(store, "id:one", ann)
    store.record_feedback(report("soft", "first", message_id=copy, reason="4.2.2\r\nfull"))
    store.record_feedback(report("complaint", "second", message_id=copy, reason="abuse"))
    listed = store.recent_feedback(limit=10)
    assert [(r.feedback.event_id, r.effect, r.dispatch) for r in listed] == [
        ("second", "complained", "id:one"),
        ("first", "counted", "id:one"),
    ]
    assert listed[1].feedback.reason == "4.2.2 full"
    assert store.feedback_counts("id:one") == FeedbackCounts(soft=1, complaint=1)


def test_feedback_needs_an_aware_time_and_a_known_kind() -> None:
    with pytest.raises(ValueError, match="aware"):
        Feedback(
            kind="hard", source="mailbox", event_id="e", reason="", occurred_at=dt.datetime.now()
        )
    with pytest.raises(ValueError, match="kind"):
        report("auto-reply", "e")  # type: ignore[arg-type]
