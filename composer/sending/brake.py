"""The reputation brake: a dispatch pauses when what comes back says readers complain,
or addresses bounce, more than mailbox providers tolerate, before the rest of the list
is sent into it.

Gmail and Yahoo ask bulk senders to keep complaints under 0.3 % of what they deliver;
hard bounces above a few percent say the list has gone stale. While a run sends, the
dispatch asks :meth:`ReputationBrake.check` every few seconds (never per message), which
reads the bounces and complaints recorded against the dispatch (one query:
:meth:`~composer.store.SubscriberStore.feedback_counts`) and compares those recorded
since the run started with the copies the run has delivered. Once it has delivered
``[send] brake_min_delivered``, a share above ``brake_complaints_percent`` or
``brake_bounces_percent`` pauses it, as fifty failures in a row do.

The brake counts this run only. The editor who has looked into a pause and runs the
same command again starts the count afresh: the brake acts again only after another
``brake_min_delivered`` copies, and only on what came back since; if things are still
bad, it pauses again then, not at once.
"""

from __future__ import annotations

from collections.abc import Callable

from composer.config import SendSettings
from composer.store.feedback import FeedbackCounts


class ReputationBrake:
    """Pauses a dispatch whose complaints or hard bounces, recorded since this brake was
    made, pass ``settings``' shares of the copies delivered. ``counts`` reads the
    dispatch's events as recorded now."""

    def __init__(self, counts: Callable[[], FeedbackCounts], settings: SendSettings) -> None:
        self._counts = counts
        self.settings = settings
        self._start = counts()

    def check(self, delivered: int) -> str | None:
        """Why the run should pause, having delivered ``delivered`` copies; None: it
        goes on."""
        if delivered < self.settings.brake_min_delivered:
            return None
        now = self._counts()
        return brake_reason(
            self.settings,
            complaints=now.complaint - self._start.complaint,
            hard_bounces=now.hard - self._start.hard,
            delivered=delivered,
        )


def brake_reason(
    settings: SendSettings, *, complaints: int, hard_bounces: int, delivered: int
) -> str | None:
    """The one line saying why a run that delivered ``delivered`` copies, against which
    ``complaints`` and ``hard_bounces`` came back, pauses; None when neither share is
    above its limit (or too few copies went out to tell)."""
    if delivered < max(1, settings.brake_min_delivered):
        return None
    for count, what, limit, key in (
        (complaints, "complaints", settings.brake_complaints_percent, "brake_complaints_percent"),
        (hard_bounces, "hard bounces", settings.brake_bounces_percent, "brake_bounces_percent"),
    ):
        share = 100 * count / delivered
        if share > limit:
            return (
                f"the reputation brake: {count:,} {what} for the {delivered:,} copies this run"
                f" delivered ({share:.2f} %, over [send] {key} = {limit:g})"
            )
    return None
