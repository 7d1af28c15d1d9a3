"""Load and validate ``config.toml`` into a frozen :class:`Config`.

Every problem is collected with its section and key, then reported at once, one a
line, so an editor fixes the file in one pass instead of one error per run.
"""

from __future__ import annotations

import ipaddress
import math
import re
import ssl
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from email.headerregistry import Address
from email.utils import parseaddr
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from composer.errors import ConfigError
from composer.model import LANGUAGE_TAG

DEFAULT_PATH = Path("config.toml")
# The newsletter's own templates, next to config.toml unless [newsletter] templates says
# otherwise; a file there overrides the default of the same name.
TEMPLATES_FOLDER = "templates"
DEFAULT_LANG = "en"
# How the connection to [smtp] host is secured.
Security = Literal["none", "starttls", "tls"]
SECURITY_MODES: tuple[Security, ...] = get_args(Security)
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# The editor's welcome message, next to config.toml unless [subscribe] welcome says otherwise.
WELCOME_FILE = "welcome.md"


@dataclass(frozen=True)
class NewsletterSettings:
    name: str
    sender: Address
    reply_to: Address | None
    base_url: str
    unsubscribe_mailto: str
    address: str
    test_recipients: tuple[str, ...]
    templates: Path  # the newsletter's own templates folder; it need not exist
    lang: str  # the language of its issues, unless an issue says otherwise
    upgrade_url: str = ""  # the paid-subscription page; empty: no Upgrade button
    privacy_url: str = ""  # linked from every footer when set
    terms_url: str = ""
    share: bool = True  # share links in the email and on the web version


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    security: Security
    username: str
    password_env: str
    timeout: float
    ca_file: Path | None = None  # trusted instead of the system's CAs when set
    allow_insecure_auth: bool = False  # a login in clear to a server off this machine


@dataclass(frozen=True)
class SendSettings:
    concurrency: int
    rate_per_second: float
    max_attempts: int
    # The reputation brake (composer.sending.brake): a run pauses when, once it has
    # delivered brake_min_delivered copies, the complaints or hard bounces recorded
    # since it started pass these shares of them.
    brake_complaints_percent: float = 0.3
    brake_bounces_percent: float = 5.0
    brake_min_delivered: int = 1000
    # On a PostgreSQL list, how long a worker's claimed recipients stay its own after its
    # last heartbeat (a worker whose process ends loses them at once).
    lease_seconds: float = 30.0


# The schemes of a [subscribers] database that names a PostgreSQL server, not a file.
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
DATABASE_PASSWORD_ENV = "NEWSLETTER_DATABASE_PASSWORD"


@dataclass(frozen=True)
class SubscriberSettings:
    """Where the list lives: a SQLite file (``database``), or a PostgreSQL server (``url``,
    without a password; it is read from the environment variable ``password_env``)."""

    database: Path | None  # None: the list is on the server at ``url``
    # Where `serve` queues the unsubscribes a busy database cannot take at once.
    unsubscribe_queue: Path
    url: str = ""
    password_env: str = DATABASE_PASSWORD_ENV

    @property
    def name(self) -> str:
        """How messages name the list: the file, or the server's URL (never a password)."""
        return self.url or str(self.database)


# Where bounce reports are read from: an IMAP folder (over TLS, or STARTTLS) or a Maildir.
MailboxScheme = Literal["imaps", "imap", "maildir"]


@dataclass(frozen=True)
class BounceMailbox:
    """``[bounces] source`` read: ``imaps://user@host[:port]/FOLDER``,
    ``imap://…`` (STARTTLS) or ``maildir:/path`` (``path`` set, the rest empty)."""

    scheme: MailboxScheme
    host: str = ""
    port: int = 0
    user: str = ""
    folder: str = "INBOX"
    path: Path | None = None

    def __str__(self) -> str:
        if self.path is not None:
            return f"maildir:{self.path}"
        return f"{self.scheme}://{self.user}@{self.host}:{self.port}/{self.folder}"


