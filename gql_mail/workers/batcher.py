"""Collects items from many tasks and hands them to one writer in batches.

An idle server writes each item at once; under load, items that arrive while a write is running go
together in the next one, so the number of commits grows much slower than the number of items. With
`gather_seconds`, a stream (items arrived while the last batch was being written) also waits that long
before the next write, so a batch holds more than the few items one write's duration collects: a write's
cost is mostly per statement, not per item.

A batch is one transaction, so one item the database refuses would fail all the others with it (found: one
outcome carrying an undecodable SMTP reply kept a whole batch of other accounts' messages `sending`, and
they were sent again once their leases lapsed). So when a batch's write fails, each of its items is written
alone (as `GroupCommit` does), and an item that fails alone is handed to `on_item_failed`, which writes a
terminal state for it from safe values. Only when that fails too does the item's future get the exception.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from gql_mail.group_commit import settle

T = TypeVar("T")
log = logging.getLogger(__name__)


class Batcher(Generic[T]):
    def __init__(
        self,
        write: Callable[[Sequence[T]], Awaitable[None]],
        *,
        on_item_failed: Callable[[T, Exception], Awaitable[None]] | None = None,
        max_batch: int = 500,
        gather_seconds: float = 0.0,
    ) -> None:
        """`write` writes a list of items in one transaction; `on_item_failed(item, error)` ends an item
        that `write` refused even alone (without it, the item's future gets the error)."""
        self._write = write
        self._on_item_failed = on_item_failed
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
        """Returns once the item is written, or ended by `on_item_failed`; raises if neither could be done."""
        await self.submit(item)

    def submit(self, item: T) -> asyncio.Future[None]:
        """Queue the item; the future is done once it is written or ended by `on_item_failed` (the error if
        neither could be done)."""
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
                except Exception as exc:
                    if len(batch) == 1:
                        await self._item_failed(*batch[0], exc)
                        continue
                    log.warning("batched write of %d items failed (%r); writing each alone", len(batch), exc)
                    for item, future in batch:
                        try:
                            await self._write([item])
                        except Exception as alone:
                            await self._item_failed(item, future, alone)
                        else:
                            settle(future, None)
                else:
                    for _, future in batch:
                        settle(future, None)

    async def _item_failed(self, item: T, future: asyncio.Future[None], error: Exception) -> None:
        """An item `write` refused alone: `on_item_failed` ends it; its future gets the error only if that
        fails too (or there is no `on_item_failed`)."""
        log.error("an item could not be written", exc_info=error)
        if self._on_item_failed is not None:
            try:
                await self._on_item_failed(item, error)
            except Exception:
                log.exception("an item that could not be written could not be ended either")
            else:
                settle(future, None)
                return
        settle(future, error)

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
