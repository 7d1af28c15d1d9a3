"""``schedule`` and ``worker``: dispatches recorded for later, and the process that
starts them when they are due."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from composer.cli.options import as_segment, config_option, segment_option


@click.command()
@click.argument(
    "issue_path", metavar="[ISSUE]", required=False, type=click.Path(path_type=Path, dir_okay=False)
)
@click.option(
    "--at",
    "at",
    metavar="ISO-TIME",
    help="When to send, with its UTC offset: 2024-05-03T07:00+02:00 (Z for UTC).",
)
@segment_option
@click.option(
    "--skip-check",
    is_flag=True,
    help="Schedule (and later send) even if `newsletter check` finds errors in the issue.",
)
@click.option("--list", "show", is_flag=True, help="Show the upcoming and the recent schedules.")
@click.option("--cancel", is_flag=True, help="Cancel the scheduled dispatch of ISSUE.")
@config_option
def schedule(
    issue_path: Path | None,
    at: str | None,
    segment: str,
    skip_check: bool,
    show: bool,
    cancel: bool,
    config_path: Path,
) -> None:
    """Send ISSUE at a given time (`newsletter worker` starts it); --list, --cancel ISSUE."""
    from composer.config import load_config
    from composer.sending import schedule as scheduling

    if show:
        if issue_path or at or cancel:
            raise click.UsageError("--list takes no ISSUE, --at or --cancel")
        upcoming, recent = scheduling.list_schedules(load_config(config_path))
        if not upcoming and not recent:
            click.echo("No dispatch is scheduled.")
        for title, schedules in (("Upcoming", upcoming), ("Recent", recent)):
            if schedules:
                click.echo(f"{title}:")
                for row in schedules:
                    click.echo(f"  {scheduling.describe_schedule(row)}")
        return
    if issue_path is None:
        raise click.UsageError("give the ISSUE to schedule (or --list)")
    config = load_config(config_path)
    if cancel:
        if at:
            raise click.UsageError("--cancel takes no --at")
        for row in scheduling.cancel_schedule(issue_path, config):
            click.echo(
                f"Cancelled #{row.id}: {row.path} on {scheduling.describe_moment(row.due_at)}"
            )
        return
    if not at:
        raise click.UsageError("give the time to send with --at, e.g. --at 2024-05-03T07:00+02:00")
    due_at = scheduling.parse_due(at, dt.datetime.now(dt.UTC))
    done = scheduling.schedule_issue(
        issue_path, config, due_at, as_segment(segment), skip_check=skip_check
    )
    click.echo(scheduling.describe_scheduled(done))


@click.command()
@click.option(
    "--poll",
    type=click.FloatRange(min=0.05),
    default=5.0,
    show_default=True,
    help="Seconds between looks at the schedules.",
)
@config_option
def worker(poll: float, config_path: Path) -> None:
    """Start each scheduled dispatch when it is due; runs until SIGTERM or Ctrl+C."""
    from composer.config import load_config
    from composer.sending.worker import run_worker

    def log(line: str) -> None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        click.echo(f"{stamp} {line}")

    run_worker(load_config(config_path), poll_seconds=poll, log=log)


COMMANDS = (schedule, worker)
