"""Shared fixtures: a config in a temporary folder, issue files written on the fly, the CLI,
a real SQLite subscriber store next to the config, and a real SMTP server to send to."""

from __future__ import annotations

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
from composer.config import Config, load_config
from composer.sending.dispatch import DispatchSettings
from composer.store import NewSubscriber, SubscriberStore, open_store
from composer.web.serve import create_app
from tests.chromium import find_chromium, launch_chromium
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


@pytest.fixture
def config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # The unsubscribe secret comes from the key file next to config.toml unless a test
    # sets NEWSLETTER_SECRET itself.
    monkeypatch.delenv("NEWSLETTER_SECRET", raising=False)
    path = tmp_path / "config.toml"
    path.write_text(CONFIG_TEXT, encoding="utf-8")
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
def send_config(tmp_path: Path, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test config with [smtp] pointing at ``smtp``, and a signing secret set."""
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    path = tmp_path / "config.toml"
    path.write_text(
        CONFIG_TEXT
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
