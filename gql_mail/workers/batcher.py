"""Collects items from many tasks and hands them to one writer in batches.

An idle server writes each item at once; under load, items that arrive while a write is running go
together in the next one, so the number of commits grows much slower than the number of items. With
`gather_seconds`, a stream (items arrived while the last batch was being written) also waits that long
before the next write, so a batch holds more than the few items one write's duration collects: a write's
cost is mostly per statement, not per item.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


class Batcher(Generic[T]):
    def __init__(
        self,
        write: Callable[[Sequence[T]], Awaitable[None]],
        *,
        max_batch: int = 500,
        gather_seconds: float = 0.0,
    ) -> None:
        self._write = write
        self._max_batch = max_batch
        self._gather_seconds = gather_seconds
        self._pending: list[tuple[T, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # The batch being written now (no longer in `_pending`).
        self._writing: list[tuple[T, asyncio.Future[None]]] = []

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="batcher")

    async def add(self, item: T) -> None:
        """Returns once the item is written (raises if its batch failed)."""
        await self.submit(item)

    def submit(self, item: T) -> asyncio.Future[None]:
        """Queue the item; the future is done once it is written (its exception if its batch failed)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._wake.set()
        return future

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            streaming = False
            while self._pending:
                if streaming and self._gather_seconds > 0 and len(self._pending) < self._max_batch:
                    await asyncio.sleep(self._gather_seconds)
                streaming = True
                batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
                self._writing = batch
                try:
                    await self._write([item for item, _ in batch])
                except Exception as exc:  # the callers decide what a failed write means
                    log.exception("batched write of %d items failed", len(batch))
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                else:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_result(None)

    async def stop(self) -> None:
        if self._task is not None:
            # Let what is queued, and the batch being written, be written before stopping.
            while unwritten := [f for _, f in (*self._writing, *self._pending) if not f.done()]:
                await asyncio.wait(unwritten)
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
