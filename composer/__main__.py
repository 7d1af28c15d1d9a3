"""The ``newsletter`` command line: parse, call the library, print.

Each command imports its worker inside the function, so ``--help`` stays instant.
Errors are :class:`composer.errors.NewsletterError`, which click prints as one line
with the right exit code; no command needs its own try/except.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from composer import __version__
from composer.model import TIERS, Tier

if TYPE_CHECKING:
    from composer.store import Segment

F = TypeVar("F", bound=Callable[..., Any])


def config_option(command: F) -> F:
    """The ``--config PATH`` option every command takes."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path, dir_okay=False),
        default=Path("config.toml"),
        show_default=True,
        help="The newsletter's settings file.",
    )(command)


issue_argument = click.argument(
    "issue_path", metavar="ISSUE", type=click.Path(path_type=Path, dir_okay=False)
)
tier_option = click.option(
    "--tier",
    type=click.Choice(["free", "paid"]),
    default="paid",
    show_default=True,
    help="Compose for free readers (cut at the paywall) or paid readers (everything).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="newsletter")
def cli() -> None:
    """Write a newsletter issue as a plain file, preview it, test it, send it."""


@cli.command()
@issue_argument
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("build"),
    show_default=True,
    help="Folder for the .html, .txt, .mjml and .eml files.",
)
@tier_option
@config_option
def build(issue_path: Path, out_dir: Path, tier: str, config_path: Path) -> None:
    """Compose ISSUE and write its HTML, plain text, MJML and .eml files."""
    from composer.composing.build import build_issue
    from composer.config import load_config

    result = build_issue(issue_path, load_config(config_path), as_tier(tier), out_dir)
    composed = result.composed
    click.echo(
        f"Built {composed.issue.slug} ({tier}): {composed.html_size / 1024:.1f} KB HTML, "
        f"{composed.word_count:,} words, about {composed.reading_minutes} min to read"
    )
    for path in result.files:
        click.echo(f"  {path}")


@cli.command()
@issue_argument
@config_option
def check(issue_path: Path, config_path: Path) -> None:
    """Lint the composed ISSUE before it is sent; exit 1 on errors."""
    from composer.composing.check import check_issue
    from composer.config import load_config

    report = check_issue(issue_path, load_config(config_path))
    for finding in report.findings:
        click.echo(str(finding))
    click.echo(report.summary())
    if report.errors:
        raise SystemExit(1)


@cli.command()
@click.argument("slug", required=False)
@click.option("--toml", "as_toml", is_flag=True, help="Write the issue as TOML, not Markdown.")
@click.option(
    "--dir",
    "issues_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("issues"),
    show_default=True,
    help="Folder to write the issue into.",
)
@config_option
def new(slug: str | None, as_toml: bool, issues_dir: Path, config_path: Path) -> None:
    """Scaffold a new issue file under issues/, dated today."""
    from composer.composing.scaffold import new_issue

    path = new_issue(issues_dir, slug, as_toml=as_toml)
    click.echo(f"Created {path}")
    click.echo(f"Next: edit it, then `newsletter build {path}`")


@cli.command()
@click.argument(
    "directory",
    metavar="[DIR]",
    default=Path("."),
    type=click.Path(path_type=Path, file_okay=False),
)
def init(directory: Path) -> None:
    """Make DIR (default: here) a newsletter: a commented config.toml, a first issue under
    issues/ and a .gitignore; never overwrites a file."""
    from composer.composing.folder import init_folder

    made = init_folder(directory)
    for path in (made.config, made.issue, made.gitignore):
        click.echo(f"Created {path}")
    where = "" if directory == Path(".") else f"cd {directory} && "
    issue = made.issue.relative_to(directory)
    click.echo(f"Next: {where}newsletter build {issue}, or newsletter preview {issue}")


@cli.group()
def templates() -> None:
    """See the default templates and copy them into the newsletter's own folder, where a
    file overrides the default of the same name."""


@templates.command("list")
@config_option
def list_templates_command(config_path: Path) -> None:
    """Show every template and whether it is the default, overridden or the newsletter's own."""
    from composer.composing.templates import DEFAULT_TEMPLATES, list_templates
    from composer.config import load_config

    own = load_config(config_path).newsletter.templates
    click.echo(f"Yours (searched first): {own}\nDefaults: {DEFAULT_TEMPLATES}")
    words = {"default": "default", "override": "yours, overrides the default", "added": "yours"}
    for entry in list_templates(own):
        click.echo(f"  {entry.name:32} {words[entry.source]}")


@templates.command("copy")
@click.argument("names", metavar="[NAME]...", nargs=-1)
@config_option
def copy_templates_command(names: tuple[str, ...], config_path: Path) -> None:
    """Copy the default templates (all, or each NAME: news, email, blocks/news.mjml.j2)
    into the newsletter's templates folder to edit; a file already there is kept."""
    from composer.composing.templates import copy_templates
    from composer.config import load_config

    result = copy_templates(load_config(config_path).newsletter.templates, names)
    for name in result.copied:
        click.echo(f"Copied {result.folder / name}")
    for name in result.skipped:
        click.echo(f"Kept {result.folder / name}: it exists (remove it to copy the default)")


