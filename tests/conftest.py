"""Shared fixtures: a config in a temporary folder, issue files written on the fly, the CLI."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from composer.__main__ import cli
from composer.config import Config, load_config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_MD = ROOT / "issues" / "2024-05-03-example.md"
EXAMPLE_TOML = ROOT / "issues" / "2024-05-03-example.toml"

CONFIG_TEXT = f"""
[newsletter]
name = "China Boss News"
from = "China Boss News <news@example.com>"
reply_to = "editor@example.com"
base_url = "https://news.example.com"
address = "1 Example Street, Springfield"
test_recipients = ["editor@example.com"]
templates = "{(ROOT / "templates").as_posix()}"

[subscribers]
database = "subscribers.db"
"""


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG_TEXT, encoding="utf-8")
    return path


@pytest.fixture
def config(config_path: Path) -> Config:
    return load_config(config_path)


@pytest.fixture
def write_issue(tmp_path: Path) -> Callable[..., Path]:
    """Write an issue file from dedented text (or bytes) and return its path."""

    def write(content: str | bytes, name: str = "issue.md") -> Path:
        path = tmp_path / "issues" / name
        path.parent.mkdir(exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content).lstrip("\n"), encoding="utf-8")
        return path

    return write


@pytest.fixture
def run_cli(config_path: Path) -> Callable[..., Result]:
    """Run ``newsletter ARGS… --config <the test config>`` in-process."""

    def run(*args: str | Path) -> Result:
        words = [str(arg) for arg in args]
        return CliRunner().invoke(cli, [*words, "--config", str(config_path)])

    return run