@dataclass(frozen=True)
class BounceSettings:
    address: str  # the VERP base address ("" : copies go out from [newsletter] from)
    mailbox: BounceMailbox | None  # where `bounces fetch` reads (None: not set)
    password_env: str
    ca_file: Path | None
    poll_seconds: float
    soft_limit: int


# The services whose webhooks ``serve`` can answer, each at /webhooks/<service>.
WebhookService = Literal["ses", "postmark", "mailgun", "sendgrid"]
WEBHOOK_SERVICES: tuple[WebhookService, ...] = get_args(WebhookService)
# An SNS topic's ARN (aws, aws-cn, aws-us-gov partitions).
_TOPIC_ARN = re.compile(r"arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_.-]{1,256}")


@dataclass(frozen=True)
class WebhookSettings:
    """``[webhooks]``: which services' webhooks ``serve`` answers, and the names of the
    environment variables holding their secrets (never the secrets themselves)."""

    services: tuple[WebhookService, ...] = ()
    max_age: float = 300.0  # seconds a signed timestamp stays good
    ses_topic_arn: str = ""
    postmark_username: str = "postmark"
    postmark_password_env: str = "NEWSLETTER_POSTMARK_PASSWORD"
    mailgun_signing_key_env: str = "NEWSLETTER_MAILGUN_SIGNING_KEY"
    sendgrid_public_key_env: str = "NEWSLETTER_SENDGRID_PUBLIC_KEY"


@dataclass(frozen=True)
class SubscribeSettings:
    """How readers sign themselves up on ``newsletter serve``."""

    double_opt_in: bool  # a signup is active only once its confirmation link is used
    # Proxies whose X-Forwarded-For names the client; any other peer is the client itself.
    trusted_proxies: tuple[IpNetwork, ...]
    welcome: Path  # the welcome message, an issue file; the shipped one when it is missing
    per_ip_per_hour: int  # signup posts one client address may make in an hour


@dataclass(frozen=True)
class Config:
    path: Path
    newsletter: NewsletterSettings
    smtp: SmtpSettings
    send: SendSettings
    subscribers: SubscriberSettings
    bounces: BounceSettings
    subscribe: SubscribeSettings
    webhooks: WebhookSettings = WebhookSettings()


_REQUIRED = object()

# section -> key -> (expected type, default); _REQUIRED marks a key with no default.
_SCHEMA: dict[str, dict[str, tuple[type | tuple[type, ...], Any]]] = {
    "newsletter": {
        "name": (str, _REQUIRED),
        "from": (str, _REQUIRED),
        "reply_to": (str, ""),
        "base_url": (str, _REQUIRED),
        "unsubscribe_mailto": (str, ""),
        "address": (str, ""),
        "test_recipients": (list, []),
        "templates": (str, ""),
        "lang": (str, DEFAULT_LANG),
        "upgrade_url": (str, ""),
        "privacy_url": (str, ""),
        "terms_url": (str, ""),
        "share": (bool, True),
    },
    "smtp": {
        "host": (str, "127.0.0.1"),
        "port": (int, 1025),
        "security": (str, "none"),
        "username": (str, ""),
        "password_env": (str, "NEWSLETTER_SMTP_PASSWORD"),
        "timeout": ((int, float), 30),
        "ca_file": (str, ""),
        "allow_insecure_auth": (bool, False),
    },
    "send": {
        "concurrency": (int, 8),
        "rate_per_second": ((int, float), 0),
        "max_attempts": (int, 5),
        "brake_complaints_percent": ((int, float), 0.3),
        "brake_bounces_percent": ((int, float), 5),
        "brake_min_delivered": (int, 1000),
        "lease_seconds": ((int, float), 30),
    },
    "subscribers": {
        "database": (str, "subscribers.db"),
        "password_env": (str, DATABASE_PASSWORD_ENV),
    },
    "bounces": {
        "address": (str, ""),
        "source": (str, ""),
        "password_env": (str, "NEWSLETTER_BOUNCES_PASSWORD"),
        "ca_file": (str, ""),
        "poll_seconds": ((int, float), 60),
        "soft_limit": (int, 3),
    },
    "webhooks": {
        "services": (list, []),
        "max_age": ((int, float), 300),
        "ses_topic_arn": (str, ""),
        "postmark_username": (str, "postmark"),
        "postmark_password_env": (str, "NEWSLETTER_POSTMARK_PASSWORD"),
        "mailgun_signing_key_env": (str, "NEWSLETTER_MAILGUN_SIGNING_KEY"),
        "sendgrid_public_key_env": (str, "NEWSLETTER_SENDGRID_PUBLIC_KEY"),
    },
    "subscribe": {
        "double_opt_in": (bool, True),
        "trusted_proxies": (list, []),
        "welcome": (str, WELCOME_FILE),
        "per_ip_per_hour": (int, 10),
    },
}


