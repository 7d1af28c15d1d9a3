"""``subscribers``: the group that manages the list (import, add, remove, list, export)."""

from __future__ import annotations

from pathlib import Path

import click

from composer.cli.options import as_tier, config_option
from composer.model import TIERS
from composer.store import STATUSES


@click.group()
def subscribers() -> None:
    """Manage the subscriber list: import, add, remove, list, export."""


@subscribers.command("import")
@click.argument("csv_path", metavar="FILE.csv", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--check-deliverability",
    is_flag=True,
    help="Also look up each domain's mail servers in the DNS (slow; needs the network).",
)
@config_option
def import_subscribers(csv_path: Path, check_deliverability: bool, config_path: Path) -> None:
    """Import FILE.csv (email,name,tier,tags); exit 1 if any row was rejected.

    Good rows are imported even when others are rejected. Addresses already on the
    list are updated, but an unsubscribed or bounced address is never resubscribed.
    """
    from composer.config import load_config
    from composer.errors import location
    from composer.store import open_store
    from composer.store.csvio import import_csv
    from composer.store.membership import AddressChecker

    checker = AddressChecker(check_deliverability=check_deliverability)
    with open_store(load_config(config_path).subscribers) as store:
        report = import_csv(csv_path, store, checker=checker)
    for row in report.rejected:
        click.echo(
            f"{location(csv_path, row.line)}: {row.value!r} rejected: {row.reason}", err=True
        )
    if report.ignored_columns:
        click.echo(f"{csv_path}: ignored columns: {', '.join(report.ignored_columns)}", err=True)
    click.echo(report.summary())
    if report.rejected:
        raise SystemExit(1)


@subscribers.command("add")
@click.argument("email")
@click.option("--name", help="The subscriber's name (unchanged if omitted).")
@click.option(
    "--tier",
    type=click.Choice(TIERS),
    help="free or paid (new subscribers: free; existing ones: unchanged if omitted).",
)
@click.option(
    "--resubscribe",
    is_flag=True,
    help="Make an unsubscribed or bounced address active again; only when they asked.",
)
@config_option
def add_subscriber_command(
    email: str, name: str | None, tier: str | None, resubscribe: bool, config_path: Path
) -> None:
    """Add EMAIL to the list, or update its name and tier."""
    from composer.config import load_config
    from composer.store import open_store
    from composer.store.membership import add_subscriber

    with open_store(load_config(config_path).subscribers) as store:
        subscriber, change = add_subscriber(
            store,
            email,
            name=name,
            tier=as_tier(tier) if tier else None,
            resubscribe=resubscribe,
        )
    done = {
        "added": "Added",
        "updated": "Updated",
        "unchanged": "Already subscribed:",
        "resubscribed": "Resubscribed",
    }[change]
    click.echo(f"{done} {subscriber.email} ({subscriber.tier})")


@subscribers.command("remove")
@click.argument("email")
@config_option
def remove_subscriber_command(email: str, config_path: Path) -> None:
    """Unsubscribe EMAIL; the address stays on file so no import can bring it back."""
    from composer.config import load_config
    from composer.store import open_store
    from composer.store.membership import remove_subscriber

    with open_store(load_config(config_path).subscribers) as store:
        subscriber, changed = remove_subscriber(store, email)
    if changed:
        click.echo(f"Unsubscribed {subscriber.email}")
    else:
        click.echo(
            f"{subscriber.email} was already {subscriber.status}"
            f" since {subscriber.status_changed_at:%Y-%m-%d} ({subscriber.status_reason})"
        )


@subscribers.command("list")
@click.option(
    "--status",
    type=click.Choice(STATUSES),
    help="Only subscribers with this status.",
)
@config_option
def list_subscribers(status: str | None, config_path: Path) -> None:
    """Print the list, one tab-separated line each: email, name, tier, status, tags.

    The count by status goes to stderr, so the lines can be piped on their own; pending
    signups (not confirmed yet) are counted when there are any.
    """
    from composer.config import load_config
    from composer.store import open_store

    with open_store(load_config(config_path).subscribers) as store:
        for subscriber in store.iter_all():
            if status is None or subscriber.status == status:
                fields = (
                    subscriber.email,
                    subscriber.name,
                    subscriber.tier,
                    subscriber.status,
                    ";".join(subscriber.tags),
                )
                click.echo("\t".join(fields))
        counts = store.count_by_status()
    # Signups waiting for their confirmation are named only when there are some: a list
    # that takes none through `serve` reads as it always has.
    by_status = ", ".join(
        f"{count} {name}" for name, count in counts.items() if count or name != "pending"
    )
    click.echo(f"{sum(counts.values())} subscribers: {by_status}", err=True)


@subscribers.command("export")
@click.argument("csv_path", metavar="FILE.csv", type=click.Path(path_type=Path, dir_okay=False))
@config_option
def export_subscribers(csv_path: Path, config_path: Path) -> None:
    """Write every subscriber, with status and history, to FILE.csv (re-importable)."""
    from composer.config import load_config
    from composer.store import open_store
    from composer.store.csvio import export_csv

    with open_store(load_config(config_path).subscribers) as store:
        count = export_csv(store, csv_path)
    click.echo(f"Exported {count} subscribers to {csv_path}")


COMMANDS = (subscribers,)
