"""``bounces fetch`` and ``bounces list``: what comes back after a send."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from composer.cli.options import config_option

if TYPE_CHECKING:
    from composer.bounces.fetch import FetchSummary


@click.group()
def bounces() -> None:
    """Read bounces and complaints from the bounce mailbox, and list them."""


@bounces.command("fetch")
@click.option(
    "--watch",
    is_flag=True,
    help="Keep reading: poll the mailbox every [bounces] poll_seconds until Ctrl+C.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    help="Seconds between polls with --watch (default: [bounces] poll_seconds).",
)
@config_option
def fetch(watch: bool, interval: float | None, config_path: Path) -> None:
    """Read what is new in [bounces] source once, record it, and print a summary.

    Bounces mark their readers bounced (soft ones after [bounces] soft_limit different
    issues), complaints complained; auto-replies are never counted. A message is marked
    processed only once recorded; what is not understood stays, and is named.
    """
    import time

    from composer.bounces.fetch import fetch_bounces
    from composer.bounces.mailbox import open_mailbox
    from composer.config import load_config
    from composer.returnpath import ReturnPaths
    from composer.store import open_store

    config = load_config(config_path)
    paths = ReturnPaths.from_config(config)
    pause = interval or config.bounces.poll_seconds
    try:
        while True:
            mailbox = open_mailbox(config.bounces)
            try:
                with open_store(config.subscribers) as store:
                    summary = fetch_bounces(
                        mailbox, store, paths, soft_limit=config.bounces.soft_limit
                    )
            finally:
                mailbox.close()
            if summary.messages or not watch:
                _print_summary(summary, mailbox.name)
            if not watch:
                return
            time.sleep(pause)
    except KeyboardInterrupt:
        return


def _print_summary(summary: FetchSummary, name: str) -> None:
    click.echo(
        f"{name}: {summary.messages:,} messages: {summary.bounced:,} bounced,"
        f" {summary.soft:,} soft, {summary.complaints:,} complaints,"
        f" {summary.auto_replies:,} auto-replies ignored, {summary.unmatched:,} unmatched,"
        f" {summary.ignored:,} about readers already inactive,"
        f" {summary.duplicates:,} recorded before, {summary.not_understood:,} not understood"
    )
    for line in summary.unread:
        click.echo(f"  not understood, left in the mailbox: {line}")
    more = summary.not_understood - len(summary.unread)
    if more > 0:
        click.echo(f"  and {more:,} more not understood")


@bounces.command("list")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="How many of the latest reports to show.",
)
@config_option
def list_feedback(limit: int, config_path: Path) -> None:
    """Show the latest bounces and complaints, newest first, and what each did.

    One tab-separated line each: when recorded, kind, effect, reader (or the reported
    recipient), dispatch, source, reason.
    """
    from composer.config import load_config
    from composer.store import open_store

    with open_store(load_config(config_path).subscribers) as store:
        records = store.recent_feedback(limit)
    for record in records:
        feedback = record.feedback
        who = record.email or feedback.recipient or feedback.message_id or "?"
        click.echo(
            "\t".join(
                (
                    f"{record.recorded_at:%Y-%m-%d %H:%M}",
                    feedback.kind,
                    record.effect,
                    who,
                    record.dispatch or "-",
                    feedback.source,
                    feedback.reason,
                )
            )
        )
    if not records:
        click.echo("No bounces or complaints recorded.", err=True)


COMMANDS = (bounces,)
