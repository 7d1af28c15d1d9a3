"""Benchmark `send`: the example issue to generated subscribers through Postfix's smtp-sink,
against Postfix's own smtp-source (10 sessions, same message size) as the ceiling.

    .venv/bin/python bench/dispatch.py                           # 20,000 subscribers
    .venv/bin/python bench/dispatch.py --subscribers 20000 200000 --concurrency 10
    .venv/bin/python bench/dispatch.py --verp                   # each copy its own return path
    .venv/bin/python bench/dispatch.py --store sqlite postgresql     # the same on each store
    .venv/bin/python bench/dispatch.py --store postgresql --workers 1 2 4  # several on one

With ``--store postgresql`` the list is on a PostgreSQL server: the one ``--postgres URL``
names (a user that may create databases; its password in NEWSLETTER_DATABASE_PASSWORD),
else one started for the run from Debian's binaries, as the tests start theirs.

Needs /usr/sbin/smtp-sink and /usr/sbin/smtp-source (package postfix); the test
suite does not. Each size runs in a fresh subprocess, so its peak RSS is its own;
memory that does not grow with the list shows as equal peaks across sizes; CPU time
per message (all threads of the process) compares two versions on a busy machine. Every
third subscriber is paid, the rest free, so both editions are composed and sent.

With ``--workers N`` (PostgreSQL) N such processes send one dispatch together, as
``send --workers N`` starts them: the rate is every copy over the time from the first
worker's first claim to the last worker's end, RSS is each worker's peak, CPU per
message counts the workers and, for a server started for the run, the server too.
SQLite has one process per dispatch, so it runs with one whatever N is.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from composer.config import DATABASE_PASSWORD_ENV  # noqa: E402
from tests.postgres import LocalServer, PostgresServer, find_binaries, wait_for  # noqa: E402

SINK = "/usr/sbin/smtp-sink"
SOURCE = "/usr/sbin/smtp-source"
EXAMPLE = ROOT / "issues" / "2024-05-03-example.md"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_sink(port: int) -> subprocess.Popen[bytes]:
    command = [SINK, "-m", "200", f"127.0.0.1:{port}", "512"]
    if os.geteuid() == 0:
        command[1:1] = ["-u", "nobody"]
    sink = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return sink
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def write_config(folder: Path, port: int, concurrency: int, database: str, verp: bool) -> Path:
    config = folder / "config.toml"
    text = (ROOT / "config.toml").read_text(encoding="utf-8")
    text = text.replace("port = 1025", f"port = {port}")
    text = text.replace("concurrency = 8", f"concurrency = {concurrency}")
    text = text.replace('database = "subscribers.db"', f'database = "{database}"')
    text = text.replace("[newsletter]", f'[newsletter]\ntemplates = "{ROOT / "templates"}"', 1)
    if verp:
        text += '\n[bounces]\naddress = "bounces@news.example.com"\n'
    config.write_text(text, encoding="utf-8")
    return config


def populate(config_path: Path, count: int) -> None:
    from composer.config import load_config
    from composer.store import NewSubscriber, open_store

    with open_store(load_config(config_path).subscribers) as store:
        store.import_many(
            (
                NewSubscriber(
                    email=f"reader{n}@example{n % 50}.com",
                    key=f"reader{n}@example{n % 50}.com",
                    name=f"Reader Number {n}",
                    tier="paid" if n % 3 == 0 else "free",
                )
                for n in range(count)
            ),
            batch_size=5000,
        )


def measure(config_path: Path) -> dict[str, float]:
    """Run one dispatch in this process (one worker of it, on PostgreSQL) and report its
    rate and peak RSS; ``began`` and ``ended`` (the wall clock) frame its sending."""
    from composer.config import load_config
    from composer.sending.send import send_issue

    config = load_config(config_path)
    began: list[float] = []
    started = time.perf_counter()
    cpu_started = time.process_time()
    result = send_issue(EXAMPLE, config, "all", on_start=lambda plan: began.append(time.time()))
    ended = time.time()
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    report = result.report
    return {
        "sent": report.sent,
        "failed": report.failed,
        "seconds": round(seconds, 2),
        "dispatch_seconds": round(report.elapsed, 2),
        "per_second": round(report.sent / max(report.elapsed, 1e-9)),
        # On a loaded machine wall time measures the neighbours; CPU time measures us.
        "cpu_seconds": round(cpu, 3),
        "cpu_us_per_message": round(cpu / max(report.sent, 1) * 1e6),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "began": began[0] if began else ended,
        "ended": ended,
    }


def run_workers(config_path: Path, workers: int) -> dict[str, object]:
    """``workers`` processes on one dispatch, started together; their figures, and the
    whole dispatch's rate."""
    started = [
        subprocess.Popen(
            [sys.executable, __file__, "--measure", str(config_path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(workers)
    ]
    each = []
    for process in started:
        out, _ = process.communicate()
        if process.returncode:
            sys.exit(f"a worker failed (exit {process.returncode})")
        each.append(json.loads(out.strip().splitlines()[-1]))
    sent = sum(int(figures["sent"]) for figures in each)
    window = max(float(f["ended"]) for f in each) - min(float(f["began"]) for f in each)
    cpu = sum(float(f["cpu_seconds"]) for f in each)
    return {
        "sent": sent,
        "failed": sum(int(f["failed"]) for f in each),
        "seconds": round(window, 2),
        "per_second": round(sent / window),
        "cpu_us_per_message": round(cpu / max(sent, 1) * 1e6),
        "peak_rss_mb_per_worker": [f["peak_rss_mb"] for f in each],
        "sent_per_worker": [f["sent"] for f in each],
    }


def server_cpu_seconds(server: LocalServer | None) -> float | None:
    """The CPU time a server started for the run has used so far: the postmaster, its
    backends that have ended (counted in its children's time) and those still running
    (None: a server given with --postgres, not measured)."""
    if server is None:
        return None
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    total = _cpu_seconds(postmaster, ended_children=True)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _stat(int(entry.name))[1:2] == [str(postmaster)]:
            total += _cpu_seconds(int(entry.name))
    return total


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (state first); none for a
    process that has gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def _cpu_seconds(pid: int, *, ended_children: bool = False) -> float:
    fields = _stat(pid)
    if not fields:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if ended_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def message_size(config_path: Path) -> int:
    from composer.composing.pipeline import compose_file
    from composer.config import load_config
    from composer.sending.personalise import MessageTemplate
    from composer.store.deliveries import Recipient
    from composer.unsubscribe import UnsubscribeLinks

    config = load_config(config_path)
    template = MessageTemplate.build(
        compose_file(EXAMPLE, config, "paid"), config, links=UnsubscribeLinks.from_config(config)
    )
    reader = Recipient(
        email="reader1@example1.com", tier="paid", name="Reader", key="reader1@example1.com"
    )
    return len(template.render(reader).data)


def smtp_source(port: int, messages: int, size: int) -> dict[str, float]:
    started = time.perf_counter()
    subprocess.run(
        [SOURCE, "-s", "10", "-m", str(messages), "-l", str(size), "-f", "news@example.com",
         "-t", "reader@example.org", f"127.0.0.1:{port}"],
        check=True,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    return {
        "messages": messages,
        "seconds": round(seconds, 2),
        "per_second": round(messages / seconds),
    }


@contextmanager
def postgres(given: str | None) -> Iterator[tuple[PostgresServer, LocalServer | None]]:
    """The server ``--postgres`` names, or one started from Debian's binaries for the run
    (and that local server, whose CPU time can be read)."""
    if given:
        yield PostgresServer(url=given, password=os.environ.get(DATABASE_PASSWORD_ENV, "")), None
        return
    binaries = find_binaries()
    if binaries is None:
        sys.exit("no /usr/lib/postgresql/*/bin/initdb: install postgresql or pass --postgres URL")
    local = LocalServer(binaries)
    try:
        server = local.start(durable=True)
        wait_for(server)
        yield server, local
    finally:
        local.stop()


@contextmanager
def fresh_list(store: str, folder: Path, server: PostgresServer | None) -> Iterator[str]:
    """An empty list on ``store``: ``[subscribers] database`` for it."""
    if store == "sqlite":
        for leftover in folder.glob("bench.db*"):
            leftover.unlink()
        yield "bench.db"
        return
    assert server is not None
    url = server.create_database()
    os.environ[DATABASE_PASSWORD_ENV] = server.password
    try:
        yield url
    finally:
        server.drop_database(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, nargs="+", default=[20_000])
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument(
        "--verp", action="store_true", help="give each copy its own return path ([bounces] address)"
    )
    parser.add_argument("--store", nargs="+", choices=("sqlite", "postgresql"), default=["sqlite"])
    parser.add_argument("--postgres", metavar="URL", help="a server to create databases on")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1], help="processes on one dispatch (PostgreSQL)"
    )
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    for tool in (SINK, SOURCE):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found; install postfix to run this benchmark")
    os.environ.setdefault("NEWSLETTER_SECRET", "bench-" + "x" * 40)
    port = free_port()
    sink = start_sink(port)
    try:
        with (
            tempfile.TemporaryDirectory() as folder,
            postgres(args.postgres) if "postgresql" in args.store else nullcontext() as found,
        ):
            server, local = found if found else (None, None)
            config_path = write_config(Path(folder), port, args.concurrency, "bench.db", args.verp)
            size = message_size(config_path)
            print(f"message size {size:,} bytes; smtp-sink on 127.0.0.1:{port}")
            # A rate needs no more than a minute's worth of messages.
            ceiling = smtp_source(port, min(*args.subscribers, 50_000), size)
            print(f"smtp-source, 10 sessions: {json.dumps(ceiling)}")
            for store in args.store:
                runs = args.workers if store == "postgresql" else [1]
                for workers in runs:
                    for count in args.subscribers:
                        with fresh_list(store, Path(folder), server) as database:
                            config_path = write_config(
                                Path(folder), port, args.concurrency, database, args.verp
                            )
                            populate(config_path, count)
                            before = server_cpu_seconds(local) if store == "postgresql" else None
                            figures = run_workers(config_path, workers)
                            if before is not None:
                                spent = server_cpu_seconds(local) or 0.0
                                figures["server_cpu_us_per_message"] = round(
                                    (spent - before) / max(int(figures["sent"]), 1) * 1e6
                                )
                        ratio = int(figures["per_second"]) / ceiling["per_second"]
                        print(
                            f"send on {store}, {count:,} subscribers, {workers} worker"
                            f"{'s' if workers > 1 else ''} of concurrency {args.concurrency}:"
                            f" {json.dumps(figures)}; {ratio:.2f} of smtp-source",
                            flush=True,
                        )
    finally:
        sink.terminate()
        sink.wait()


if __name__ == "__main__":
    main()
