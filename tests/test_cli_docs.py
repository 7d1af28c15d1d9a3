"""The command line and its documents agree: every command has help, is shown in the
README and described with each of its options in docs/cli.md, every command line the
README shows names real commands and options, and every route of `newsletter serve` is
in docs/cli.md's table of routes."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator

import click
import pytest

from composer.cli import cli
from composer.config import WEBHOOK_SERVICES, load_config
from composer.web import webhooks
from composer.web.serve import create_app
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
REFERENCE = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")


def walk(group: click.Group, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    """Every command and subcommand under ``group``, with its full name."""
    for name, command in group.commands.items():
        yield f"{prefix}{name}", command
        if isinstance(command, click.Group):
            yield from walk(command, f"{prefix}{name} ")


COMMANDS = dict(walk(cli))


def shell_lines() -> list[str]:
    """The ``newsletter …`` lines of the README's sh blocks, comments dropped and the
    brackets around optional parts taken off."""
    blocks = re.findall(r"^```sh\n(.*?)^```", README, re.DOTALL | re.MULTILINE)
    lines = (line for block in blocks for line in block.splitlines())
    return [
        line.split(" #")[0].replace("[", "").replace("]", "").strip()
        for line in lines
        if line.startswith("newsletter ")
    ]


def inline_commands() -> list[str]:
    """The README's inline code spans that start with ``newsletter `` (placeholders kept)."""
    return [" ".join(span.split()) for span in re.findall(r"`(newsletter [^`]+)`", README)]


def resolve(words: list[str]) -> tuple[str, click.Command, list[str]]:
    """The command ``newsletter WORDS…`` runs, its full name and the words left for it."""
    command: click.Command = cli
    path: list[str] = []
    while isinstance(command, click.Group) and words and words[0] in command.commands:
        path.append(words[0])
        command = command.commands[words.pop(0)]
    return " ".join(path), command, words


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help_text(name):
    assert COMMANDS[name].help, f"`newsletter {name}` has no help text"


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_is_shown_in_the_readme(name):
    # In an example, in the prose or in a table row: `newsletter send` does not count
    # for `newsletter send-test`, nor the other way round.
    shown = re.search(rf"\bnewsletter {re.escape(name)}(?![\w-])", README)
    assert shown, f"README.md never shows `newsletter {name}`; add it where it belongs"


@pytest.mark.parametrize("line", shell_lines())
def test_every_command_line_in_the_readme_parses(line):
    name, command, rest = resolve(shlex.split(line)[1:])
    assert not isinstance(command, click.Group), f"{line!r}: no such command"
    # Strict parsing: an unknown option, a wrong value or a missing argument fails here.
    command.make_context(f"newsletter {name}", rest)


@pytest.mark.parametrize("span", inline_commands())
def test_every_command_the_readme_names_inline_exists_with_its_options(span):
    name, command, rest = resolve(shlex.split(span)[1:])
    assert name, f"`{span}`: no such command"
    options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    for word in rest:
        assert not word.startswith("-") or word in options, f"`{span}`: no option {word}"


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_and_option_is_in_docs_cli(name):
    command = COMMANDS[name]
    assert f"newsletter {name}" in REFERENCE, f"docs/cli.md does not list `newsletter {name}`"
    for param in command.params:
        spellings = [*param.opts, *param.secondary_opts]
        if isinstance(param, click.Option) and "--config" not in spellings:
            assert any(spelling in REFERENCE for spelling in spellings), (
                f"docs/cli.md does not describe {'/'.join(spellings)} of `newsletter {name}`"
            )


def test_serve_help_names_every_group_of_routes():
    help_text = " ".join((COMMANDS["serve"].help or "").split())
    for words in ("signups", "unsubscribe", "manage pages", "web versions", "webhooks"):
        assert words in help_text, words


def test_every_route_of_serve_is_in_docs_cli(config_path):
    app = create_app(load_config(config_path))
    while not hasattr(app, "routes"):  # inside the guards
        app = app.app  # type: ignore[attr-defined]
    table = REFERENCE.split("### The routes of `newsletter serve`")[1].split("\n\n")[1]
    for route in app.routes:
        path = re.sub(r"\{(\w+)\}", r"<\1>", route.path)
        for method in sorted(route.methods - {"HEAD"}):
            assert f"| `{method} {path}" in table, f"docs/cli.md lists no `{method} {path}`"
    [row] = [line for line in table.splitlines() if f"`POST {webhooks.PREFIX}<service>`" in line]
    assert all(f"`{service}`" in row for service in WEBHOOK_SERVICES), row
