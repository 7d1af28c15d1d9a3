"""The options and arguments several commands share, and the converters from click's
checked strings to the library's vocabularies."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, get_args

import click

from composer.model import TIERS, Tier
from composer.store import Segment

F = TypeVar("F", bound=Callable[..., Any])
SEGMENTS: tuple[Segment, ...] = get_args(Segment)


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
    type=click.Choice(TIERS),
    default="paid",
    show_default=True,
    help="Compose for free readers (cut at the paywall) or paid readers (everything).",
)


def as_tier(value: str) -> Tier:
    """The tier click has already checked against ``--tier``'s choices."""
    if value not in TIERS:
        raise click.BadParameter(f"unknown tier {value!r}", param_hint="--tier")
    return value


def port_option(default: int | None, help: str) -> Callable[[F], F]:
    """A ``--port`` option that refuses numbers no port has, before any socket sees them."""
    return click.option(
        "--port",
        type=click.IntRange(0, 65535),
        default=default,
        show_default=default is not None,
        help=help,
    )


def folder_option(name: str, dest: str, default: str, help: str) -> Callable[[F], F]:
    """A ``--dir``/``--out`` option naming a folder, ``default`` unless given."""
    return click.option(
        name,
        dest,
        type=click.Path(path_type=Path, file_okay=False),
        default=Path(default),
        show_default=True,
        help=help,
    )


def segment_option(command: F) -> F:
    """The ``--segment free|paid|all`` option of the commands that send to the list."""
    return click.option(
        "--segment",
        type=click.Choice(SEGMENTS),
        default="all",
        show_default=True,
        help="Which subscribers: free ones get the free edition, paid ones the full issue.",
    )(command)


def as_segment(value: str) -> Segment:
    """The segment click has already checked against ``--segment``'s choices."""
    if value not in SEGMENTS:
        raise click.BadParameter(f"unknown segment {value!r}", param_hint="--segment")
    return value
