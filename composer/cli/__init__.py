"""The ``newsletter`` command line: parse, call the library, print.

One module per group of commands, each a thin shell over the library:

    options.py       the options and arguments several commands share
    composing.py     new, build, check
    folder.py        init, templates list and copy
    web.py           preview, serve
    subscribers.py   the ``subscribers`` group
    sending.py       outbox, send-test, send, status
    scheduling.py    schedule, worker
    bounces.py       the ``bounces`` group: fetch, list
    database.py      the ``db`` group: db copy

Each module lists its commands in ``COMMANDS``; a new module is one more line in
``COMMANDS`` below. Each command imports its worker inside the function, so ``--help``
stays instant. Errors are :class:`composer.errors.NewsletterError`, which click prints
as one line with the right exit code; no command needs its own try/except.
"""

from __future__ import annotations

import logging

import click

from composer import __version__
from composer.cli import bounces, composing, database, folder, scheduling, sending, subscribers, web


class EchoWarnings(logging.Handler):
    """Prints the library's warnings on stderr as they are, one line each: what a
    database migration did, for one."""

    def emit(self, record: logging.LogRecord) -> None:
        # click.echo looks stderr up at each call, so this also follows click's test
        # runner, which swaps the stream for every invocation.
        click.echo(self.format(record), err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="newsletter")
def cli() -> None:
    """Write a newsletter issue as a plain file, preview it, test it, send it."""
    library = logging.getLogger("composer")
    if not any(isinstance(handler, EchoWarnings) for handler in library.handlers):
        library.addHandler(EchoWarnings(logging.WARNING))


COMMANDS: tuple[click.Command, ...] = (
    *composing.COMMANDS,
    *folder.COMMANDS,
    *web.COMMANDS,
    *subscribers.COMMANDS,
    *sending.COMMANDS,
    *scheduling.COMMANDS,
    *bounces.COMMANDS,
    *database.COMMANDS,
)
for command in COMMANDS:
    cli.add_command(command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="newsletter")
