"""A TCP listener on an event loop of its own, in a background thread, scripted from the test's thread.

The peers cannot share the test's loop: a test may block it (a subprocess call, a CLI run, a sync
HTTP client) while gql-mail is talking to the peer, or gql-mail may run as a subprocess and need the
peer to answer while the test only waits. Every control call waits until the peer's loop has carried
it out, so once ``down()`` returns the port really refuses, and once ``up()`` returns it really accepts.

The listener is a raw asyncio server, not a framework's, so that it can go down for real: ``down()``
closes the listening socket *and* aborts every open connection (a keep-alive connection would
otherwise hide the outage), and ``up()`` listens again on the same port, the way a server comes back
after a deploy, so nothing pointed at it needs to change.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from abc import ABC, abstractmethod
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, Self, TypeVar

T = TypeVar("T")
_CONTROL_TIMEOUT = 5.0


class ThreadedListener(ABC):
    """The plumbing shared by the peers; a subclass only says how to serve one connection (``_handle``)."""

    # What ends a connection the ordinary way for this peer (a client hanging up). Anything else
    # reaches the loop's exception handler, so a bug in the peer shows in the test's output.
    _hangups: ClassVar[tuple[type[Exception], ...]] = (ConnectionError,)

    def __init__(self, host: str, *, name: str) -> None:
        self.host = host
        self.port = 0  # the OS picks one on the first start(); up() reuses it
        self._name = name  # the thread's name, to tell the peers apart in a thread dump
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def is_up(self) -> bool:
        return self._server is not None

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> Self:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=self._name, daemon=True)
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

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def down(self) -> None:
        """Refuse connections: close the listener and every open connection. The port stays ours."""
        self._call(self._close())

    def up(self) -> None:
        """Listen again, on the same port."""
        self._call(self._listen())

    # -- listener side (runs on the listener's thread) -----------------------------------------------

    @abstractmethod
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection; the connection is aborted when this returns."""

    @contextmanager
    def _owned(self, writer: asyncio.StreamWriter) -> Iterator[None]:
        """Abort ``writer`` on leaving, or at ``down()`` before that: a connection the peer opens
        itself (a proxy's upstream) has to end with the client's, not linger after it."""
        self._writers.add(writer)
        try:
            yield
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None, f"{self._name} not started"
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
        try:
            with self._owned(writer):
                await self._handle(reader, writer)
        except self._hangups:
            pass
        except asyncio.CancelledError:  # down() or stop(): ending connections is what they are for
            pass
        finally:
            self._tasks.discard(task)
