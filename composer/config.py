"""Load and validate ``config.toml`` into a frozen :class:`Config`.

Every problem is collected with its section and key, then reported at once, one a
line, so an editor fixes the file in one pass instead of one error per run.
"""

from __future__ import annotations

import ipaddress
import math
import ssl
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from email.headerregistry import Address
from email.utils import parseaddr
from pathlib import Path
from typing import Any, Literal, get_args

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


@dataclass(frozen=True)
class SubscriberSettings:
    database: Path


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
    subscribe: SubscribeSettings


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
    },
    "subscribers": {
        "database": (str, "subscribers.db"),
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
    check(send["concurrency"] >= 1, "[send] concurrency must be at least 1")
    check(send["max_attempts"] >= 1, "[send] max_attempts must be at least 1")
    check(
        math.isfinite(send["rate_per_second"]) and send["rate_per_second"] >= 0,
        "[send] rate_per_second must be 0 (no limit) or a number of messages a second",
    )

    check(subscribe["per_ip_per_hour"] >= 1, "[subscribe] per_ip_per_hour must be at least 1")
    proxies = _networks(subscribe["trusted_proxies"], problems.append)

    if len(problems) == 1:
        raise ConfigError(f"{path}: {problems[0]}")
    if problems:
        raise ConfigError(
            f"{path}: {len(problems)} problems:" + "".join(f"\n  {p}" for p in problems)
        )

    assert sender is not None
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
        ),
        subscribers=SubscriberSettings(database=root / values["subscribers"]["database"]),
        subscribe=SubscribeSettings(
            double_opt_in=subscribe["double_opt_in"],
            trusted_proxies=proxies,
            welcome=root / subscribe["welcome"],
            per_ip_per_hour=subscribe["per_ip_per_hour"],
        ),
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
