"""A store for a long-running service: one connection on a thread of its own, and calls
from many requests gathered into one transaction.

A store's connection belongs to the thread that opened it, and a commit waits for the
disk; :class:`StoreWriter` runs every call on its one thread, in order, so the event
loop never waits for either and no two calls of the service contend for SQLite's
lock. :class:`Batch` gathers the items submitted while a write is under way and
writes them together with the next one: a hundred signups a second cost a few
commits, not a hundred.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

from composer.config import SubscriberSettings
from composer.store import SubscriberStore, open_store

T = TypeVar("T")
R = TypeVar("R")


class StoreWriter:
    """The store ``settings`` names, opened on first use on a thread of its own."""

    def __init__(self, settings: SubscriberSettings) -> None:
        self.settings = settings
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._store: SubscriberStore | None = None

    async def call(self, work: Callable[[SubscriberStore], T]) -> T:
        """``work(store)``, run on the store's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._run, work)

    def _run(self, work: Callable[[SubscriberStore], T]) -> T:
        if self._store is None:
            # serve applies the unsubscribes it queued itself, in the background.
            self._store = open_store(self.settings, apply_queued=False)
        return work(self._store)

    def close(self) -> None:
        """Close the store once the calls already made have run."""
        self._thread.submit(self._close)
        self._thread.shutdown(wait=True)

    def _close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


class Batch(Generic[T, R]):
    """Items written by ``write`` (items in, one result each, in order), gathered: those
    submitted while a write is under way go together in the next, up to ``limit``."""

    def __init__(
        self, write: Callable[[list[T]], Awaitable[Sequence[R]]], *, limit: int = 500
    ) -> None:
        self.write = write
        self.limit = limit
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        """Write ``item`` with whatever else is waiting; its result, or the write's error."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[: self.limit], self._waiting[self.limit :]
            try:
                results = await self.write([item for item, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
