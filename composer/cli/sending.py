"""``outbox``, ``send-test``, ``send`` and ``status``: dispatching an issue over SMTP."""

from __future__ import annotations

from pathlib import Path

import click

from composer.cli.options import (
    as_segment,
    as_tier,
    config_option,
    folder_option,
    issue_argument,
    port_option,
    segment_option,
    tier_option,
)


@click.command()
@port_option(None, "Port to listen on  [default: [smtp] port]")
@folder_option("--dir", "directory", "outbox", "Folder for the .eml files.")
@config_option
def outbox(port: int | None, directory: Path, config_path: Path) -> None:
    """Run a local SMTP server that stores every message as a .eml file (Ctrl+C to stop)."""
    from composer.config import load_config
    from composer.sending.outbox import run_outbox

    smtp = load_config(config_path).smtp

    def ready(bound: int) -> None:
        click.echo(f"Outbox on {smtp.host}:{bound}, storing messages in {directory}/")

    def stored(sender: str, recipients: list[str], path: Path) -> None:
        click.echo(f"{', '.join(recipients)}  ←  {sender}  {path}")

    run_outbox(directory, smtp.host, smtp.port if port is None else port, stored, ready)


@click.command("send-test")
@issue_argument
@click.option(
    "--to",
    "addresses",
    multiple=True,
    help="An address to send to (repeatable)  [default: test_recipients]",
)
@tier_option
@config_option
def send_test_command(
    issue_path: Path, addresses: tuple[str, ...], tier: str, config_path: Path
) -> None:
    """Send ISSUE to test addresses only, subject prefixed [TEST]."""
    from composer.config import load_config
    from composer.sending.console import print_test_report
    from composer.sending.send import addresses_for_test, send_test

    config = load_config(config_path)
    to = addresses_for_test(config, addresses)
    report = send_test(issue_path, config, as_tier(tier), to)
    if not print_test_report(report, len(to)):
        raise SystemExit(1)


@click.command()
@issue_argument
@segment_option
@click.option("--dry-run", is_flag=True, help="Compose and count; send nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--concurrency", type=click.IntRange(min=1), help="SMTP connections at once.")
@click.option("--rate", type=click.FloatRange(min=0), help="At most this many messages a second.")
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Also try again the recipients that failed for a temporary or server-side cause.",
)
@click.option(
    "--again",
    is_flag=True,
    help="Send content already sent in another dispatch (e.g. a copy under another id).",
)
@click.option(
    "--include-unknown",
    is_flag=True,
    help="With --retry-failed, also send again the copies whose outcome is unknown (no"
    " reply to the end of the message in time: they may have arrived).",
)
@click.option(
    "--skip-check",
    is_flag=True,
    help="Send even if `newsletter check` finds errors in the issue (a TK left in…).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes on this machine sending the dispatch together (a PostgreSQL list;"
    " with SQLite one process sends).",
)
@click.option("--as-worker", is_flag=True, hidden=True)
@config_option
def send(
    issue_path: Path,
    segment: str,
    dry_run: bool,
    yes: bool,
    concurrency: int | None,
    rate: float | None,
    retry_failed: bool,
    again: bool,
    include_unknown: bool,
    skip_check: bool,
    workers: int,
    as_worker: bool,
    config_path: Path,
) -> None:
    """Dispatch ISSUE to every active subscriber, once; rerun the same command to resume.
    On a PostgreSQL list, the same command run while the issue is being sent (here or
    on another machine) joins the dispatch."""
    from composer.config import load_config
    from composer.sending.console import (
        confirm_plan,
        console,
        print_send_result,
        progress_display,
    )
    from composer.sending.processes import (
        WorkerOptions,
        report_line,
        send_with_workers,
        several_can_send,
    )
    from composer.sending.send import dispatch_settings, plan_send, send_issue

    if include_unknown and not retry_failed:
        raise click.UsageError("--include-unknown goes with --retry-failed")
    config = load_config(config_path)
    chosen = as_segment(segment)
    settings = dispatch_settings(config, concurrency, rate)
    if as_worker:
        # One of the processes of `send --workers N`: no questions, no bar, one line.
        result = send_issue(
            issue_path,
            config,
            chosen,
            settings=settings,
            retry_failed=retry_failed,
            again=again,
            include_unknown=include_unknown,
            skip_check=skip_check,
        )
        click.echo(report_line(result.report))
        return
    if workers > 1 and not several_can_send(config):
        console.print(
            f"--workers {workers}: a SQLite list is sent by one process, so this one sends"
            " it all (several need a PostgreSQL list)."
        )
        workers = 1
    plan = plan_send(
        issue_path,
        config,
        chosen,
        retry_failed=retry_failed,
        include_unknown=include_unknown,
        again=again,
        skip_check=skip_check,
    )
    if not confirm_plan(plan, dry_run=dry_run, assume_yes=yes):
        return
    with progress_display() as display:
        if workers > 1:
            display.start(plan)
            options = WorkerOptions(
                segment=chosen,
                concurrency=concurrency,
                rate=rate,
                retry_failed=retry_failed,
                include_unknown=include_unknown,
                again=again,
            )
            result = send_with_workers(
                issue_path, config, plan, options, workers, on_progress=display.update
            )
        else:
            result = send_issue(
                issue_path,
                config,
                chosen,
                settings=settings,
                retry_failed=retry_failed,
                again=again,
                include_unknown=include_unknown,
                skip_check=skip_check,
                on_start=display.start,
                on_progress=display.update,
            )
    if not print_send_result(result, issue_path):
        raise SystemExit(1)


@click.command()
@issue_argument
@config_option
def status(issue_path: Path, config_path: Path) -> None:
    """Show where the dispatch of ISSUE stands, with each failure and the server's reply,
    and the bounces and complaints that came back."""
    from composer.config import load_config
    from composer.sending.console import print_status
    from composer.sending.send import dispatch_feedback, dispatch_status

    config = load_config(config_path)
    print_status(
        dispatch_status(issue_path, config), issue_path, dispatch_feedback(issue_path, config)
    )


COMMANDS = (outbox, send_test_command, send, status)
