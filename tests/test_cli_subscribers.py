"""`newsletter subscribers …` through click: exit codes and one-line errors."""

from __future__ import annotations

import re
import resource
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import click
import pytest
from click.testing import Result

from composer.cli import cli
from composer.config import Config
from composer.store import open_store
from tests.conftest import ROOT, both_backends, write_csv

Invoke = Callable[..., Result]


@pytest.fixture
def run(run_cli: Invoke) -> Invoke:
    return run_cli


def assert_one_line_error(result: Result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    for fragment in fragments:
        assert fragment in lines[0]


@both_backends
def test_import_of_a_clean_file_exits_0(run: Invoke, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "ok.csv", "email,name\nann@example.com,Ann\n")
    result = run("subscribers", "import", str(path))
    assert result.exit_code == 0
    assert "1 added" in result.stdout


@both_backends
def test_import_with_rejected_rows_exits_1_and_names_each_line(run: Invoke, tmp_path: Path) -> None:
    text = "email,tier\nann@example.com,\nnope,\nbob@example.com,gold\n"
    result = run("subscribers", "import", str(write_csv(tmp_path / "l.csv", text)))
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"{tmp_path / 'l.csv'}:3: 'nope' rejected: An email address must have an @-sign.",
        f"{tmp_path / 'l.csv'}:4: 'gold' rejected:"
        " unknown tier for bob@example.com; use free or paid (empty: free)",
    ]
    assert "1 added" in result.stdout and "2 rejected" in result.stdout


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"email\nann@example.com\nJos\xe9@example.com\n", ":3: not UTF-8"),
        (b"name,tier\nAnn,paid\n", ":1: no `email` column"),
        (b"", ":1: no `email` column"),
    ],
    ids=["latin-1", "no-email-column", "empty"],
)
def test_unreadable_file_exits_2_with_one_line(
    run: Invoke, tmp_path: Path, content: bytes, fragment: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    result = run("subscribers", "import", str(path))
    assert_one_line_error(result, 2, str(path), fragment)


def test_import_of_a_missing_file_exits_2(run: Invoke, tmp_path: Path) -> None:
    result = run("subscribers", "import", str(tmp_path / "missing.csv"))
    assert_one_line_error(result, 2, "missing.csv", "no such file")


@both_backends
def test_add_remove_and_resubscribe(run: Invoke) -> None:
    assert run("subscribers", "add", "Ann@Example.com", "--tier", "paid").stdout == (
        "Added Ann@Example.com (paid)\n"
    )
    assert (
        run("subscribers", "remove", "Ann@example.COM").stdout == "Unsubscribed Ann@Example.com\n"
    )
    refused = run("subscribers", "add", "Ann@example.com")
    assert_one_line_error(refused, 2, "is unsubscribed since", "--resubscribe")
    back = run("subscribers", "add", "Ann@example.com", "--resubscribe")
    assert back.stdout == "Resubscribed Ann@Example.com (paid)\n"


def test_add_of_an_invalid_address_exits_2(run: Invoke) -> None:
    assert_one_line_error(run("subscribers", "add", "ann@"), 2, "'ann@' is not a valid address")


def test_remove_of_an_unknown_address_exits_2(run: Invoke) -> None:
    assert_one_line_error(run("subscribers", "remove", "x@example.com"), 2, "not on the list")


@both_backends
def test_list_prints_tab_separated_rows_and_counts_on_stderr(run: Invoke) -> None:
    run("subscribers", "add", "ann@example.com", "--name", "Ann")
    run("subscribers", "add", "bob@example.com")
    run("subscribers", "remove", "bob@example.com")
    result = run("subscribers", "list")
    assert result.stdout.splitlines() == [
        "ann@example.com\tAnn\tfree\tactive\t",
        "bob@example.com\t\tfree\tunsubscribed\t",
    ]
    assert result.stderr == "2 subscribers: 1 active, 1 unsubscribed, 0 bounced, 0 complained\n"
    active = run("subscribers", "list", "--status", "active")
    assert active.stdout == "ann@example.com\tAnn\tfree\tactive\t\n"


@both_backends
def test_export_writes_a_file_import_accepts(run: Invoke, tmp_path: Path) -> None:
    run("subscribers", "add", "ann@example.com")
    out = tmp_path / "out.csv"
    assert run("subscribers", "export", str(out)).stdout == f"Exported 1 subscribers to {out}\n"
    assert run("subscribers", "import", str(out)).exit_code == 0


def test_import_that_cannot_write_is_one_line_saying_how_many_rows_were_saved(
    config: Config, config_path: Path, tmp_path: Path
) -> None:
    open_store(config.subscribers).close()
    rows = "".join(f"reader{n}@example.com,Reader number {n}\n" for n in range(5000))
    path = write_csv(tmp_path / "big.csv", "email,name\n" + rows)

    def no_file_over_300_kb() -> None:
        # The kernel refuses to grow any file past the limit, so SQLite's write of the
        # log fails at COMMIT, as on a full disk, and SQLite rolls back by itself.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))

    command = [sys.executable, "-m", "composer", "subscribers", "import", str(path)]
    result = subprocess.run(
        [*command, "--config", str(config_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=no_file_over_300_kb,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "cannot rollback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    found = re.search(r"the disk is full or failing .*; ([\d,]+) rows were saved", lines[0])
    assert found is not None, lines[0]
    with open_store(config.subscribers) as store:
        assert store.count_by_status()["active"] == int(found[1].replace(",", "")) > 0


def test_every_subscriber_command_has_help_and_is_in_the_readme() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    group = cli.commands["subscribers"]
    assert isinstance(group, click.Group)
    commands = {f"subscribers {name}": command for name, command in group.commands.items()}
    commands["serve"] = cli.commands["serve"]
    for name, command in commands.items():
        assert command.help, name
        assert f"newsletter {name}" in readme, name
