"""The command line: build's files, new's skeletons, and help for every command."""

from __future__ import annotations

import datetime as dt
import email
import subprocess
import sys
from email import policy

import click

from composer.__main__ import cli
from tests.conftest import EXAMPLE_MD, ROOT


def test_build_writes_html_text_mjml_and_eml(run_cli, tmp_path):
    out = tmp_path / "out"
    result = run_cli("build", EXAMPLE_MD, "--out", out)
    assert result.exit_code == 0, result.output
    names = sorted(path.name for path in out.iterdir())
    stem = "2024-05-03-example"
    assert names == [f"{stem}.eml", f"{stem}.html", f"{stem}.mjml", f"{stem}.txt"]
    message = email.message_from_bytes((out / f"{stem}.eml").read_bytes(), policy=policy.default)
    assert message["Subject"] == "The data pipeline behind the apps everyone uses"
    html = (out / f"{stem}.html").read_text(encoding="utf-8")
    assert "https://news.example.com/unsubscribe" in html
    assert "%%unsubscribe_url%%" not in html
    assert "KB HTML" in result.output


def test_build_free_tier_cuts_at_the_paywall(run_cli, tmp_path):
    result = run_cli("build", EXAMPLE_MD, "--out", tmp_path, "--tier", "free")
    assert result.exit_code == 0
    html = (tmp_path / "2024-05-03-example.html").read_text(encoding="utf-8")
    assert "Keep reading" in html and "BANKS STEP BACK" not in html


def test_new_scaffolds_an_issue_that_builds_in_both_formats(run_cli, tmp_path):
    issues = tmp_path / "issues"
    today = dt.date.today().isoformat()
    for flag, suffix in (([], ".md"), (["--toml"], ".toml")):
        result = run_cli("new", "weekly", "--dir", issues, *flag)
        assert result.exit_code == 0, result.output
        assert (issues / f"{today}-weekly{suffix}").exists()
    md = run_cli("build", issues / f"{today}-weekly.md", "--out", tmp_path / "md")
    toml = run_cli("build", issues / f"{today}-weekly.toml", "--out", tmp_path / "toml")
    assert md.exit_code == toml.exit_code == 0
    assert (tmp_path / "md" / f"{today}-weekly.html").read_bytes() == (
        tmp_path / "toml" / f"{today}-weekly.html"
    ).read_bytes()


def test_new_never_overwrites_an_issue(run_cli, tmp_path):
    assert run_cli("new", "x", "--dir", tmp_path).exit_code == 0
    again = run_cli("new", "x", "--dir", tmp_path)
    assert again.exit_code == 2
    assert "already exists" in again.output


def test_missing_config_is_one_clear_line(tmp_path):
    from click.testing import CliRunner

    result = CliRunner().invoke(
        cli, ["build", str(EXAMPLE_MD), "--config", str(tmp_path / "none.toml")]
    )
    assert result.exit_code == 2
    assert "no such config file" in result.output
    assert "Traceback" not in result.output


def test_bad_config_lists_every_problem_at_once(tmp_path, run_cli):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[newsletter]\nname = "N"\nfrom = "nobody"\nbase_url = "ftp://x"\n'
        '[smtp]\nsecurity = "ssl"\nprot = 25\n',
        encoding="utf-8",
    )
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, ["build", str(EXAMPLE_MD), "--config", str(bad)])
    assert result.exit_code == 2
    for words in ("from is not an email address", "base_url", "security", "unknown key 'prot'"):
        assert words in result.output


def _commands(group: click.Group, prefix: str = ""):
    for name, command in group.commands.items():
        yield f"{prefix}{name}", command
        if isinstance(command, click.Group):
            yield from _commands(command, f"{prefix}{name} ")


def test_every_command_has_help_and_is_in_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name, command in _commands(cli):
        assert command.help, f"{name} has no help text"
        assert f"newsletter {name}" in readme, f"README does not mention `newsletter {name}`"


def test_help_is_instant_because_workers_load_lazily():
    code = (
        "import sys, composer.__main__ as m; "
        "heavy = {'premailer', 'mjml', 'jinja2', 'markdown_it', 'aiosmtplib', 'aiosmtpd', 'lxml',"
        " 'starlette', 'uvicorn', 'watchfiles'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "[]"
