"""``new``, ``build`` and ``check``: writing an issue and composing it."""

from __future__ import annotations

from pathlib import Path

import click

from composer.cli.options import (
    as_tier,
    config_option,
    folder_option,
    issue_argument,
    tier_option,
)


@click.command()
@click.argument("slug", required=False)
@click.option("--toml", "as_toml", is_flag=True, help="Write the issue as TOML, not Markdown.")
@folder_option("--dir", "issues_dir", "issues", "Folder to write the issue into.")
@config_option
def new(slug: str | None, as_toml: bool, issues_dir: Path, config_path: Path) -> None:
    """Scaffold a new issue file under issues/, dated today."""
    from composer.composing.scaffold import new_issue

    path = new_issue(issues_dir, slug, as_toml=as_toml)
    click.echo(f"Created {path}")
    click.echo(f"Next: edit it, then `newsletter build {path}`")


@click.command()
@issue_argument
@folder_option("--out", "out_dir", "build", "Folder for the .html, .txt, .mjml and .eml files.")
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


@click.command()
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


COMMANDS = (new, build, check)
