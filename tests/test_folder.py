"""A newsletter folder anywhere: `newsletter init`, the templates shipped in the package,
and a folder's own templates overriding them file by file."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
from pathlib import Path

import trustme
from click.testing import CliRunner

from composer.cli import cli
from composer.composing.templates import DEFAULT_TEMPLATES, block_kinds, search_path, template_names
from composer.config import load_config
from tests.conftest import ROOT, newsletter

SHIPPED_KINDS = {"section", "what-happened", "why-it-matters", "news", "big-story"}


def first_issue(folder: Path) -> Path:
    return folder / "issues" / f"{dt.date.today().isoformat()}-first-issue.md"


def test_the_packaged_defaults_are_the_repositorys_templates_folder():
    assert (ROOT / "composer" / "templates").is_symlink()
    assert (ROOT / "templates").resolve() == DEFAULT_TEMPLATES
    assert search_path(ROOT / "templates") == (DEFAULT_TEMPLATES,)
    assert "email.mjml.j2" in template_names(DEFAULT_TEMPLATES)


def test_init_in_an_empty_folder_makes_a_newsletter_whose_first_issue_builds(tmp_path):
    made = newsletter("init", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    issue = first_issue(tmp_path)
    assert f"Created {issue.relative_to(tmp_path)}" in made.stdout
    built = newsletter("build", str(issue.relative_to(tmp_path)), cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "build" / f"{issue.stem}.html").exists()
    checked = newsletter("check", str(issue.relative_to(tmp_path)), cwd=tmp_path)
    errors = [line for line in checked.stdout.splitlines() if ": error:" in line]
    assert checked.returncode == 1 and errors
    assert all('"TK" placeholder' in line for line in errors)  # only what the editor fills in


def test_init_writes_a_welcome_message_that_checks_without_errors(tmp_path):
    made = newsletter("init", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "Created welcome.md" in made.stdout
    assert load_config(tmp_path / "config.toml").subscribe.welcome == tmp_path / "welcome.md"
    checked = newsletter("check", "welcome.md", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout
    assert ": error:" not in checked.stdout


def test_init_writes_a_commented_config_that_points_at_the_outbox(tmp_path):
    result = CliRunner().invoke(cli, ["init", str(tmp_path / "letter")])
    assert result.exit_code == 0, result.output
    assert f"cd {tmp_path / 'letter'} && newsletter build issues/" in result.output
    path = tmp_path / "letter" / "config.toml"
    config = load_config(path)
    assert (config.smtp.host, config.smtp.port, config.smtp.security) == ("127.0.0.1", 1025, "none")
    assert config.subscribers.database == path.parent.resolve() / "subscribers.db"
    assert config.newsletter.templates == path.parent.resolve() / "templates"
    assert config.newsletter.test_recipients and config.newsletter.address
    assert path.read_text(encoding="utf-8").count("\n#") >= 5


def test_init_config_explains_bounces_and_webhooks_and_its_examples_load(tmp_path):
    assert CliRunner().invoke(cli, ["init", str(tmp_path)]).exit_code == 0
    path = tmp_path / "config.toml"
    text = path.read_text(encoding="utf-8")
    for section in ("[subscribe]", "[bounces]", "[webhooks]", "brake_"):
        assert section in text
    # Every example left commented out is a setting that works once uncommented.
    path.write_text(re.sub(r"(?m)^# ([a-z_]+ = )", r"\1", text), encoding="utf-8")
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "relay-ca.pem"))
    config = load_config(path)
    assert config.bounces.address == "bounces@news.example.com"
    assert config.bounces.mailbox is not None and config.send.brake_min_delivered == 1000
    assert config.webhooks.ses_topic_arn.startswith("arn:aws:sns:")


def test_init_gitignore_keeps_the_secret_the_databases_and_the_output_out(tmp_path):
    assert CliRunner().invoke(cli, ["init", str(tmp_path)]).exit_code == 0
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    private = [
        ".newsletter-secret",
        "subscribers.db",
        "subscribers.db-wal",
        "subscribers.db-shm",
        "build/first.html",
        "outbox/1.eml",
    ]
    kept = [".gitignore", "config.toml", first_issue(tmp_path).relative_to(tmp_path).as_posix()]
    ignored = subprocess.run(
        ["git", "check-ignore", *private, *kept], cwd=tmp_path, capture_output=True, text=True
    ).stdout.split()
    assert ignored == private


def test_init_never_overwrites_and_names_every_file_in_the_way(tmp_path):
    (tmp_path / "config.toml").write_text("mine", encoding="utf-8")
    first_issue(tmp_path).parent.mkdir()
    first_issue(tmp_path).write_text("mine too", encoding="utf-8")
    (tmp_path / "welcome.md").write_text("my welcome", encoding="utf-8")
    (tmp_path / ".gitignore").write_text("mine", encoding="utf-8")
    result = newsletter("init", cwd=tmp_path)
    assert result.returncode == 2
    assert "config.toml" in result.stderr and "first-issue.md" in result.stderr
    assert "welcome.md" in result.stderr
    assert "nothing was written" in result.stderr
    assert (tmp_path / "config.toml").read_text(encoding="utf-8") == "mine"
    assert (tmp_path / ".gitignore").read_text(encoding="utf-8") == "mine"


def test_init_in_a_git_repository_adds_to_its_gitignore_only_the_lines_it_lacks(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("__pycache__/\nbuild/", encoding="utf-8")
    result = newsletter("init", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Added 3 lines to .gitignore (.newsletter-secret, *.db*, outbox/)" in result.stdout
    lines = (tmp_path / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert lines[:2] == ["__pycache__/", "build/"]
    assert [line for line in lines if not line.startswith("#")].count("build/") == 1
    private = [".newsletter-secret", "subscribers.db", "build/first.html", "outbox/1.eml"]
    ignored = subprocess.run(
        ["git", "check-ignore", *private, "config.toml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert ignored == private
    assert first_issue(tmp_path).exists()


def test_templates_copy_takes_short_or_full_names_and_never_overwrites(tmp_path, run_cli):
    own = tmp_path / "templates"
    result = run_cli("templates", "copy", "news", "email", "blocks/section.mjml.j2")
    assert result.exit_code == 0, result.output
    assert template_names(own) == [
        "blocks/news.mjml.j2",
        "blocks/section.mjml.j2",
        "email.mjml.j2",
    ]
    (own / "email.mjml.j2").write_text("edited", encoding="utf-8")
    again = run_cli("templates", "copy")
    assert again.exit_code == 0, again.output
    assert template_names(own) == template_names(DEFAULT_TEMPLATES)
    assert (own / "email.mjml.j2").read_text(encoding="utf-8") == "edited"
    kept = [line for line in again.output.splitlines() if line.startswith("Kept")]
    assert len(kept) == 3 and f"Kept {own / 'email.mjml.j2'}: it exists" in again.output


def test_templates_copy_of_an_unknown_name_copies_nothing_and_lists_the_defaults(tmp_path, run_cli):
    result = run_cli("templates", "copy", "news", "newz")
    assert result.exit_code == 2
    assert "no default template 'newz'" in result.output
    assert "blocks/news.mjml.j2" in result.output
    assert not (tmp_path / "templates").exists()


def test_templates_list_shows_overridden_and_added_templates(tmp_path, run_cli):
    own = tmp_path / "templates"
    assert run_cli("templates", "copy", "news").exit_code == 0
    (own / "blocks" / "quote.mjml.j2").write_text("<mj-text>quote</mj-text>", encoding="utf-8")
    lines = run_cli("templates", "list").output.splitlines()
    assert lines[0] == f"Yours (searched first): {own}"
    rows = {line.split()[0]: " ".join(line.split()[1:]) for line in lines[2:]}
    assert rows["blocks/news.mjml.j2"] == "yours, overrides the default"
    assert rows["blocks/quote.mjml.j2"] == "yours"
    assert rows["email.mjml.j2"] == "default"
    assert len(rows) == len(template_names(DEFAULT_TEMPLATES)) + 1


def test_an_own_template_overrides_its_default_and_the_rest_stay_defaults(
    tmp_path, run_cli, write_issue
):
    assert run_cli("templates", "copy", "email").exit_code == 0
    email = tmp_path / "templates" / "email.mjml.j2"
    email.write_text(
        email.read_text(encoding="utf-8").replace("Thanks for reading", "Merci de nous lire"),
        encoding="utf-8",
    )
    issue = write_issue(
        '+++\ntitle = "T"\ndate = 2024-05-03\n+++\n\n## News {.news}\n\n- [A](https://a.example)\n'
    )
    assert run_cli("build", issue, "--out", tmp_path / "out").exit_code == 0
    html = (tmp_path / "out" / "issue.html").read_text(encoding="utf-8")
    assert "Merci de nous lire" in html and "Thanks for reading" not in html
    assert 'href="https://a.example"' in html  # the news block, from the defaults


def test_a_new_block_kind_is_one_file_in_the_newsletters_templates(
    tmp_path, config, run_cli, write_issue
):
    issue = write_issue('+++\ntitle = "T"\ndate = 2024-05-03\n+++\n\n## Said {.quote}\n\nHi.\n')
    missing = run_cli("build", issue, "--out", tmp_path / "out")
    assert missing.exit_code == 2
    assert "use one of big-story, news, section," in missing.output
    assert f"add {tmp_path / 'templates' / 'blocks' / 'quote.mjml.j2'}" in missing.output

    quote = tmp_path / "templates" / "blocks" / "quote.mjml.j2"
    quote.parent.mkdir(parents=True)
    quote.write_text(
        "<mj-section><mj-column><mj-text>Quoted: {{ block.body_html }}"
        "</mj-text></mj-column></mj-section>\n",
        encoding="utf-8",
    )
    assert block_kinds(config.newsletter.templates) == SHIPPED_KINDS | {"quote"}
    built = run_cli("build", issue, "--out", tmp_path / "out")
    assert built.exit_code == 0, built.output
    assert "Quoted: " in (tmp_path / "out" / "issue.html").read_text(encoding="utf-8")


def test_init_below_a_file_is_one_line_naming_the_path_not_a_traceback(tmp_path):
    (tmp_path / "afile").write_text("", encoding="utf-8")
    result = CliRunner().invoke(cli, ["init", str(tmp_path / "afile" / "sub")])
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [
        f"Error: cannot start a newsletter in {tmp_path / 'afile' / 'sub'}"
        f" (Not a directory: {tmp_path / 'afile' / 'sub'}); init a folder you can write to,"
        " not a file or a path through one"
    ]


def test_templates_copy_into_a_templates_setting_that_is_a_file_is_one_line(tmp_path, config_path):
    (tmp_path / "mine").write_text("", encoding="utf-8")
    text = config_path.read_text(encoding="utf-8")
    config_path.write_text(
        text.replace("[newsletter]\n", '[newsletter]\ntemplates = "mine"\n', 1), encoding="utf-8"
    )
    result = CliRunner().invoke(cli, ["templates", "copy", "news", "--config", str(config_path)])
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [
        f"Error: cannot copy blocks/news.mjml.j2 into {tmp_path / 'mine'} (Not a directory:"
        f" {tmp_path / 'mine' / 'blocks'}); point [newsletter] templates at a folder you can"
        " write to, not a file"
    ]


def test_an_unknown_value_in_a_block_template_names_its_file_line_and_the_block(
    tmp_path, run_cli, write_issue
):
    issue = write_issue(
        '+++\ntitle = "T"\ndate = 2024-05-03\n+++\n\n## News {.news}\n\n- [A](https://a.example)\n'
    )
    news = tmp_path / "templates" / "blocks" / "news.mjml.j2"
    news.parent.mkdir(parents=True)
    news.write_text(
        "<mj-section>\n<mj-column>\n<mj-text>{{ block.nosuch }}</mj-text>\n"
        "</mj-column>\n</mj-section>\n",
        encoding="utf-8",
    )
    result = run_cli("build", issue, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        f"Error: {news}:3: the template uses an unknown value: block has no 'nosuch'"
    ]


def test_an_unknown_name_in_the_email_template_names_its_file_and_line(
    tmp_path, run_cli, write_issue
):
    issue = write_issue('+++\ntitle = "T"\ndate = 2024-05-03\n+++\n\nHello.\n')
    assert run_cli("templates", "copy", "email").exit_code == 0
    email = tmp_path / "templates" / "email.mjml.j2"
    email.write_text("{{ x }}" + email.read_text(encoding="utf-8"), encoding="utf-8")
    result = run_cli("build", issue, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        f"Error: {email}:1: the template uses an unknown value: 'x' is undefined"
    ]
