"""The ``newsletter`` command line: parse, call the library, print.

Each command imports its worker inside the function, so ``--help`` stays instant.
Errors are :class:`composer.errors.NewsletterError`, which click prints as one line
with the right exit code; no command needs its own try/except.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from composer import __version__
from composer.model import TIERS, Tier

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
