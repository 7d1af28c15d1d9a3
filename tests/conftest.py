"""Shared fixtures: a config in a temporary folder, issue files written on the fly, the CLI,
a real subscriber store (a SQLite file next to the config, or, for tests marked
``both_backends``, also a fresh database on a real PostgreSQL server), and a real SMTP
server to send to."""

from __future__ import annotations

import importlib.util
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from click.testing import CliRunner, Result
from playwright.sync_api import Browser, sync_playwright

from composer.cli import cli
from composer.config import DATABASE_PASSWORD_ENV, Config, load_config
from composer.sending.dispatch import DispatchSettings
from composer.store import NewSubscriber, SubscriberStore, open_store
from composer.web.serve import create_app
from tests.chromium import find_chromium, launch_chromium
from tests.postgres import LocalServer, PostgresServer, find_binaries, from_environment, wait_for
from tests.smtp_server import SmtpServer

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_MD = ROOT / "issues" / "2024-05-03-example.md"
EXAMPLE_TOML = ROOT / "issues" / "2024-05-03-example.toml"
# A second issue, unlike the example in its blocks and words (a table, an h4, a
# "What happened" after the paywall), for checks that must not fit one issue only.
SECOND_ISSUE = ROOT / "tests" / "fixtures" / "2024-06-14-second.md"

CONFIG_TEXT = """
[newsletter]
name = "China Boss News"
from = "China Boss News <news@example.com>"
reply_to = "editor@example.com"
base_url = "https://news.example.com"
unsubscribe_mailto = "unsubscribe@example.com"
address = "1 Example Street, Springfield"
test_recipients = ["editor@example.com"]

[subscribers]
database = "subscribers.db"
"""


BACKENDS = ("sqlite", "postgresql")
# On a test that takes the store: run it against each backend.
both_backends = pytest.mark.parametrize("backend", BACKENDS, indirect=True)
# Why the PostgreSQL tests could not run, for the summary at the end.
POSTGRES_SKIPPED: list[str] = []


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the session (tests/postgres.py), or a skip saying why."""
    server = from_environment()
    local = None
    if server is None:
        binaries = find_binaries()
        reason = ""
        if binaries is None:
            reason = "no /usr/lib/postgresql/*/bin/initdb (apt-get install postgresql)"
        elif importlib.util.find_spec("psycopg") is None:
            reason = "psycopg is not installed (pip install -e '.[dev]')"
        if reason:
            POSTGRES_SKIPPED.append(reason)
            pytest.skip(reason)
        assert binaries is not None
        local = LocalServer(binaries)
        try:
            server = local.start()
        except subprocess.CalledProcessError as exc:
            local.stop()
            reason = f"PostgreSQL did not start: {exc.stderr.strip() or exc}"
            POSTGRES_SKIPPED.append(reason)
            pytest.skip(reason)
    wait_for(server)
    yield server
    if local is not None:
        local.stop()


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The store the test's config names: sqlite unless the test is ``both_backends``."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def database_setting(
    backend: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """``[subscribers] database`` for the test's backend: a file next to the config, or a
    fresh database on the test server (its password in the environment, as in use)."""
    if backend == "sqlite":
        yield "subscribers.db"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.create_database()
    monkeypatch.setenv(DATABASE_PASSWORD_ENV, server.password)
    yield url
    from composer.store.postgresql.database import POOLS

    POOLS.close()
    server.drop_database(url)


def config_text(database: str) -> str:
    """The test config with ``[subscribers] database`` set to ``database``."""
    return CONFIG_TEXT.replace('database = "subscribers.db"', f'database = "{database}"')


@pytest.fixture
def config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_setting: str) -> Path:
    # The unsubscribe secret comes from the key file next to config.toml unless a test
    # sets NEWSLETTER_SECRET itself.
    monkeypatch.delenv("NEWSLETTER_SECRET", raising=False)
    path = tmp_path / "config.toml"
    path.write_text(config_text(database_setting), encoding="utf-8")
    return path


@pytest.fixture
def config(config_path: Path) -> Config:
    return load_config(config_path)


@pytest.fixture(scope="module")
def module_config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """The same config for a module's shared fixtures, in a folder of its own."""
    path = tmp_path_factory.mktemp("config") / "config.toml"
    path.write_text(CONFIG_TEXT, encoding="utf-8")
    return load_config(path)


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


def published_copy(source: Path, folder: Path) -> Path:
    """A copy of the Markdown issue ``source`` in ``folder`` marked ``published = true``:
    on serve's web without being sent."""
    folder.mkdir(exist_ok=True)
    text = source.read_text(encoding="utf-8").replace("+++\n", "+++\npublished = true\n", 1)
    path = folder / source.name
    path.write_text(text, encoding="utf-8")
    return path


def invoke(config_path: Path, *args: str | Path) -> Result:
    """Run ``newsletter ARGS… --config CONFIG_PATH`` in-process."""
    return CliRunner().invoke(cli, [*map(str, args), "--config", str(config_path)])


@pytest.fixture
def run_cli(config_path: Path) -> Callable[..., Result]:
    """Run ``newsletter ARGS… --config <the test config>`` in-process."""

    def run(*args: str | Path) -> Result:
        return invoke(config_path, *args)

    return run


def newsletter_command(*args: str | Path, config_path: Path | None = None) -> list[str]:
    """The real command line for ``newsletter ARGS…`` (with ``--config`` if given)."""
    config = [] if config_path is None else ["--config", str(config_path)]
    return [sys.executable, "-m", "composer", *map(str, args), *config]