def load_config(path: Path = DEFAULT_PATH) -> Config:
    """Read ``path`` and return the validated configuration, or raise :class:`ConfigError`."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{path}: no such config file; run from the newsletter's folder or pass --config PATH"
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text; save it as UTF-8") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return _validate(path, raw)


def _validate(path: Path, raw: dict[str, Any]) -> Config:
    problems: list[str] = []
    values: dict[str, dict[str, Any]] = {}
    for section in raw:
        if section not in _SCHEMA:
            problems.append(f"unknown section [{section}]")
    for section, keys in _SCHEMA.items():
        given = raw.get(section, {})
        if not isinstance(given, dict):
            problems.append(f"[{section}] must be a table")
            given = {}
        values[section] = {}
        for key in given:
            if key not in keys:
                problems.append(f"[{section}] unknown key {key!r}")
        for key, (kind, default) in keys.items():
            if key not in given:
                if default is _REQUIRED:
                    problems.append(f"[{section}] {key} is required")
                values[section][key] = None if default is _REQUIRED else default
                continue
            value = given[key]
            if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
                problems.append(f"[{section}] {key} has the wrong type ({type(value).__name__})")
                # The checks below see what a missing key gives, not a value they trip on.
                value = None if default is _REQUIRED else default
            values[section][key] = value

    root = path.resolve().parent
    newsletter = values["newsletter"]
    smtp = values["smtp"]
    send = values["send"]
    bounces = values["bounces"]
    subscribe = values["subscribe"]

    def check(ok: bool, problem: str) -> None:
        if not ok:
            problems.append(problem)

    sender = _address(newsletter["from"], "[newsletter] from", problems.append)
    reply_to = (
        _address(newsletter["reply_to"], "[newsletter] reply_to", problems.append)
        if newsletter["reply_to"]
        else None
    )
    base_url = newsletter["base_url"] or ""
    check(
        newsletter["base_url"] is None or base_url.startswith(("https://", "http://")),
        "[newsletter] base_url must start with https:// (or http:// for a local server)",
    )
    mailto = newsletter["unsubscribe_mailto"] or ""
    check(
        not mailto or (mailto.count("@") == 1 and not any(c in mailto for c in " \r\n<>,?:")),
        "[newsletter] unsubscribe_mailto must be a bare address such as unsubscribe@example.com",
    )
    check(
        LANGUAGE_TAG.match(newsletter["lang"]) is not None,
        '[newsletter] lang must be a language tag such as "en" or "de-CH"',
    )
    for key in ("upgrade_url", "privacy_url", "terms_url"):
        check(
            not newsletter[key] or _is_https_url(newsletter[key]),
            f"[newsletter] {key} must be an https:// URL such as https://example.com/{key[:-4]},"
            f" not {newsletter[key]!r}",
        )
    recipients = newsletter["test_recipients"] or []
    check(
        all(isinstance(r, str) and "@" in r for r in recipients),
        "[newsletter] test_recipients must be a list of email addresses",
    )
    check(
        smtp["security"] in SECURITY_MODES,
        f"[smtp] security must be one of {', '.join(SECURITY_MODES)}",
    )
    check(isinstance(smtp["port"], int) and 0 < smtp["port"] < 65536, "[smtp] port out of range")
    check(
        not login_in_clear(
            smtp["host"], smtp["security"], smtp["username"], smtp["allow_insecure_auth"]
        ),
        LOGIN_IN_CLEAR.format(host=smtp["host"]),
    )
    ca_file = root / smtp["ca_file"] if smtp["ca_file"] else None
    if ca_file is not None:
        check(
            _loads_certificates(ca_file),
            f"[smtp] ca_file {ca_file} is not a readable file of PEM certificates",
        )
    # TOML has nan and inf; a timeout of 0, nan or inf would never give up, or never wait.
    check(
        math.isfinite(smtp["timeout"]) and smtp["timeout"] > 0,
        "[smtp] timeout must be a number of seconds above 0, such as 30",
    )
    subscribers = subscriber_settings(
        values["subscribers"]["database"], root, values["subscribers"]["password_env"]
    )
    if isinstance(subscribers, str):
        problems.append(f"[subscribers] database {subscribers}")
    check(send["concurrency"] >= 1, "[send] concurrency must be at least 1")
    check(send["max_attempts"] >= 1, "[send] max_attempts must be at least 1")
    check(
        math.isfinite(send["rate_per_second"]) and send["rate_per_second"] >= 0,
        "[send] rate_per_second must be 0 (no limit) or a number of messages a second",
    )

    bounce_address = bounces["address"]
    check(
        not bounce_address
        or (
            bounce_address.count("@") == 1
            and "+" not in bounce_address
            and bounce_address.isascii()
            and not any(c in bounce_address for c in ' \t\r\n<>,;:"()[]\\')
            and all(bounce_address.split("@"))
        ),
        "[bounces] address must be a bare ASCII address without a +, such as"
        " bounces@news.example.com (each copy's return path adds +TOKEN to it)",
    )
    mailbox = _mailbox(bounces["source"], root, problems.append)
    bounce_ca = root / bounces["ca_file"] if bounces["ca_file"] else None
    if bounce_ca is not None:
        check(
            _loads_certificates(bounce_ca),
            f"[bounces] ca_file {bounce_ca} is not a readable file of PEM certificates",
        )
    check(
        math.isfinite(bounces["poll_seconds"]) and bounces["poll_seconds"] > 0,
        "[bounces] poll_seconds must be a number of seconds above 0, such as 60",
    )
    check(bounces["soft_limit"] >= 1, "[bounces] soft_limit must be at least 1")
    for key in ("brake_complaints_percent", "brake_bounces_percent"):
        check(
            math.isfinite(send[key]) and 0 <= send[key] <= 100,
            f"[send] {key} must be a percentage from 0 to 100",
        )
    check(send["brake_min_delivered"] >= 1, "[send] brake_min_delivered must be at least 1")
    check(
        math.isfinite(send["lease_seconds"]) and send["lease_seconds"] >= 1,
        "[send] lease_seconds must be at least 1",
    )
    webhooks = values["webhooks"]
    services = webhooks["services"]
    check(
        all(service in WEBHOOK_SERVICES for service in services),
        f"[webhooks] services may list {', '.join(WEBHOOK_SERVICES)}, not {services!r}",
    )
    check(
        "ses" not in services or _TOPIC_ARN.fullmatch(webhooks["ses_topic_arn"]) is not None,
        "[webhooks] ses_topic_arn must be the ARN of the SNS topic SES reports to (such as"
        ' "arn:aws:sns:us-east-1:123456789012:ses-feedback") when services lists ses',
    )
    check(
        math.isfinite(webhooks["max_age"]) and webhooks["max_age"] > 0,
        "[webhooks] max_age must be a number of seconds above 0, such as 300",
    )
    check(subscribe["per_ip_per_hour"] >= 1, "[subscribe] per_ip_per_hour must be at least 1")
    proxies = _networks(subscribe["trusted_proxies"], problems.append)

    if len(problems) == 1:
        raise ConfigError(f"{path}: {problems[0]}")
    if problems:
        raise ConfigError(
            f"{path}: {len(problems)} problems:" + "".join(f"\n  {p}" for p in problems)
        )

    assert sender is not None and not isinstance(subscribers, str)
    return Config(
        path=path,
        newsletter=NewsletterSettings(
            name=newsletter["name"],
            sender=sender,
            reply_to=reply_to,
            base_url=base_url.rstrip("/"),
            unsubscribe_mailto=mailto,
            address=newsletter["address"],
            test_recipients=tuple(recipients),
            templates=root / (newsletter["templates"] or TEMPLATES_FOLDER),
            lang=newsletter["lang"],
            upgrade_url=newsletter["upgrade_url"],
            privacy_url=newsletter["privacy_url"],
            terms_url=newsletter["terms_url"],
            share=newsletter["share"],
        ),
        smtp=SmtpSettings(
            host=smtp["host"],
            port=smtp["port"],
            security=smtp["security"],
            username=smtp["username"],
            password_env=smtp["password_env"],
            timeout=float(smtp["timeout"]),
            ca_file=ca_file,
            allow_insecure_auth=smtp["allow_insecure_auth"],
        ),
        send=SendSettings(
            concurrency=send["concurrency"],
            rate_per_second=float(send["rate_per_second"]),
            max_attempts=send["max_attempts"],
            brake_complaints_percent=float(send["brake_complaints_percent"]),
            brake_bounces_percent=float(send["brake_bounces_percent"]),
            brake_min_delivered=send["brake_min_delivered"],
            lease_seconds=float(send["lease_seconds"]),
        ),
        subscribers=subscribers,
        bounces=BounceSettings(
            address=bounce_address,
            mailbox=mailbox,
            password_env=bounces["password_env"],
            ca_file=bounce_ca,
            poll_seconds=float(bounces["poll_seconds"]),
            soft_limit=bounces["soft_limit"],
        ),
        webhooks=WebhookSettings(
            services=tuple(dict.fromkeys(services)),
            max_age=float(webhooks["max_age"]),
            ses_topic_arn=webhooks["ses_topic_arn"],
            postmark_username=webhooks["postmark_username"],
            postmark_password_env=webhooks["postmark_password_env"],
            mailgun_signing_key_env=webhooks["mailgun_signing_key_env"],
            sendgrid_public_key_env=webhooks["sendgrid_public_key_env"],
        ),
        subscribe=SubscribeSettings(
            double_opt_in=subscribe["double_opt_in"],
            trusted_proxies=proxies,
            welcome=root / subscribe["welcome"],
            per_ip_per_hour=subscribe["per_ip_per_hour"],
        ),
    )


def subscriber_settings(
    database: str, root: Path, password_env: str = DATABASE_PASSWORD_ENV
) -> SubscriberSettings | str:
    """The settings for ``database``, a SQLite file relative to ``root`` or a
    ``postgresql://`` URL (its ``sslrootcert`` relative to ``root`` too); else what is
    wrong with it, as the end of a sentence."""
    if not database.startswith(POSTGRES_SCHEMES):
        path = root / database
        return SubscriberSettings(
            database=path, unsubscribe_queue=path.with_name(path.name + ".unsubscribes")
        )
    url = urlsplit(database)
    try:
        port, password = url.port, url.password
    except ValueError:
        return f"has a port that is not a number: {url.netloc!r}"
    if password is not None:
        return (
            "holds a password: take it out of the URL and set it in the environment"
            f" variable {password_env} ([subscribers] password_env) instead"
        )
    if not url.hostname or not url.path.strip("/"):
        return (
            "must name a server and a database, such as postgresql://newsletter@db.example.com/news"
        )
    query = [
        (name, str(root / value) if name == "sslrootcert" and value != "system" else value)
        for name, value in parse_qsl(url.query, keep_blank_values=True)
    ]
    host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
    netloc = f"{url.username}@" if url.username else ""
    netloc += host if port is None else f"{host}:{port}"
    # The queue of unsubscribes a busy server could not take at once lives beside the
    # config: the folder serve runs in.
    queue = root / f"{url.path.strip('/')}@{url.hostname}.unsubscribes"
    return SubscriberSettings(
        database=None,
        url=urlunsplit(("postgresql", netloc, url.path, urlencode(query), "")),
        password_env=password_env,
        unsubscribe_queue=queue,
    )


LOGIN_IN_CLEAR = (
    '[smtp] username is set and security is "none": the password would cross the'
    ' network to {host} in clear; set security = "starttls" or "tls"'
    " (or allow_insecure_auth = true on a network you trust)"
)


def login_in_clear(host: str, security: str, username: str, allow_insecure_auth: bool) -> bool:
    """Whether logging in would send the password unencrypted to a server off this
    machine, without ``allow_insecure_auth`` saying that network is trusted."""
    return (
        security == "none" and bool(username) and not is_loopback(host) and not allow_insecure_auth
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine: ``localhost`` or a loopback address."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: it may resolve anywhere
        return False


def _is_https_url(value: str) -> bool:
    """Whether ``value`` is an absolute https URL with a host and nothing a link or a
    header could be broken by (spaces, quotes, angle brackets, control characters)."""
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:  # a malformed host, such as an unclosed [
        return False
    plain = not any(c.isspace() or c in '"<>\\' or ord(c) < 32 for c in value)
    return parts.scheme == "https" and bool(host) and plain


def _networks(values: list[Any], report: Callable[[str], None]) -> tuple[IpNetwork, ...]:
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value))
        except (TypeError, ValueError):
            report(
                f"[subscribe] trusted_proxies has {value!r}, not an address or network;"
                ' write "127.0.0.1" or "10.0.0.0/8"'
            )
    return tuple(networks)


def _loads_certificates(path: Path) -> bool:
    try:
        ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError):  # missing, unreadable, or no certificate in it
        return False
    return True


_MAILBOX_FORMS = (
    '[bounces] source must be "imaps://USER@HOST[:PORT]/FOLDER",'
    ' "imap://USER@HOST[:PORT]/FOLDER" (STARTTLS) or "maildir:/path/to/Maildir"'
)


def _mailbox(value: str, root: Path, report: Callable[[str], None]) -> BounceMailbox | None:
    """``[bounces] source`` read, or None when it is empty (or wrong: reported)."""
    if not value:
        return None
    if value.startswith("maildir:"):
        folder = value.removeprefix("maildir:")
        if not folder:
            report(_MAILBOX_FORMS)
            return None
        return BounceMailbox(scheme="maildir", path=root / folder)
    parts = urlsplit(value)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = -1
    if scheme not in ("imaps", "imap") or not parts.hostname or not parts.username or port == -1:
        report(f"{_MAILBOX_FORMS}, not {value!r}")
        return None
    if parts.password:
        report(
            "[bounces] source must not hold the password; put it in the environment"
            " variable [bounces] password_env names"
        )
        return None
    return BounceMailbox(
        scheme="imaps" if scheme == "imaps" else "imap",
        host=parts.hostname,
        port=port or (993 if scheme == "imaps" else 143),
        user=unquote(parts.username),
        folder=unquote(parts.path.lstrip("/")) or "INBOX",
    )


def _address(value: str | None, where: str, report: Callable[[str], None]) -> Address | None:
    if not value:
        return None
    display, addr = parseaddr(value)
    if "@" not in addr or any(c in value for c in "\r\n"):
        report(f"{where} is not an email address: {value!r}")
        return None
    username, domain = addr.rsplit("@", 1)
    if not username.isascii():
        report(
            f"{where} needs a plain ASCII name before the @ (every server can take it): {value!r}"
        )
        return None
    if not domain.isascii():
        # Headers, the envelope and Message-IDs carry the domain's ASCII (punycode) form,
        # by the rules readers' addresses are checked with.
        from email_validator import EmailNotValidError, validate_email

        try:
            domain = validate_email(addr, check_deliverability=False).ascii_domain
        except EmailNotValidError as exc:
            report(f"{where} is not an email address: {value!r} ({exc})")
            return None
    return Address(display_name=display, username=username, domain=domain)
