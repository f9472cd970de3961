"""Reading request bodies with two bounds: bytes per request, and how many large bodies are read at once.

The gate (gate.py) reads a body only after the token was checked (an anonymous client never makes us buffer
anything). Even so, a few hundred authenticated slow uploads of 40 MB each would pin gigabytes: a body
over `large_body_bytes` (announced by Content-Length, or once a chunked one grows past it) holds one of
`max_large_bodies` slots while it is read; the others wait, unread, with TCP's flow control holding their
bytes in the clients' buffers rather than ours.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from starlette.types import Receive


class BodyTooLarge(Exception):
    """The body passed the per-request bound while it was being read."""


class BodyReader:
    def __init__(self, max_bytes: int, large_bytes: int, max_large: int) -> None:
        self.max_bytes = max_bytes
        self.large_bytes = large_bytes
        self.max_large = max_large
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
        """The whole body; BodyTooLarge once it passes `max_bytes`. `announced` is the Content-Length."""
        async with AsyncExitStack() as stack:
            large = announced is not None and announced > self.large_bytes
            if large:
                await stack.enter_async_context(self._large_slot())
            body = bytearray()
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return bytes(body)
                body += message.get("body", b"")
                if len(body) > self.max_bytes:
                    raise BodyTooLarge
                if not message.get("more_body", False):
                    return bytes(body)
                if not large and len(body) > self.large_bytes:
                    large = True
                    await stack.enter_async_context(self._large_slot())
        raise AssertionError("unreachable")  # pragma: no cover
