"""Serving the preview: uvicorn on a socket bound to 127.0.0.1
(:func:`composer.web.listen.listen`), and :func:`serve_preview`, what
``newsletter preview`` runs until Ctrl+C."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import webbrowser
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from urllib.parse import quote

import uvicorn

from composer.config import load_config
from composer.web.listen import LOOPBACK, listen
from composer.web.preview.app import create_app
from composer.web.preview.live import Preview
from composer.web.preview.snapshot import Snapshot, find_reader


class PreviewServer(uvicorn.Server):
    """uvicorn serving a :class:`Preview`, which ends the pages' event streams on Ctrl+C
    so that shutting down does not wait for browsers to hang up."""

    def __init__(self, preview: Preview) -> None:
        super().__init__(
            uvicorn.Config(create_app(preview), log_level="warning", timeout_graceful_shutdown=3)
        )
        self.preview = preview

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.preview.stop()
        super().handle_exit(sig, frame)

    def stop(self) -> None:
        """Shut down from another thread (tests, the benchmark)."""
        self.preview.stop()
        self.should_exit = True


def page_url(sock: socket.socket, as_email: str | None = None) -> str:
    """The preview page's address on ``sock``, showing ``as_email``'s copy if given."""
    port = sock.getsockname()[1]
    return f"http://{LOOPBACK}:{port}/" + (f"?as={quote(as_email)}" if as_email else "")


def serve_preview(
    issue_path: Path,
    config_path: Path,
    *,
    port: int,
    open_browser: bool,
    as_email: str | None,
    echo: Callable[[str], None],
) -> None:
    """Run ``newsletter preview`` until Ctrl+C, reporting each recomposition to ``echo``."""

    def report(snapshot: Snapshot) -> None:
        now = time.strftime("%H:%M:%S")
        if snapshot.error is not None:
            echo(f"{now} {snapshot.error}")
        else:
            findings = snapshot.findings or ()
            errors = sum(f.severity == "error" for f in findings)
            warnings = sum(f.severity == "warning" for f in findings)
            echo(
                f"{now} composed in {snapshot.milliseconds:.0f} ms:"
                f" {errors} error(s), {warnings} warning(s)"
            )

    preview = Preview(issue_path, config_path, on_update=report)
    if as_email:
        # A wrong address is a usage error: say so before serving anything.
        find_reader(preview.snapshot.config or load_config(config_path), as_email)
    sock = listen(port)
    url = page_url(sock, as_email)
    echo(f"Previewing {issue_path} at {url} (Ctrl+C to stop)")
    if open_browser:
        # Some browsers keep webbrowser.open waiting until they exit.
        threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()
    # uvicorn re-raises the Ctrl+C it caught once it has shut down cleanly.
    with contextlib.suppress(KeyboardInterrupt):
        PreviewServer(preview).run(sockets=[sock])
    echo("Stopped.")
