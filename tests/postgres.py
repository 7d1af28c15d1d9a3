"""A real PostgreSQL server for the tests: Debian's binaries started in a temporary
folder for the session (as an unprivileged user when the tests run as root, since
PostgreSQL refuses to run as root), or the server ``NEWSLETTER_TEST_POSTGRES`` names
(a URL whose user may create databases). Each test gets a fresh database of its own.

Logins go over TCP with a password (scram-sha-256), read from the environment variable
``[subscribers] password_env`` names, as a real deployment's are.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ENV = "NEWSLETTER_TEST_POSTGRES"
USER = "newsletter_test"
PASSWORD = "test-password-" + uuid.uuid4().hex[:8]


def find_binaries() -> Path | None:
    """The newest of Debian's PostgreSQL bin folders that has initdb, if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    return Path(found[-1]).parent if found else None


def _version(path: str) -> int:
    try:
        return int(Path(path).parent.parent.name)
    except ValueError:
        return 0


@dataclass
class PostgresServer:
    """A server the tests may create databases on: ``url`` has no database and no
    password; ``password`` is the login's."""

    url: str
    password: str

    def admin_url(self) -> str:
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        parts = urlsplit(self.url)
        return urlunsplit(("postgresql", parts.netloc, f"/{name}", parts.query, ""))

    def create_database(self) -> str:
        """A fresh empty database; returns its URL (no password in it)."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.admin_url(), password=self.password, autocommit=True) as db:
            db.execute(f"CREATE DATABASE {name}")
        return self.database_url(name)

    def drop_database(self, url: str) -> None:
        import psycopg

        name = urlsplit(url).path.strip("/")
        with psycopg.connect(self.admin_url(), password=self.password, autocommit=True) as db:
            db.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def from_environment() -> PostgresServer | None:
    """The server ``NEWSLETTER_TEST_POSTGRES`` names, its password taken out of the URL."""
    given = os.environ.get(ENV)
    if not given:
        return None
    parts = urlsplit(given)
    netloc = parts.netloc.rsplit("@", 1)
    login = netloc[0].split(":", 1) if len(netloc) == 2 else [""]
    host = netloc[-1]
    user = f"{login[0]}@" if login[0] else ""
    url = urlunsplit(("postgresql", f"{user}{host}", "", parts.query, ""))
    return PostgresServer(url=url, password=login[1] if len(login) == 2 else "")


class LocalServer:
    """``initdb`` into a temporary folder and ``pg_ctl start`` on a free loopback port."""

    def __init__(self, binaries: Path) -> None:
        self.binaries = binaries
        self.folder = Path(tempfile.mkdtemp(prefix="newsletter-pg-"))
        self.data = self.folder / "data"
        self.port = _free_port()
        # PostgreSQL will not run as root: as root, run it as the postgres user (or nobody).
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "postgres" if _user_exists("postgres") else "nobody"
            entry = pwd.getpwnam(self.user)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        subprocess.run(
            [*prefix, *command],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=self.folder,
        )

    def start(self, *, durable: bool = False) -> PostgresServer:
        """Create the cluster and start it; ``durable`` keeps PostgreSQL's own defaults
        for syncing to the disk (a benchmark's), else a test server's speed over safety."""
        password_file = self.folder / "password"
        password_file.write_text(PASSWORD)
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(password_file, entry.pw_uid, entry.pw_gid)
        self._run(
            str(self.binaries / "initdb"),
            "-D", str(self.data),
            "-U", USER,
            f"--pwfile={password_file}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E", "UTF8",
            "--locale=C.UTF-8",
        )  # fmt: skip
        options = f"-k {self.folder} -p {self.port} -c listen_addresses=127.0.0.1"
        if not durable:
            # A test server: speed over durability (each test creates a database).
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            str(self.binaries / "pg_ctl"),
            "-D", str(self.data),
            "-l", str(self.folder / "server.log"),
            "-o", options,
            "-w",
            "start",
        )  # fmt: skip
        return PostgresServer(url=f"postgresql://{USER}@127.0.0.1:{self.port}", password=PASSWORD)

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self._run(str(self.binaries / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)

    def log(self) -> str:
        try:
            return (self.folder / "server.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(server: PostgresServer, seconds: float = 30) -> None:
    """Until the server takes a login."""
    import psycopg

    deadline = time.monotonic() + seconds
    while True:
        try:
            with psycopg.connect(server.admin_url(), password=server.password, connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
