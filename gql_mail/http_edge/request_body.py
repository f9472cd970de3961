"""Reading request bodies with bounds: bytes per request, how many large bodies are read at once, and time.

The gate (gate.py) reads a body only after the token was checked (an anonymous client never makes us buffer
anything). Even so, a few hundred authenticated slow uploads of 40 MB each would pin gigabytes: a body
over `large_body_bytes` (announced by Content-Length, or once a chunked one grows past it) holds one of
`max_large_bodies` slots while it is read; the others wait, unread, with TCP's flow control holding their
bytes in the clients' buffers rather than ours. And a body must keep coming: no pause over `idle_seconds`,
all of it within `total_seconds` (a trickle of one byte a minute would otherwise hold a slot for ever).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from starlette.types import Receive


class BodyRefused(Exception):
    """A body that is not read to its end; what is left of it is discarded by the server."""


class BodyTooLarge(BodyRefused):
    """The body passed (or announced more than) the per-request bound."""


class BodyTooSlow(BodyRefused):
    """The body paused longer than `idle_seconds`, or was not complete within `total_seconds`."""


SLOW_BODY = "the request body did not arrive in time"


class BodyReader:
    def __init__(
        self,
        max_bytes: int,
        large_bytes: int,
        max_large: int,
        *,
        idle_seconds: float = 30.0,
        total_seconds: float = 300.0,
    ) -> None:
        self.max_bytes = max_bytes
        self.large_bytes = large_bytes
        self.max_large = max_large
        self.idle_seconds = idle_seconds
        self.total_seconds = total_seconds
        self._slots = asyncio.Semaphore(max_large)
        # Observable by operators and tests: large bodies being read now, and waiting for a slot.
        self.reading_large = 0
        self.waiting_large = 0

    @asynccontextmanager
    async def _large_slot(self) -> AsyncIterator[None]:
        self.waiting_large += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting_large -= 1
        self.reading_large += 1
        try:
            yield
        finally:
            self.reading_large -= 1
            self._slots.release()

    async def read(self, receive: Receive, announced: int | None) -> bytes:
        """The whole body; BodyTooLarge once it passes `max_bytes` (`announced`, the Content-Length,
        included), BodyTooSlow when it does not arrive in time (the wait for a large-body slot is not
        counted: the client is not the one who is slow then)."""
        if announced is not None and announced > self.max_bytes:
            raise BodyTooLarge
        loop = asyncio.get_running_loop()
        async with AsyncExitStack() as stack:
            large = announced is not None and announced > self.large_bytes
            if large:
                await stack.enter_async_context(self._large_slot())
            body = bytearray()
            deadline = loop.time() + self.total_seconds
            while True:
                wait = min(self.idle_seconds, deadline - loop.time())
                try:
                    async with asyncio.timeout(max(wait, 0)):
                        message = await receive()
                except TimeoutError:
                    raise BodyTooSlow from None
                if message["type"] != "http.request":
                    return bytes(body)
                body += message.get("body", b"")
                if len(body) > self.max_bytes:
                    raise BodyTooLarge
                if not message.get("more_body", False):
                    return bytes(body)
                if not large and len(body) > self.large_bytes:
                    large = True
                    waited_from = loop.time()
                    await stack.enter_async_context(self._large_slot())
                    deadline += loop.time() - waited_from
        raise AssertionError("unreachable")  # pragma: no cover
