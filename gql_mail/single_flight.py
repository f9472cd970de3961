"""One call in flight per key: concurrent callers with the same key share its result (or its error).

Many deliveries of one account meet an expired OAuth2 token at the same moment; without this each would
ask the provider for a new one (a stampede, and with rotating refresh tokens, most of them would fail).
Per process; across processes the caller adds its own claim (services/oauth2_tokens.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

__all__ = ["SingleFlight"]


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._flights: dict[K, asyncio.Future[V]] = {}

    async def run(self, key: K, call: Callable[[], Awaitable[V]]) -> V:
        """`call()`'s result; a caller that arrives while one for `key` runs waits for that one instead.
        The call runs in a task of its own, so a caller that is cancelled does not cancel the others'."""
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.ensure_future(call())
            self._flights[key] = flight
            flight.add_done_callback(lambda _: self._flights.pop(key, None))
        return await asyncio.shield(flight)

    def in_flight(self, key: K) -> bool:
        return key in self._flights
