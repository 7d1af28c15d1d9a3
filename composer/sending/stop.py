"""A request to stop, by SIGTERM or SIGINT, noted while a process waits between
dispatches (during one, the dispatch's own handlers stop it after the messages in
flight)."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any


class StopRequest:
    """Set by SIGTERM or SIGINT while :meth:`handling` them. A plain flag: a signal
    handler must not take a lock the interrupted code may hold."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    @contextmanager
    def handling(self) -> Iterator[None]:
        """Note SIGTERM and SIGINT in this flag for the block (on the main thread; on
        another there are no signals to catch), then put the handlers back."""
        previous: dict[signal.Signals, Any] = {}
        try:
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, self)
        except ValueError:
            pass
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def wait(self, seconds: float) -> None:
        """Sleep ``seconds``, or until a stop is requested (checked every 0.1 s)."""
        deadline = time.monotonic() + seconds
        while not self.requested and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.1))
