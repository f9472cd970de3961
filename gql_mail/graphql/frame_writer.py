"""Several websocket text frames in one socket write.

A subscriber that wakes up finds every event published since it last ran (a recorded batch of outcomes
publishes several at once: 8 was typical with 500 subscribers at 100 messages/s). ASGI sends one frame
per `send` and uvicorn writes each to the socket at once, so every frame cost a system call and a TCP
segment, about half of the fan-out's CPU. When the server is uvicorn's websockets-sansio protocol, the
frames of one wake-up are serialised by its own connection object and written together; anything else
(another server or protocol, a paused or closing connection) goes through the plain ASGI `send`, one
message at a time, which also keeps its flow control and its errors.

This module is gql-mail's only use of uvicorn's internals (hence uvicorn's upper bound in pyproject; its
0.x minors may change them). It relies on: the ASGI `send` of a websocket being a bound method of
`uvicorn.protocols.websockets.websockets_sansio_impl.WebSocketsSansIOProtocol` (`KeepServerSend` in
`server_send.py` keeps that `send`, unwrapped), and on that protocol's attributes `handshake_complete`,
`close_sent`, `disconnected`, `initial_response`, `writable` (an asyncio.Event), `transport` and `conn`
(a `websockets` ServerProtocol: `send_text`, `data_to_send`). `gql-mail serve` and the test servers pick
that protocol by name (`WS_PROTOCOL`); tests/test_frame_writer.py fails, naming what is missing, when a
uvicorn release lacks any of it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.types import Send
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

# uvicorn's name for the protocol above (`uvicorn.run(ws=...)`); "auto" picks another in some releases.
WS_PROTOCOL = "websockets-sansio"
# What `write` below reads or calls on the protocol.
PROTOCOL_ATTRIBUTES = (
    "handshake_complete",
    "close_sent",
    "disconnected",
    "initial_response",
    "writable",
    "transport",
    "conn",
)

FrameWriter = Callable[[Sequence[str]], Awaitable[None]]


def frame_writer(send: Send) -> FrameWriter:
    """A function that sends text frames in order over the websocket behind `send`."""
    plain = _one_by_one(send)
    protocol: Any = getattr(send, "__self__", None)
    if not isinstance(protocol, WebSocketsSansIOProtocol):
        return plain

    async def write(texts: Sequence[str]) -> None:
        if (
            len(texts) < 2
            or not protocol.handshake_complete
            or protocol.close_sent
            or protocol.disconnected
            or protocol.initial_response is not None
            or not protocol.writable.is_set()
            or protocol.transport.is_closing()
        ):
            await plain(texts)
            return
        connection = protocol.conn
        for text in texts:
            connection.send_text(text.encode())
        protocol.transport.write(b"".join(connection.data_to_send()))

    return write


def open_gate(send: Send | None) -> None:
    """Let the next message past the server's flow control, for a close frame to a reader that stopped
    reading: an ASGI close waits, like every send, until the socket's buffer drains, which for such a
    reader is never. The frame is a few bytes, buffered after what is already queued, so a client that
    reads again finds it after the events it was sent."""
    protocol: Any = getattr(send, "__self__", None)
    if isinstance(protocol, WebSocketsSansIOProtocol):
        protocol.writable.set()


def _one_by_one(send: Send) -> FrameWriter:
    async def write(texts: Sequence[str]) -> None:
        for text in texts:
            await send({"type": "websocket.send", "text": text})

    return write
