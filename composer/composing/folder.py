"""``newsletter init``: a folder that is a working newsletter from its first minute.

It holds a commented ``config.toml`` whose every value works as it is (mail goes to
the built-in outbox, subscribers to ``subscribers.db``), a first issue under
``issues/``, the welcome message new readers get (``welcome.md``, a copy of
:data:`DEFAULT_WELCOME`) and a ``.gitignore`` for what must never be committed (in a
folder that has one already, such as a git repository, the lines it lacks are added).
The templates stay in the package until ``newsletter templates copy`` brings one over
for editing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from composer.composing.scaffold import issue_path, new_issue
from composer.config import DEFAULT_PATH, WELCOME_FILE
from composer.errors import NewsletterError

FIRST_ISSUE = "first-issue"
# The welcome message that ships with the tool: what a folder without its own sends.
DEFAULT_WELCOME = Path(__file__).with_name("welcome.md")

CONFIG_TEXT = """\
# This newsletter's settings (the `newsletter` tool's README says more).
# Every value works as it is: mail goes to the built-in outbox (`newsletter outbox`),
# so build, preview, send-test and send run before you have a mail account.
# Put in your own name, sender, web address and postal address before a real issue.

[newsletter]
name = "My Newsletter"                      # in the header, the footer and the From name
from = "My Newsletter <news@example.com>"   # the sender of every copy
# reply_to = "editor@example.com"           # where replies go, if not to `from`
# Where `newsletter serve` answers: web versions, signups, unsubscribe and manage links.
# Its forms accept posts from this origin only: to try serve in a browser on this
# machine, set it to "http://127.0.0.1:8000" for a while.
base_url = "https://news.example.com"
# unsubscribe_mailto = "unsubscribe@example.com"  # a second List-Unsubscribe target
address = "1 Example Street, Springfield"   # the postal address in every footer
test_recipients = ["editor@example.com"]    # who `newsletter send-test` sends to
lang = "en"                                 # the issues' language: quotes, <html lang>
# upgrade_url = "https://example.com/upgrade" # the paid-subscription page: an Upgrade button
# privacy_url = "https://example.com/privacy" # linked from every footer and page
# terms_url = "https://example.com/terms"
# share = false                             # no share links in the email and web version
# Your own templates, searched before the defaults file by file;
# `newsletter templates copy NAME` starts one from the default.
# templates = "templates"

[smtp]
# The built-in outbox; for real sends, your mail server with security
# "starttls" or "tls".
host = "127.0.0.1"
port = 1025
security = "none"                           # none | starttls | tls
username = ""
password_env = "NEWSLETTER_SMTP_PASSWORD"   # the password's variable, never this file
timeout = 30                                # seconds, for every SMTP step
# ca_file = "relay-ca.pem"                  # trust a private CA for this server

[send]
concurrency = 8                             # SMTP connections at once
rate_per_second = 0                         # 0 = no limit
max_attempts = 5                            # per reader, for temporary failures
# The reputation brake: a run pauses once the complaints or hard bounces recorded
# since it started pass these shares of the copies it delivered.
brake_complaints_percent = 0.3              # the rate Gmail and Yahoo ask senders to stay under
brake_bounces_percent = 5
brake_min_delivered = 1000                  # copies delivered before the brake judges a run

[subscribers]
database = "subscribers.db"                 # SQLite, created on first use

[subscribe]
# Readers sign up at base_url/subscribe (`newsletter serve`); `newsletter embed`
# prints a form for another site.
double_opt_in = true                        # a signup counts once its emailed link is used
welcome = "welcome.md"                      # the welcome message, written like an issue
per_ip_per_hour = 10                        # signups one client address may post an hour
# trusted_proxies = ["127.0.0.1"]           # your HTTPS proxy, whose X-Forwarded-For counts

