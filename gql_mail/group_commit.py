"""Group commit: concurrent callers' rows go into the database in one transaction.

Each submission used to be its own write transaction. On SQLite every write transaction takes the one
write lock, and under load a short transaction holds it for milliseconds (each statement waits its turn
on a busy event loop), so at 100 submissions/s the lock was busy nearly all the time: a delivery's outcome
waited ~100 ms to be recorded behind queued submissions. Here the first caller to arrive while nothing
is being written becomes the leader and writes every row waiting at that moment; callers that arrive
during that write wait, and the first of them leads the next one. Nobody's answer comes before the
commit that made their row durable, an idle server writes a lone row at once (no timer, no background
task), and a row that the batch's statement refuses is retried alone, so it fails only its own caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")

# A caller's future gets this when it is to lead the next write instead of a result.
_LEAD = object()


class GroupCommit(Generic[T]):
    def __init__(self) -> None:
        self._waiting: list[tuple[T, asyncio.Future[object]]] = []
        self._writing = False

    async def write(self, item: T, write_batch: Callable[[Sequence[T]], Awaitable[None]]) -> None:
        """Returns once `item` is committed; raises what writing it raised. `write_batch` writes a list
        in one transaction (every caller passes the same function)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[object] = loop.create_future()
        self._waiting.append((item, future))
        if self._writing:
            try:
                if await future is not _LEAD:
                    return
            except asyncio.CancelledError:
                # Cancelled just after being chosen to lead: choose another, or the group stalls for good.
                if future.done() and not future.cancelled() and future.result() is _LEAD:
                    self._hand_over()
                raise
            future = loop.create_future()
            self._waiting.append((item, future))
        self._writing = True
        batch, self._waiting = self._waiting, []
        try:
            await _write(batch, write_batch)
        finally:
            for _, waiting in batch:
                if waiting is not future and not waiting.done():  # the leader was cancelled mid-write
                    waiting.set_exception(RuntimeError("the write was interrupted"))
            self._hand_over()
        error = future.exception()
        if error is not None:
            raise error

    def _hand_over(self) -> None:
        """The first caller still waiting leads the next write; callers cancelled meanwhile are dropped."""
        while self._waiting:
            _, future = self._waiting.pop(0)
            if not future.done():
                future.set_result(_LEAD)
                return
        self._writing = False


def settle(future: asyncio.Future[Any], error: BaseException | None) -> None:
    """Finish a waiter's future with `None` or `error`, unless its waiter was cancelled meanwhile."""
    if future.done():  # its caller was cancelled
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


async def _write(
    batch: list[tuple[T, asyncio.Future[object]]], write_batch: Callable[[Sequence[T]], Awaitable[None]]
) -> None:
    try:
        await write_batch([item for item, _ in batch])
    except Exception as exc:
        if len(batch) == 1:
            settle(batch[0][1], exc)
            return
        # One bad row (its account deleted meanwhile, say) must not fail the others: each alone.
        for item, future in batch:
            try:
                await write_batch([item])
            except Exception as single:
                settle(future, single)
            else:
                settle(future, None)
        return
    for _, future in batch:
        settle(future, None)
