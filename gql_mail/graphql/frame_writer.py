"""Several websocket text frames in one socket write, and the same frame bytes for every subscriber.

A subscriber that wakes up finds every event published since it last ran (a recorded batch of outcomes
publishes several at once: 8 was typical with 500 subscribers at 100 messages/s). ASGI sends one frame
per `send` and uvicorn writes each to the socket at once, so every frame cost a system call and a TCP
segment, about half of the fan-out's CPU. When the server is uvicorn's websockets-sansio protocol, the
frames of one wake-up are serialised by its own connection object and written together; anything else
(another server or protocol, a paused or closing connection) goes through the plain ASGI `send`, one
message at a time, which also keeps its flow control and its errors.

Every subscriber of a plain `events` subscription gets the same `next` message for an event (fanout.py
builds it once). With 2,000 subscribers, framing that message again for each of them (websockets'
`send_text`: a Frame object, its header, a copy of the payload) was the largest per-subscriber cost left,
so an `OutgoingFrame` also carries its whole wire form, built once: a final, unmasked text frame is its
header and the UTF-8 text, nothing per connection. It is written as it is when the connection negotiated
no extension (permessage-deflate compresses per connection: such a connection still frames each message
through its `conn`), is OPEN and has no fragmented message or bytes of its own pending.

This module is gql-mail's only use of uvicorn's internals (hence uvicorn's upper bound in pyproject; its
0.x minors may change them). It relies on: the ASGI `send` of a websocket being a bound method of
`uvicorn.protocols.websockets.websockets_sansio_impl.WebSocketsSansIOProtocol` (`KeepServerSend` in
`server_send.py` keeps that `send`, unwrapped), and on that protocol's attributes `handshake_complete`,
`close_sent`, `disconnected`, `initial_response`, `writable` (an asyncio.Event), `transport` and `conn`
(a `websockets` ServerProtocol: `send_text`, `data_to_send`, `state`, `extensions`,
`expect_continuation_frame`). `gql-mail serve` and the test servers pick
that protocol by name (`WS_PROTOCOL`); tests/test_frame_writer.py fails, naming what is missing, when a
uvicorn release lacks any of it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple

from starlette.types import Send
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

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

# What `write` reads on the protocol's `conn` to know that a prebuilt frame is what it would send.
CONNECTION_ATTRIBUTES = ("send_text", "data_to_send", "state", "extensions", "expect_continuation_frame")


class OutgoingFrame(NamedTuple):
    """One text message: its text, for the ASGI `send`, and its whole websocket frame (header and UTF-8
    payload; final, unmasked, no extension), for a socket write."""

    text: str
    wire: bytes


def outgoing_frame(payload: bytes) -> OutgoingFrame:
    """The message whose UTF-8 text is `payload`, with its frame (RFC 6455 section 5.2)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x81, n))
    elif n < 65536:
        head = b"\x81\x7e" + n.to_bytes(2, "big")
    else:
        head = b"\x81\x7f" + n.to_bytes(8, "big")
    return OutgoingFrame(payload.decode(), head + payload)


FrameWriter = Callable[[Sequence[OutgoingFrame]], Awaitable[None]]


def frame_writer(send: Send) -> FrameWriter:
    """A function that sends text frames in order over the websocket behind `send`."""
    plain = _one_by_one(send)
    protocol: Any = getattr(send, "__self__", None)
    if not isinstance(protocol, WebSocketsSansIOProtocol):
        return plain

    async def write(frames: Sequence[OutgoingFrame]) -> None:
        if (
            not protocol.handshake_complete
            or protocol.close_sent
            or protocol.disconnected
            or protocol.initial_response is not None
            or not protocol.writable.is_set()
            or protocol.transport.is_closing()
        ):
            await plain(frames)
            return
        connection = protocol.conn
        if (
            connection.state is State.OPEN
            and not connection.extensions
            and not connection.expect_continuation_frame
        ):
            pending = connection.data_to_send()  # normally nothing: uvicorn writes what it frames at once
            if pending:
                protocol.transport.write(b"".join(pending))
            if len(frames) == 1:
                protocol.transport.write(frames[0].wire)
            else:
                protocol.transport.write(b"".join([frame.wire for frame in frames]))
            return
        if len(frames) < 2:
            await plain(frames)
            return
        for frame in frames:
            connection.send_text(frame.text.encode())
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
    async def write(frames: Sequence[OutgoingFrame]) -> None:
        for frame in frames:
            await send({"type": "websocket.send", "text": frame.text})

    return write