@cli.command()
@issue_argument
@click.option(
    "--port", default=8001, show_default=True, help="Port on 127.0.0.1 (0 picks a free one)."
)
@click.option(
    "--open/--no-open",
    "open_browser",
    default=True,
    show_default=True,
    help="Open the preview in the default browser.",
)
@click.option(
    "--as",
    "as_email",
    metavar="EMAIL",
    help="Show the copy this subscriber gets: their tier and their unsubscribe link.",
)
@config_option
def preview(
    issue_path: Path, port: int, open_browser: bool, as_email: str | None, config_path: Path
) -> None:
    """Serve ISSUE on 127.0.0.1 and update the page whenever the issue, a template or the
    config changes: desktop and phone widths, paid and free, HTML and plain text, light
    and dark, the size against Gmail's clip and the check findings. Ctrl+C stops it."""
    from composer.web.preview import serve_preview

    serve_preview(
        issue_path,
        config_path,
        port=port,
        open_browser=open_browser,
        as_email=as_email,
        echo=click.echo,
    )


@cli.group()
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
    type=click.Choice(["free", "paid"]),
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
    type=click.Choice(["active", "unsubscribed", "bounced", "complained"]),
    help="Only subscribers with this status.",
)
@config_option
def list_subscribers(status: str | None, config_path: Path) -> None:
    """Print the list, one tab-separated line each: email, name, tier, status, tags.

    The count by status goes to stderr, so the lines can be piped on their own.
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
    by_status = ", ".join(f"{count} {name}" for name, count in counts.items())
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


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, help="Port to listen on.")
@click.option(
    "--issues",
    "issues_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder of issue files to publish  [default: issues/ next to the config]",
)
@config_option
def serve(host: str, port: int, issues_dir: Path | None, config_path: Path) -> None:
    """Run the web service at base_url: unsubscribe links, web versions, archive, feed."""
    import logging

    import uvicorn

    from composer.config import load_config
    from composer.web.serve import RedactQueryStrings, create_app

    config = load_config(config_path)
    app = create_app(config, issues_dir)
    click.echo(
        f"Serving {config.newsletter.base_url} on http://{host}:{port}"
        " (put it behind your HTTPS proxy; Ctrl+C to stop)"
    )
    logging.getLogger("uvicorn.access").addFilter(RedactQueryStrings())
    uvicorn.run(app, host=host, port=port)


@cli.command()
@click.option("--port", type=int, help="Port to listen on  [default: [smtp] port]")
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("outbox"),
    show_default=True,
    help="Folder for the .eml files.",
)
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


@cli.command("send-test")
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
    from composer.sending.send import send_test

    config = load_config(config_path)
    to = addresses or config.newsletter.test_recipients
    if not to:
        raise click.UsageError("no --to given and [newsletter] test_recipients is empty")
    report = send_test(issue_path, config, as_tier(tier), to)
    if not print_test_report(report, len(to)):
        raise SystemExit(1)


@cli.command()
@issue_argument
@click.option(
    "--segment",
    type=click.Choice(["free", "paid", "all"]),
    default="all",
    show_default=True,
    help="Which subscribers: free ones get the free edition, paid ones the full issue.",
)
@click.option("--dry-run", is_flag=True, help="Compose and count; send nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--concurrency", type=click.IntRange(min=1), help="SMTP connections at once.")
@click.option("--rate", type=click.FloatRange(min=0), help="At most this many messages a second.")
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Also try again the recipients that failed for a temporary or server-side cause.",
)
@config_option
def send(
    issue_path: Path,
    segment: str,
    dry_run: bool,
    yes: bool,
    concurrency: int | None,
    rate: float | None,
    retry_failed: bool,
    config_path: Path,
) -> None:
    """Dispatch ISSUE to every active subscriber, once; rerun the same command to resume."""
    from composer.config import load_config
    from composer.sending.console import confirm_plan, print_send_result, progress_display
    from composer.sending.send import dispatch_settings, plan_send, send_issue

    config = load_config(config_path)
    chosen = as_segment(segment)
    plan = plan_send(issue_path, config, chosen, retry_failed=retry_failed)
    if not confirm_plan(plan, dry_run=dry_run, assume_yes=yes):
        return
    with progress_display() as display:
        result = send_issue(
            issue_path,
            config,
            chosen,
            settings=dispatch_settings(config, concurrency, rate),
            retry_failed=retry_failed,
            on_start=display.start,
            on_progress=display.update,
        )
    if not print_send_result(result, issue_path):
        raise SystemExit(1)


@cli.command()
@issue_argument
@config_option
def status(issue_path: Path, config_path: Path) -> None:
    """Show where the dispatch of ISSUE stands, with each failure and the server's reply."""
    from composer.config import load_config
    from composer.sending.console import print_status
    from composer.sending.send import dispatch_status

    print_status(dispatch_status(issue_path, load_config(config_path)), issue_path)


def as_segment(value: str) -> Segment:
    """The segment click has already checked against ``--segment``'s choices."""
    segments: dict[str, Segment] = {"free": "free", "paid": "paid", "all": "all"}
    if value in segments:
        return segments[value]
    raise click.BadParameter(f"unknown segment {value!r}", param_hint="--segment")


def as_tier(value: str) -> Tier:
    """The tier click has already checked against ``--tier``'s choices."""
    if value not in TIERS:
        raise click.BadParameter(f"unknown tier {value!r}", param_hint="--tier")
    return value


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="newsletter")


if __name__ == "__main__":
    main()
