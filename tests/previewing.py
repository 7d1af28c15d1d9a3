"""Running `newsletter preview` in a test: the server in a thread on a free port, already
watching a copy of the example issue that the test may edit."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from composer.web.listen import listen
from composer.web.preview import Preview, PreviewServer
from tests.conftest import EXAMPLE_MD, start_in_thread


def copy_example(tmp_path: Path) -> Path:
    """A copy of the example issue under ``tmp_path/issues`` that a test may edit."""
    target = tmp_path / "issues" / EXAMPLE_MD.name
    target.parent.mkdir(exist_ok=True)
    shutil.copy(EXAMPLE_MD, target)
    return target


@dataclass
class RunningPreview:
    url: str
    issue: Path
    preview: Preview
    client: httpx.Client

    def key(self) -> str:
        return self.client.get("/state").json()["key"]

    def wait_for(self, condition: Callable[[dict], bool], timeout: float = 5) -> dict:
        """Poll ``/state`` until ``condition`` holds for it, and return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.client.get("/state").json()
            if condition(state):
                return state
            time.sleep(0.02)
        raise AssertionError(f"the preview did not get there within {timeout} s")

    def wait_for_new_key(self, old: str, timeout: float = 5) -> dict:
        return self.wait_for(lambda state: state["key"] != old, timeout)


@contextmanager
def running_preview(issue: Path, config_path: Path) -> Iterator[RunningPreview]:
    """The preview server on a free loopback port, in a thread, already watching."""
    preview = Preview(issue, config_path)
    server = PreviewServer(preview)
    thread, port = start_in_thread(server, sockets=[listen(0)])
    url = f"http://127.0.0.1:{port}/"
    with httpx.Client(base_url=url, timeout=10) as client:
        running = RunningPreview(url, issue, preview, client)
        wait_until_watching(running, issue)
        yield running
    server.stop()
    thread.join(timeout=10)
    assert not thread.is_alive(), "the preview server did not shut down"


def wait_until_watching(running: RunningPreview, path: Path) -> None:
    """Return once the preview notices saves of ``path``.

    The watcher sets itself up just after the server starts, and again when a watched
    folder appears; re-saving the file until a recomposition comes back proves it is
    listening before a test edits anything."""
    deadline = time.monotonic() + 10
    key = running.key()
    while True:
        assert time.monotonic() < deadline, f"the preview never noticed a save of {path}"
        path.write_bytes(path.read_bytes())
        try:
            key = running.wait_for_new_key(key, timeout=0.2)["key"]
            break
        except AssertionError:
            continue
    # Then wait out the recompositions those saves may still cause.
    while True:
        time.sleep(0.3)
        latest = running.key()
        if latest == key:
            return
        key = latest


def edit(path: Path, change: Callable[[str], str]) -> None:
    path.write_text(change(path.read_text(encoding="utf-8")), encoding="utf-8")
