"""What a test peer received, recorded on the peer's thread and awaited from the test's loop.

The peers run on event loops of their own, so a test cannot await their futures directly; polling a
list would make every test as slow as its poll interval and flaky under load. ``RecordLog`` wakes the
waiters instead: an append sets an ``asyncio.Event`` on each waiting loop, thread-safely.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class RecordLog(Generic[T]):
    """A list appended from any thread whose length can be awaited from any event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[T] = []
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def append(self, item: T) -> None:
        with self._lock:
            self._items.append(item)
            waiters = list(self._waiters)
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop is closed; its waiter is gone with it
                pass

    def snapshot(self) -> list[T]:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    async def wait_for(self, n: int, timeout: float, what: str = "items") -> list[T]:  # noqa: ASYNC109
        """Return all items once there are at least ``n``; ``TimeoutError`` after ``timeout`` seconds."""
        entry = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.add(entry)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    entry[1].clear()
                    with self._lock:
                        if len(self._items) >= n:
                            return list(self._items)
                    await entry[1].wait()
        except TimeoutError:
            raise TimeoutError(f"waited {timeout}s for {n} {what}, got {len(self)}") from None
        finally:
            with self._lock:
                self._waiters.discard(entry)
