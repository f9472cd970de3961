"""A real HTTP server that receives webhooks: asyncio + h11 on its own thread, fully scriptable.

Built on a raw asyncio listener (h11 does the HTTP/1.1 parsing) rather than uvicorn so that it
can go "down" for real: ``down()`` closes the listening socket *and* every open keep-alive
connection, so the next delivery attempt gets "connection refused"; ``up()`` listens again on the
same port, the way a receiver comes back after a deploy. Everything else is a knob: answer the next
n requests with 500, answer slowly, hang up without answering (``close_next``), change the default status.

Requests are recorded before they are answered (with the status they got), and
``await wait_for(n)`` sleeps on an event the server thread sets.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import h11

from tests.servers.smtp import RecordLog

T = TypeVar("T")
_CONTROL_TIMEOUT = 5.0
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


class WebhookReceiver:
    """An HTTP endpoint on 127.0.0.1; any path and method is accepted and recorded."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self._lock = threading.Lock()
        self._status = 200
        self._failures: list[int] = []
        self._delay = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self.requests: RecordLog[ReceivedRequest] = RecordLog()

    @property
    def url(self) -> str:
        """Where to point a webhook; any path works, this one reads well in logs."""
        return f"http://{self.host}:{self.port}/webhook"

    @property
    def is_up(self) -> bool:
        return self._server is not None

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> WebhookReceiver:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="webhook-receiver", daemon=True)
        self._thread.start()
        self._call(self._listen())
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._call(self._close())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_CONTROL_TIMEOUT)
        loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting -----------------------------------------------------------------------------------

    def reset(self) -> None:
        """Up, answering 200 at once, nothing recorded."""
        with self._lock:
            self._status, self._failures, self._delay = 200, [], 0.0
        if not self.is_up:
            self.up()
        self.requests.clear()

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

    def down(self) -> None:
        """Refuse connections: close the listener and every open connection. The port stays ours."""
        self._call(self._close())

    def up(self) -> None:
        """Listen again, on the same port."""
        self._call(self._listen())

    # -- observing -----------------------------------------------------------------------------------

    @property
    def received(self) -> list[ReceivedRequest]:
        return self.requests.snapshot()

    async def wait_for(self, n: int, timeout: float = 5.0) -> list[ReceivedRequest]:  # noqa: ASYNC109
        """All requests so far, once there are at least ``n``; ``TimeoutError`` otherwise."""
        return await self.requests.wait_for(n, timeout, "webhook requests")

    # -- server side (runs on the receiver's thread) -------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None, "receiver not started"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(_CONTROL_TIMEOUT)

    async def _listen(self) -> None:
        if self._server is not None:
            return
        # proto=IPPROTO_TCP: asyncio only sets TCP_NODELAY on accepted sockets whose proto says TCP
        # (a plain socket() has proto 0), and without it Nagle + delayed ACK add 40 ms per reply.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self._server = await asyncio.start_server(self._serve, sock=sock)
        self.port = int(sock.getsockname()[1])

    async def _close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._connections):
            writer.transport.abort()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    def _next_answer(self) -> tuple[int, float]:
        with self._lock:
            status = self._failures.pop(0) if self._failures else self._status
            return status, self._delay

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._connections.add(writer)
        try:
            await self._converse(reader, writer)
        except (ConnectionError, h11.ProtocolError, asyncio.CancelledError):
            pass
        finally:
            self._handlers.discard(task)
            self._connections.discard(writer)
            writer.transport.abort()

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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
        status, delay = self._next_answer()
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
        if delay:
            await asyncio.sleep(delay)  # the receiver simulating slowness, not a test waiting
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
