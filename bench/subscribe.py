"""Benchmark signups on `newsletter serve`: concurrent clients posting the subscribe form.

    .venv/bin/python bench/subscribe.py             # 200 clients offering 400 signups/s
    .venv/bin/python bench/subscribe.py --rate 0    # each posts again once answered

A fresh newsletter folder gets `newsletter outbox` (a real SMTP server storing one
.eml per message) and `newsletter serve` (double opt-in on, behind a "proxy" on
127.0.0.1 that names a different client address per signup, so that the per-client
limit does not apply). Each signup first fetches the form (GET /subscribe) for a fresh
token; once every token is past the minimum fill time, ``--clients`` clients post the
signups, each on its own kept-alive connection and at its own pace, offering ``--rate``
signups a second between them (with ``--rate 0`` each posts its next signup as soon as
the last is answered: the most the service takes, at a latency of clients/throughput).
Reported: signups a second over the posting phase, the latency
of the POSTs (p50, p99, max), the serve process's resident memory before, during (peak)
and after, and the time from the first post until the last confirmation is in the
outbox.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-" + "x" * 32
TOKEN = re.compile(r'name="token" value="([^"]+)"')
MIN_FILL_SECONDS = 2.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def newsletter(*args: str, folder: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "NEWSLETTER_SECRET": SECRET}
    return subprocess.Popen(
        [sys.executable, "-m", "composer", *args, "--config", str(folder / "config.toml")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def set_up(folder: Path, smtp_port: int, web_port: int) -> None:
    subprocess.run(
        [sys.executable, "-m", "composer", "init", str(folder)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    config = folder / "config.toml"
    text = config.read_text(encoding="utf-8")
    text = text.replace("port = 1025", f"port = {smtp_port}")
    text = text.replace(
        'base_url = "https://news.example.com"', f'base_url = "http://127.0.0.1:{web_port}"'
    )
    text = text.replace('# trusted_proxies = ["127.0.0.1"]', 'trusted_proxies = ["127.0.0.1"]')
    config.write_text(text, encoding="utf-8")


class Connection:
    """One kept-alive HTTP/1.1 connection, spoken by hand: httpx's pool costs a client
    more CPU than serve spends on the request, which would measure the client."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: str = ""
    ) -> tuple[int, bytes]:
        extra = "Content-Type: application/x-www-form-urlencoded\r\n" if body else ""
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}{headers}"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) != b"\r\n":
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return int(status_line.split()[1]), await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def wait_until_up(port: int) -> None:
    for _ in range(400):
        try:
            connection = await Connection.open(port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        connection.close()
        return
    raise SystemExit(f"serve did not start on port {port}")


async def run(args: argparse.Namespace, folder: Path, port: int, serve_pid: int) -> None:
    connections = [await Connection.open(port) for _ in range(args.clients)]
    signups = list(range(args.signups))
    tokens: dict[int, str] = {}

    async def fetch_tokens(connection: Connection, share: list[int]) -> None:
        for n in share:
            _, page = await connection.request("GET", "/subscribe")
            found = TOKEN.search(page.decode())
            assert found, page
            tokens[n] = found.group(1)

    shares = [signups[k :: args.clients] for k in range(args.clients)]
    await asyncio.gather(*(fetch_tokens(c, s) for c, s in zip(connections, shares, strict=True)))
    await asyncio.sleep(MIN_FILL_SECONDS + 0.1)

    latencies: list[float] = []
    codes: dict[int, int] = {}
    before = rss_mb(serve_pid)
    peak = before

    # Each client posts at its own pace, so that together they offer ``--rate`` signups
    # a second (0: each posts its next as soon as the last is answered).
    interval = args.clients / args.rate if args.rate else 0.0

    async def post_all(connection: Connection, share: list[int]) -> None:
        await asyncio.sleep(random.uniform(0, interval))
        due = time.perf_counter()
        for n in share:
            await asyncio.sleep(due - time.perf_counter())
            due += interval
            form = urlencode({"email": f"reader{n}@example.org", "token": tokens[n], "website": ""})
            # A different client address per signup, as the proxy would say.
            forwarded = f"X-Forwarded-For: 10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}\r\n"
            started = time.perf_counter()
            status, _ = await connection.request("POST", "/subscribe", form.encode(), forwarded)
            latencies.append(time.perf_counter() - started)
            codes[status] = codes.get(status, 0) + 1

    async def watch_memory() -> None:
        nonlocal peak
        while True:
            peak = max(peak, rss_mb(serve_pid))
            await asyncio.sleep(0.1)

    watcher = asyncio.create_task(watch_memory())
    started = time.perf_counter()
    await asyncio.gather(*(post_all(c, s) for c, s in zip(connections, shares, strict=True)))
    posting = time.perf_counter() - started
    for connection in connections:
        connection.close()
    outbox = folder / "outbox"
    while len(list(outbox.glob("*.eml"))) < args.signups:
        await asyncio.sleep(0.05)
        if time.perf_counter() - started > 300:
            raise SystemExit("the confirmations did not all arrive within 300 s")
    delivered = time.perf_counter() - started
    watcher.cancel()
    after = rss_mb(serve_pid)

    latencies.sort()
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)]
    offered = f"offering {args.rate:,} a second" if args.rate else "as fast as answered"
    print(
        f"{args.signups:,} signups by {args.clients} concurrent clients, {offered}: answers {codes}"
    )
    print(f"  {args.signups / posting:,.0f} signups/s ({posting:.2f} s of posting)")
    print(
        f"  POST latency: p50 {statistics.median(latencies) * 1000:.1f} ms,"
        f" p99 {p99 * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms"
    )
    print(f"  last confirmation in the outbox {delivered:.2f} s after the first post")
    print(f"  serve RSS: {before:.0f} MB before, {peak:.0f} MB peak, {after:.0f} MB after")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--signups", type=int, default=3000)
    parser.add_argument(
        "--rate", type=int, default=400, help="signups a second offered in all (0: no pause)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary) / "newsletter"
        smtp_port, web_port = free_port(), free_port()
        set_up(folder, smtp_port, web_port)
        outbox = newsletter("outbox", "--dir", str(folder / "outbox"), folder=folder)
        serve = newsletter("serve", "--port", str(web_port), folder=folder)
        try:
            asyncio.run(wait_until_up(web_port))
            asyncio.run(run(args, folder, web_port, serve.pid))
        finally:
            for process in (serve, outbox):
                process.send_signal(signal.SIGINT)  # both stop cleanly on Ctrl+C
                process.wait(timeout=20)


if __name__ == "__main__":
    main()