[bounces]
# Mail that comes back, read by `newsletter bounces fetch`. With an address, each copy
# goes out from its own return path, bounces+<token>@…: deliver those to the mailbox
# that source names.
# address = "bounces@news.example.com"
# source = "maildir:bounces"                # or "imaps://user@mail.example.com/INBOX"
password_env = "NEWSLETTER_BOUNCES_PASSWORD"  # the IMAP password's variable, never this file
soft_limit = 3                              # soft bounces (different issues) that bounce a reader

[webhooks]
# Bounces and complaints your email service reports to `newsletter serve` at
# base_url/webhooks/<service>; each secret is read from the environment variable
# its *_env setting names (see the tool's docs/cli.md).
services = []                               # any of "ses", "postmark", "mailgun", "sendgrid"
# ses_topic_arn = "arn:aws:sns:us-east-1:123456789012:ses-feedback"  # needed with "ses"
"""

GITIGNORE_TEXT = """\
# The key that signs unsubscribe links: keep it, never publish it.
.newsletter-secret
# The subscriber list and its journal: personal data.
*.db*
# What `newsletter build` and `newsletter outbox` write.
build/
outbox/
"""


@dataclass(frozen=True)
class NewFolder:
    """The files ``newsletter init`` wrote; ``gitignore_added`` holds the patterns added to
    a ``.gitignore`` that was there already (``None`` when init created it)."""

    config: Path
    issue: Path
    welcome: Path
    gitignore: Path
    gitignore_added: tuple[str, ...] | None = None


def init_folder(directory: Path, *, today: dt.date | None = None) -> NewFolder:
    """Make ``directory`` a newsletter folder; raise :class:`NewsletterError` naming every
    file that is already there, before writing anything. A ``.gitignore`` already there
    is kept, with the lines it lacks added at its end."""
    date = today or dt.date.today()
    config = directory / DEFAULT_PATH
    gitignore = directory / ".gitignore"
    welcome = directory / WELCOME_FILE
    issue = issue_path(directory / "issues", FIRST_ISSUE, as_toml=False, date=date)
    existing = [path for path in (config, issue, welcome) if path.exists()]
    if existing:
        raise NewsletterError(
            f"not starting a newsletter in {directory.resolve()}:"
            f" {', '.join(str(path) for path in existing)} already there; nothing was written"
            " (move them away, or init another folder)"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with config.open("x", encoding="utf-8") as file:
            file.write(CONFIG_TEXT)
        with welcome.open("x", encoding="utf-8") as file:
            file.write(DEFAULT_WELCOME.read_text(encoding="utf-8"))
        added = _complete_gitignore(gitignore) if gitignore.exists() else None
        if added is None:
            with gitignore.open("x", encoding="utf-8") as file:
                file.write(GITIGNORE_TEXT)
        first = new_issue(directory / "issues", FIRST_ISSUE, today=date)
    except OSError as exc:  # a file where a folder must be, no permission, a full disk
        raise NewsletterError(
            f"cannot start a newsletter in {directory} ({exc.strerror or exc}:"
            f" {exc.filename or directory}); init a folder you can write to, not a file"
            " or a path through one"
        ) from exc
    return NewFolder(config, first, welcome, gitignore, added)


def _complete_gitignore(path: Path) -> tuple[str, ...]:
    """Append to the ``.gitignore`` at ``path`` the lines of :data:`GITIGNORE_TEXT` it
    lacks, each under its comment; return the patterns added."""
    text = path.read_text(encoding="utf-8")
    present = {line.strip() for line in text.splitlines()}
    appended: list[str] = []
    comment = ""
    added: list[str] = []
    for line in GITIGNORE_TEXT.splitlines():
        if line.startswith("#"):
            comment = line
        elif line not in present:
            if comment:
                appended.append(comment)
                comment = ""  # once, over the first pattern of its group that is missing
            appended.append(line)
            added.append(line)
    if added:
        separator = "\n" if text and not text.endswith("\n") else ""
        with path.open("a", encoding="utf-8") as file:
            file.write(separator + ("\n" if text else "") + "\n".join(appended) + "\n")
    return tuple(added)
