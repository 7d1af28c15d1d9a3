"""``init`` and ``templates``: the newsletter folder and the templates it overrides."""

from __future__ import annotations

from pathlib import Path

import click

from composer.cli.options import config_option


@click.command()
@click.argument(
    "directory",
    metavar="[DIR]",
    default=Path("."),
    type=click.Path(path_type=Path, file_okay=False),
)
def init(directory: Path) -> None:
    """Make DIR (default: here) a newsletter: a commented config.toml, a first issue under
    issues/, the welcome message for new readers (welcome.md) and a .gitignore (or the
    lines it needs added to the one there); never overwrites a file."""
    from composer.composing.folder import init_folder

    made = init_folder(directory)
    for path in (made.config, made.issue, made.welcome):
        click.echo(f"Created {path}")
    if made.gitignore_added is None:
        click.echo(f"Created {made.gitignore}")
    elif made.gitignore_added:
        added = made.gitignore_added
        lines = f"{len(added)} line{'' if len(added) == 1 else 's'}"
        click.echo(f"Added {lines} to {made.gitignore} ({', '.join(added)})")
    else:
        click.echo(f"Kept {made.gitignore}: it already has every line needed")
    where = "" if directory == Path(".") else f"cd {directory} && "
    issue = made.issue.relative_to(directory)
    click.echo(f"Next: {where}newsletter build {issue}, or newsletter preview {issue}")


@click.group()
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


COMMANDS = (init, templates)
