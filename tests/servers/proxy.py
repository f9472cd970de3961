"""A TCP proxy that injects connection-level faults between gql-mail and a real server.

Point an account at the proxy, let it reach CONNECTED through it (``mode = "pass"``), then switch the
proxy to fail the next connections for real, without touching the server behind it:

| mode / call        | what a new connection sees                                         |
| ------------------ | ------------------------------------------------------------------ |
| ``"pass"``         | the target server, bytes forwarded both ways                       |
| ``"blackhole"``    | accepted, never a byte back (the client's timeout must end it)     |
| ``"greet"``        | ``greeting`` (e.g. ``421 4.3.2 Service not available``), then closed |
| ``down()``/``up()``| connection refused (the listener is closed), then listening again on the same port |
| ``retarget(h, p)`` | forward to another server from now on (a certificate that changed)  |

Runs on its own event loop in a thread, like the other peers, so it keeps working while the test's loop
is blocked, and for servers that run as subprocesses. ``connections`` counts accepted connections.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")
Mode = Literal["pass", "blackhole", "greet"]
_CONTROL_TIMEOUT = 5.0


class FaultProxy:
    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self._target = (target_host, target_port)
        self._lock = threading.Lock()
        self._mode: Mode = "pass"
        self._greeting = b""
        self._connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
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

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting -----------------------------------------------------------------------------------

    def set_mode(self, mode: Mode, greeting: str = "") -> None:
        """How the next connections are treated; open connections keep going as they were."""
        with self._lock:
            self._mode = mode
            self._greeting = (greeting.rstrip("\r\n") + "\r\n").encode() if greeting else b""

    def retarget(self, host: str, port: int) -> None:
        with self._lock:
            self._target = (host, port)

    def down(self) -> None:
        """Refuse connections: close the listener and every open connection. The port stays ours."""
        self._call(self._close())

    def up(self) -> None:
        """Listen again, on the same port."""
        self._call(self._listen())

    @property
    def connections(self) -> int:
        with self._lock:
            return self._connections

    # -- proxy side (runs on the proxy's thread) -----------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None, "proxy not started"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(_CONTROL_TIMEOUT)

    async def _listen(self) -> None:
        if self._server is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self._server = await asyncio.start_server(self._serve, sock=sock)
        self.port = int(sock.getsockname()[1])

    async def _close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        with self._lock:
            self._connections += 1
            mode, greeting, target = self._mode, self._greeting, self._target
        upstream: asyncio.StreamWriter | None = None
        try:
            if mode == "blackhole":
                await reader.read()  # until the client gives up
            elif mode == "greet":
                writer.write(greeting)
                await writer.drain()
            else:
                up_reader, upstream = await asyncio.open_connection(*target)
                self._writers.add(upstream)
                await asyncio.gather(_pump(reader, upstream), _pump(up_reader, writer))
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            for w in (writer, upstream):
                if w is not None:
                    self._writers.discard(w)
                    w.transport.abort()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        if writer.can_write_eof() and not writer.is_closing():
            try:
                writer.write_eof()
            except OSError:
                pass
