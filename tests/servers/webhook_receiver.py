"""A real HTTP server that receives webhooks: asyncio + h11 on its own thread, fully scriptable.

Built on a raw asyncio listener (h11 does the HTTP/1.1 parsing) rather than uvicorn so that it
can go "down" for real: ``down()`` closes the listening socket *and* every open keep-alive
connection, so the next delivery attempt gets "connection refused"; ``up()`` listens again on the
same port, the way a receiver comes back after a deploy. Everything else is a knob: answer the next
n requests with 500, answer slowly, hang up without answering (``close_next``), change the default status,
answer 200 with a body that never ends, fast or a byte at a time (``endless_body``).

Requests are recorded before they are answered (with the status they got), and
``await wait_for(n)`` sleeps on an event the server thread sets.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import h11

from tests.servers.recording import RecordLog
from tests.servers.threaded_loop import ThreadedListener

CLOSE = 0  # the recorded status of a request answered by closing the connection (``close_next``)


@dataclass(frozen=True)
class ReceivedRequest:
    """One HTTP request as it arrived."""

    method: str
    path: str
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "
    body: bytes
    received_at: float  # time.monotonic() when the body was complete
    status: int  # what the receiver answered
    delay: float = 0.0  # how long it waited before answering (``delay_responses``)

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class WebhookReceiver(ThreadedListener):
    """An HTTP endpoint on 127.0.0.1; any path and method is accepted and recorded."""

    # A malformed request ends its connection, as it would on a real server.
    _hangups = (ConnectionError, h11.ProtocolError)

    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__(host, name="webhook-receiver")
        self._lock = threading.Lock()
        self._status = 200
        self._failures: list[int] = []
        self._delay = 0.0
        self._endless: float | None = None  # the pause between chunks of an endless body
        self._in_flight = 0
        self.max_in_flight = 0  # the most requests being answered at once (received, not yet answered)
        self.requests: RecordLog[ReceivedRequest] = RecordLog()
        # Bytes of an endless body written before the client hung up, one entry per such answer.
        self.endless_sent: RecordLog[int] = RecordLog()

    @property
    def url(self) -> str:
        """Where to point a webhook; any path works, this one reads well in logs."""
        return f"http://{self.host}:{self.port}/webhook"

    # -- scripting -----------------------------------------------------------------------------------

    def reset(self) -> None:
        """Up, answering 200 at once, nothing recorded."""
        with self._lock:
            self._status, self._failures, self._delay, self._endless = 200, [], 0.0, None
            self.max_in_flight = 0
        if not self.is_up:
            self.up()
        self.requests.clear()
        self.endless_sent.clear()

    def fail_next(self, n: int = 1, status: int = 500) -> None:
        """Answer the next ``n`` requests with ``status``."""
        with self._lock:
            self._failures.extend([status] * n)

    def close_next(self, n: int = 1) -> None:
        """For the next ``n`` requests, read the whole request, then close the connection without an answer
        (recorded with status 0)."""
        with self._lock:
            self._failures.extend([CLOSE] * n)

    def set_status(self, status: int) -> None:
        """The answer once the scripted failures are used up (200 by default)."""
        with self._lock:
            self._status = status

    def delay_responses(self, seconds: float) -> None:
        """Wait ``seconds`` before answering each request (a slow receiver) until reset()."""
        with self._lock:
            self._delay = seconds

    def endless_body(self, pause: float | None = 0.0) -> None:
        """Answer 200 with a chunked body that never ends (until the client hangs up) until reset(): 64 KiB
        chunks as fast as they are read, or with ``pause`` one byte every ``pause`` seconds (a trickle that
        never leaves a read waiting long); ``None`` ends it."""
        with self._lock:
            self._endless = pause

    # -- observing -----------------------------------------------------------------------------------

    @property
    def received(self) -> list[ReceivedRequest]:
        return self.requests.snapshot()

    async def wait_for(self, n: int, timeout: float = 5.0) -> list[ReceivedRequest]:  # noqa: ASYNC109
        """All requests so far, once there are at least ``n``; ``TimeoutError`` otherwise."""
        return await self.requests.wait_for(n, timeout, "webhook requests")

    # -- server side (runs on the receiver's thread) -------------------------------------------------

    def _next_answer(self) -> tuple[int, float, float | None]:
        with self._lock:
            status = self._failures.pop(0) if self._failures else self._status
            return status, self._delay, self._endless if status != CLOSE else None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                request, body = event, bytearray()
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                await self._answer(conn, writer, request, bytes(body))
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return

    async def _answer(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, request: h11.Request, body: bytes
    ) -> None:
        status, delay, endless = self._next_answer()
        headers: dict[str, str] = {}
        for name, value in request.headers:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        self.requests.append(
            ReceivedRequest(
                method=request.method.decode("ascii"),
                path=request.target.decode("latin-1"),
                headers=headers,
                body=body,
                received_at=time.monotonic(),
                status=status,
                delay=delay,
            )
        )
        if status == CLOSE:
            writer.transport.abort()
            raise ConnectionResetError("closed without an answer, as scripted")
        if endless is not None:
            await self._answer_endlessly(conn, writer, endless)
            return
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            if delay:
                await asyncio.sleep(delay)  # the receiver simulating slowness, not a test waiting
        finally:
            with self._lock:
                self._in_flight -= 1
        payload = json.dumps({"status": status}).encode()
        writer.write(
            conn.send(
                h11.Response(
                    status_code=status,
                    headers=[("content-type", "application/json"), ("content-length", str(len(payload)))],
                )
            )
        )
        writer.write(conn.send(h11.Data(data=payload)))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()

    async def _answer_endlessly(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, pause: float
    ) -> None:
        """200, then chunks until the client hangs up (bounded at 1 GiB, should it never)."""
        writer.write(conn.send(h11.Response(status_code=200, headers=[("content-type", "text/plain")])))
        size = 1 if pause else 65536
        chunk = conn.send(h11.Data(data=b"x" * size))
        sent = 0
        try:
            while sent < 1 << 30 and not writer.transport.is_closing():
                writer.write(chunk)
                await writer.drain()
                sent += size
                if pause:
                    await asyncio.sleep(pause)  # the receiver trickling, not a test waiting
        except ConnectionError:
            pass
        finally:
            self.endless_sent.append(sent)
        raise ConnectionResetError("the client hung up on an endless body")