def newsletter(
    *args: str | Path, config_path: Path | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """Run the real command in ``cwd`` to its end, its output captured."""
    return subprocess.run(
        newsletter_command(*args, config_path=config_path),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def modules_after_import(*modules: str) -> set[str]:
    """Every module a fresh interpreter holds once it has imported ``modules``."""
    code = f"import sys, {', '.join(modules)}; print(' '.join(sys.modules))"
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return set(output.split())


def subscribe(config_path: Path, count: int) -> list[str]:
    """``count`` subscribers reader<n>@example.org, every third paid; returns addresses."""
    config = load_config(config_path)
    addresses = [f"reader{n}@example.org" for n in range(count)]
    with open_store(config.subscribers) as store:
        store.import_many(
            NewSubscriber(
                email=address,
                key=address,
                name=f"Reader {n}",
                tier="paid" if n % 3 == 0 else "free",
            )
            for n, address in enumerate(addresses)
        )
    return addresses


def fast(config_path: Path, **overrides) -> DispatchSettings:
    """Dispatch settings for the config at ``config_path``, retrying within milliseconds."""
    config = load_config(config_path)
    values = dict(
        sender=config.newsletter.sender.addr_spec,
        concurrency=2,
        max_attempts=3,
        retry_base=0.01,
        retry_cap=0.05,
    )
    values.update(overrides)
    return DispatchSettings(**values)


@pytest.fixture
def store(config: Config) -> Iterator[SubscriberStore]:
    """The subscriber store the test config names, created empty in tmp_path."""
    with open_store(config.subscribers) as opened:
        yield opened


def write_csv(path: Path, text: str) -> Path:
    """Write a subscriber CSV and return its path."""
    path.write_text(text, encoding="utf-8")
    return path


SECRET = "s" * 40


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpServer]:
    """The aiosmtpd test server on a free loopback port, storing under tmp_path/received."""
    server = SmtpServer(tmp_path / "received")
    yield server
    server.close()


@pytest.fixture
def send_config(
    tmp_path: Path, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch, database_setting: str
) -> Path:
    """The test config with [smtp] pointing at ``smtp``, and a signing secret set."""
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    path = tmp_path / "config.toml"
    path.write_text(
        config_text(database_setting)
        + f"""
[smtp]
host = "127.0.0.1"
port = {smtp.port}
timeout = 0.5

[send]
concurrency = 2
max_attempts = 3
""",
        encoding="utf-8",
    )
    return path


def with_settings(config_path: Path, section: str, **values: object) -> Path:
    """Rewrite keys of ``[section]`` in the config at ``config_path`` (values as TOML),
    adding the section at the end when it is missing."""
    lines = config_path.read_text(encoding="utf-8").splitlines()
    if f"[{section}]" not in lines:
        lines += ["", f"[{section}]"]
    start = lines.index(f"[{section}]") + 1
    kept = [line for n, line in enumerate(lines) if n < start or line.split(" = ")[0] not in values]
    kept[start:start] = [f"{key} = {value}" for key, value in values.items()]
    config_path.write_text("\n".join(kept) + "\n", encoding="utf-8")
    return config_path


def start_in_thread(server: uvicorn.Server, **run: object) -> tuple[threading.Thread, int]:
    """Run a uvicorn server in a daemon thread; return it and its port once listening."""
    thread = threading.Thread(target=server.run, kwargs=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    return thread, server.servers[0].sockets[0].getsockname()[1]


@pytest.fixture
def server(config: Config) -> Iterator[httpx.Client]:
    """`newsletter serve` on a free loopback port, with an httpx client pointed at it."""
    with serving(config) as client:
        yield client


@contextmanager
def serving(config: Config) -> Iterator[httpx.Client]:
    """`newsletter serve` of ``config`` on a free loopback port, with an httpx client
    pointed at it, until the block ends."""
    app = create_app(config)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    thread, port = start_in_thread(server)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", follow_redirects=False) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's headless chromium, offline (see tests/chromium.py)."""
    chromium = find_chromium()
    assert chromium, "Debian's chromium is needed (apt-get install chromium; .ci/run does it)"
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright, chromium)
        yield browser
        browser.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say loudly, at the end, that the PostgreSQL backend was not tested, and why."""
    if POSTGRES_SKIPPED:
        terminalreporter.write_sep(
            "!", f"PostgreSQL NOT TESTED: {POSTGRES_SKIPPED[0]}", red=True, bold=True
        )


def raw_sql(store: SubscriberStore, sql: str, params: tuple[object, ...] = ()) -> list[tuple]:
    """Run one statement (``?`` marks its parameters) on the database behind ``store``,
    on a connection of its own, committed; its rows. For what only raw SQL can check
    or set up, whichever the backend."""
    from composer.store.sqlite import SqliteSubscriberStore

    if isinstance(store, SqliteSubscriberStore):
        db = sqlite3.connect(store.path, isolation_level=None)
        try:
            return db.execute(sql, params).fetchall()
        finally:
            db.close()
    import psycopg

    password = os.environ.get(DATABASE_PASSWORD_ENV)
    with psycopg.connect(store.url, password=password, autocommit=True) as pg:
        cursor = pg.execute(sql.replace("?", "%s"), params)
        return cursor.fetchall() if cursor.description else []


def integrity_error(store: SubscriberStore) -> type[Exception]:
    """What :func:`raw_sql` raises on ``store`` when a statement breaks a constraint."""
    from composer.store.sqlite import SqliteSubscriberStore

    if isinstance(store, SqliteSubscriberStore):
        return sqlite3.IntegrityError
    import psycopg

    return psycopg.IntegrityError
