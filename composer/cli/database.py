"""``db``: the group that works on the store as a whole (``db copy``)."""

from __future__ import annotations

from pathlib import Path

import click

from composer.cli.options import config_option


@click.group("db")
def database() -> None:
    """Work on the subscriber database as a whole: copy it to another store."""


@database.command("copy")
@click.option(
    "--to",
    "destination",
    metavar="URL_OR_PATH",
    required=True,
    help="Where to copy the list: a postgresql:// URL, or a SQLite file (created if missing).",
)
@click.option(
    "--password-env",
    metavar="NAME",
    help="The environment variable holding the destination server's password"
    " (default: [subscribers] password_env).",
)
@config_option
def copy_command(destination: str, password_env: str | None, config_path: Path) -> None:
    """Copy the whole list (subscribers, their history, dispatches and deliveries) from
    [subscribers] database to URL_OR_PATH, in batches; copying again changes nothing.

    Prints each table's row count on both sides; a difference is an error (exit 2).
    Stop send and serve on the source first.
    """
    from composer.config import load_config, subscriber_settings
    from composer.errors import ConfigError
    from composer.store import open_backend, open_store
    from composer.store.copy import copy_store

    source = load_config(config_path).subscribers
    target = subscriber_settings(destination, Path.cwd(), password_env or source.password_env)
    if isinstance(target, str):
        raise ConfigError(f"--to {destination}: {target}")
    if target.name == source.name:
        raise ConfigError(f"--to {destination}: that is the list itself; name another database")
    with open_store(source) as origin, open_backend(target) as copy:
        counts = copy_store(origin, copy, source_name=source.name, destination_name=target.name)
    click.echo(f"Copied {source.name} to {target.name}:")
    for count in counts:
        click.echo(f"  {count.table}: {count.source:,} rows, {count.destination:,} in the copy")


COMMANDS = (database,)
