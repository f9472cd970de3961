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
import threading
from typing import Literal

from tests.servers.threaded_loop import ThreadedListener

Mode = Literal["pass", "blackhole", "greet"]


class FaultProxy(ThreadedListener):
    # OSError, not only ConnectionError: the proxy opens connections of its own, and reaching the
    # target can fail in other ways too (no route, a timeout); for the client that is one more network
    # fault, not a bug in the proxy.
    _hangups = (OSError,)

    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1") -> None:
        super().__init__(host, name="fault-proxy")
        self._target = (target_host, target_port)
        self._lock = threading.Lock()
        self._mode: Mode = "pass"
        self._greeting = b""
        self._connections = 0

    # -- scripting -----------------------------------------------------------------------------------

    def set_mode(self, mode: Mode, greeting: str = "") -> None:
        """How the next connections are treated; open connections keep going as they were."""
        with self._lock:
            self._mode = mode
            self._greeting = (greeting.rstrip("\r\n") + "\r\n").encode() if greeting else b""

    def retarget(self, host: str, port: int) -> None:
        with self._lock:
            self._target = (host, port)

    @property
    def connections(self) -> int:
        with self._lock:
            return self._connections

    # -- proxy side (runs on the proxy's thread) -----------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self._connections += 1
            mode, greeting, target = self._mode, self._greeting, self._target
        if mode == "blackhole":
            await reader.read()  # until the client gives up
        elif mode == "greet":
            writer.write(greeting)
            await writer.drain()
        else:
            up_reader, upstream = await asyncio.open_connection(*target)
            with self._owned(upstream):
                await asyncio.gather(_pump(reader, upstream), _pump(up_reader, writer))


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
