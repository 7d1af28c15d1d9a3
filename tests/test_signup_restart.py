"""Transactional mail survives a killed `newsletter serve`: a real serve process is
killed with SIGKILL while confirmations wait in its queue, and the next run sends each
exactly once, counted at the SMTP server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import ROOT, SECRET, both_backends, newsletter_command, with_settings
from tests.joining import signup, wait_for_mail
from tests.smtp_server import SmtpServer

SIGNUPS = 100


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(config_path: Path, port: int) -> Iterator[subprocess.Popen[str]]:
    """A real `newsletter serve` on ``port``, answering; killed at the end if still alive."""
    command = newsletter_command("serve", "--port", str(port), config_path=config_path)
    env = {**os.environ, "NEWSLETTER_SECRET": SECRET}
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 20
    while True:
        assert process.poll() is None, process.communicate()
        try:
            httpx.get(f"http://127.0.0.1:{port}/subscribe", timeout=1)
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline, "serve did not answer"
            time.sleep(0.05)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.communicate(timeout=20)


class Client:
    def __init__(self, port: int) -> None:
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)


@both_backends
def test_confirmations_queued_at_a_kill_are_each_sent_once_after_a_restart(send_config, tmp_path):
    smtp_port, web_port = free_port(), free_port()
    with_settings(send_config, "smtp", port=smtp_port)  # nothing listens there yet
    with_settings(send_config, "subscribe", per_ip_per_hour=1000)
    addresses = [f"reader{n}@example.org" for n in range(SIGNUPS)]

    with serve(send_config, web_port) as first:
        client = Client(web_port)
        for address in addresses:
            assert signup(client, address).status_code == 200
        time.sleep(0.5)  # the sender tries the closed port, and waits
        first.send_signal(signal.SIGKILL)
        first.wait()

    smtp = SmtpServer(tmp_path / "received", port=smtp_port)
    try:
        with serve(send_config, web_port):
            wait_for_mail(smtp, SIGNUPS, timeout=60)
            time.sleep(1.5)  # time enough for any second copy to arrive
        received = smtp.received()
    finally:
        smtp.close()
    assert sorted(received) == sorted(addresses)
    assert set(received.values()) == {1}


def test_a_kill_while_the_server_is_slow_loses_none_and_repeats_at_most_one_per_connection(
    send_config, smtp
):
    smtp.handler.data_delay = 0.03
    web_port = free_port()
    with_settings(send_config, "subscribe", per_ip_per_hour=1000)
    addresses = [f"reader{n}@example.org" for n in range(SIGNUPS)]

    with serve(send_config, web_port) as first:
        client = Client(web_port)
        for address in addresses:
            assert signup(client, address).status_code == 200
        wait_for_mail(smtp, 20)
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert len(smtp.folder.messages()) < SIGNUPS

    with serve(send_config, web_port):
        wait_for_mail(smtp, SIGNUPS, timeout=60)
        time.sleep(1.0)
    received = smtp.received()
    assert sorted(received) == sorted(addresses), "none is lost"
    assert sum(received.values()) - SIGNUPS <= 2, "[send] concurrency = 2 connections"
