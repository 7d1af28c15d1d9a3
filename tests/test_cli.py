"""The command line: build's files, new's skeletons, config errors, and a quick --help."""

from __future__ import annotations

import datetime as dt
import email
from email import policy

import pytest

from composer.cli import cli
from tests.conftest import EXAMPLE_MD, modules_after_import


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


def test_bad_config_lists_every_problem_at_once_one_a_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[newsletter]\nname = "N"\nfrom = "nobody"\nbase_url = "ftp://x"\n'
        '[smtp]\nsecurity = "ssl"\nprot = 25\n',
        encoding="utf-8",
    )
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, ["build", str(EXAMPLE_MD), "--config", str(bad)])
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        f"Error: {bad}: 4 problems:",
        "  [smtp] unknown key 'prot'",
        "  [newsletter] from is not an email address: 'nobody'",
        "  [newsletter] base_url must start with https:// (or http:// for a local server)",
        "  [smtp] security must be one of none, starttls, tls",
    ]


def test_a_single_config_problem_is_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[newsletter]\nname = "N"\nfrom = "n@example.com"\nbase_url = "https://x"\n'
        "[smtp]\nport = 0\n",
        encoding="utf-8",
    )
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, ["build", str(EXAMPLE_MD), "--config", str(bad)])
    assert result.exit_code == 2
    assert result.output.splitlines() == [f"Error: {bad}: [smtp] port out of range"]


def test_config_values_of_the_wrong_type_are_problems_not_a_traceback(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[newsletter]\nname = "N"\nfrom = 1\nbase_url = 5\ntest_recipients = "a@b.c"\n'
        '[smtp]\nport = "25"\nca_file = 3\n[send]\nconcurrency = "8"\n',
        encoding="utf-8",
    )
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, ["build", str(EXAMPLE_MD), "--config", str(bad)])
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [
        f"Error: {bad}: 6 problems:",
        "  [newsletter] from has the wrong type (int)",
        "  [newsletter] base_url has the wrong type (int)",
        "  [newsletter] test_recipients has the wrong type (str)",
        "  [smtp] port has the wrong type (str)",
        "  [smtp] ca_file has the wrong type (int)",
        "  [send] concurrency has the wrong type (str)",
    ]


def test_help_is_instant_because_workers_load_lazily():
    heavy = {"premailer", "mjml", "jinja2", "markdown_it", "aiosmtplib", "aiosmtpd", "lxml"}
    heavy |= {"starlette", "uvicorn", "watchfiles"}
    assert heavy & modules_after_import("composer.cli") == set()


@pytest.mark.parametrize(
    ("setting", "problem"),
    [
        ("[smtp]\ntimeout = 0", "[smtp] timeout must be a number of seconds above 0, such as 30"),
        ("[smtp]\ntimeout = -5", "[smtp] timeout must be a number of seconds above 0, such as 30"),
        ("[smtp]\ntimeout = nan", "[smtp] timeout must be a number of seconds above 0, such as 30"),
        ("[smtp]\ntimeout = inf", "[smtp] timeout must be a number of seconds above 0, such as 30"),
        (
            "[send]\nrate_per_second = nan",
            "[send] rate_per_second must be 0 (no limit) or a number of messages a second",
        ),
        (
            "[send]\nrate_per_second = inf",
            "[send] rate_per_second must be 0 (no limit) or a number of messages a second",
        ),
        ("[send]\nlease_seconds = 0.5", "[send] lease_seconds must be at least 1"),
        ("[send]\nlease_seconds = nan", "[send] lease_seconds must be at least 1"),
    ],
)
def test_a_timeout_or_rate_that_is_zero_or_not_a_finite_number_is_refused(
    tmp_path, setting, problem
):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        f'[newsletter]\nname = "N"\nfrom = "n@example.com"\nbase_url = "https://x"\n{setting}\n',
        encoding="utf-8",
    )
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, ["build", str(EXAMPLE_MD), "--config", str(bad)])
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [f"Error: {bad}: {problem}"]


def test_a_sender_with_an_international_domain_builds_with_its_punycode_form(
    run_cli, tmp_path, config_path
):
    text = config_path.read_text(encoding="utf-8")
    config_path.write_text(
        text.replace("<news@example.com>", "<news@bücher.example>"), encoding="utf-8"
    )
    result = run_cli("build", EXAMPLE_MD, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    eml = (tmp_path / "out" / "2024-05-03-example.eml").read_bytes()
    message = email.message_from_bytes(eml, policy=policy.default)
    assert message["From"].addresses[0].domain == "xn--bcher-kva.example"
    assert message["Message-ID"].endswith("@xn--bcher-kva.example>")


def test_a_sender_whose_name_before_the_at_is_not_ascii_is_one_config_line(
    run_cli, tmp_path, config_path
):
    text = config_path.read_text(encoding="utf-8")
    config_path.write_text(
        text.replace("<news@example.com>", "<nachrichten-ü@example.com>"), encoding="utf-8"
    )
    result = run_cli("build", EXAMPLE_MD, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        f"Error: {config_path}: [newsletter] from needs a plain ASCII name before the @"
        " (every server can take it): 'China Boss News <nachrichten-ü@example.com>'"
    ]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "command", [["preview", str(EXAMPLE_MD), "--no-open"], ["outbox"], ["serve"]]
)
def test_a_port_no_machine_has_is_a_usage_error_not_a_traceback(run_cli, command):
    result = run_cli(*command, "--port", "99999")
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--port': 99999 is not in the range 0<=x<=65535." in result.output


def test_page_urls_must_be_https_each_problem_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[newsletter]\nname = "N"\nfrom = "n@example.com"\nbase_url = "https://x"\n'
        'privacy_url = "http://x.example/privacy"\nterms_url = "https://x.example/a b"\n'
        'upgrade_url = "https://pay.example.com/join"\nshare = false\n',
        encoding="utf-8",
    )
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, ["build", str(EXAMPLE_MD), "--config", str(bad)])
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        f"Error: {bad}: 2 problems:",
        "  [newsletter] privacy_url must be an https:// URL such as"
        " https://example.com/privacy, not 'http://x.example/privacy'",
        "  [newsletter] terms_url must be an https:// URL such as"
        " https://example.com/terms, not 'https://x.example/a b'",
    ]
