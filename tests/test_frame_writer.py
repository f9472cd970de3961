"""Events published together reach a subscriber as separate, well-formed `next` messages, in order.

On uvicorn's websockets-sansio protocol (the harness server's, as uvicorn's "auto" picks it) the fan-out
fast path writes the frames of one wake-up in one socket write (gql_mail/graphql/frame_writer.py). The
client here is a real websocket client: with permessage-deflate, as websockets offers it by default (each
message framed for its connection), and without (the frames gql-mail built once, written as they are);
the server side's transport is only watched, to check that the batch really went out in one write.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import websockets
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from gql_mail.events import MESSAGE_FAILED, MESSAGE_SENT, Event, iso
from gql_mail.graphql.frame_writer import (
    CONNECTION_ATTRIBUTES,
    PROTOCOL_ATTRIBUTES,
    frame_writer,
    outgoing_frame,
)
from gql_mail.graphql.server_send import RAW_SEND
from tests.harness import EVENTS_SUBSCRIPTION, Server

GENERAL = """
subscription Ev($account: ID, $events: [String!]) {
  events(account: $account, events: $events) { ...E }
}
fragment E on Event { event account date data }"""

START = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def bus_event(n: int, account: str | None = "fw", name: str = MESSAGE_SENT) -> Event:
    return Event(name, account, START + timedelta(seconds=n), {"queueId": f"q{n}", "n": n}, order_key=f"q{n}")


def expected(event: Event) -> dict[str, Any]:
    return {"event": event.event, "account": event.account, "date": iso(event.date), "data": event.data}


def text_frames(chunk: bytes) -> int:
    """How many complete text frames a server-to-client write holds (server frames are never masked);
    fails on a write that does not end on a frame boundary."""
    count, at = 0, 0
    while at < len(chunk):
        opcode, length, at = chunk[at] & 0x0F, chunk[at + 1] & 0x7F, at + 2
        if length == 126:
            length, at = int.from_bytes(chunk[at : at + 2], "big"), at + 2
        elif length == 127:
            length, at = int.from_bytes(chunk[at : at + 8], "big"), at + 8
        at += length
        count += opcode == 0x1
    assert at == len(chunk), "a write ended in the middle of a frame"
    return count


@pytest.fixture
def sansio_connections(monkeypatch: pytest.MonkeyPatch) -> list[WebSocketsSansIOProtocol]:
    """The server-side websocket connections made from now on (the harness server runs in this loop)."""
    made: list[WebSocketsSansIOProtocol] = []
    plain = WebSocketsSansIOProtocol.connection_made

    def connection_made(self: WebSocketsSansIOProtocol, transport: Any) -> None:
        made.append(self)
        plain(self, transport)

    monkeypatch.setattr(WebSocketsSansIOProtocol, "connection_made", connection_made)
    return made


async def open_subscription(
    server: Server, query: str, variables: dict[str, Any], *, compression: str | None = "deflate"
) -> Any:
    before = server.runtime.bus.subscriber_count
    ws = await websockets.connect(
        server.ws_url,
        subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
        compression=compression,
    )
    await ws.send(
        json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {server.token}"}})
    )
    assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "connection_ack"
    await ws.send(
        json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query, "variables": variables}})
    )
    async with asyncio.timeout(5):
        await server.runtime.bus.until_subscribers(lambda n: n > before)
    return ws


async def receive(ws: Any, count: int) -> list[dict[str, Any]]:
    async with asyncio.timeout(5):
        return [json.loads(await ws.recv()) for _ in range(count)]


def publish_together(server: Server, events: list[Event]) -> None:
    """One synchronous run of publishes: the subscriber wakes once and finds all of them."""
    for event in events:
        server.runtime.bus.publish(event)


async def assert_exactly(ws: Any, server: Server, wanted: list[Event]) -> None:
    """The next messages are `wanted`, in order, as `next` messages of operation 1; then nothing else
    (a sentinel published afterwards is the very next message)."""
    messages = await receive(ws, len(wanted))
    for message, event in zip(messages, wanted, strict=True):
        assert message == {"id": "1", "type": "next", "payload": {"data": {"events": expected(event)}}}
    sentinel = bus_event(99)
    server.runtime.bus.publish(sentinel)
    (after,) = await receive(ws, 1)
    assert after["payload"]["data"]["events"] == expected(sentinel), after


async def test_uvicorn_still_has_what_the_fast_path_relies_on(
    server: Server, sansio_connections: list[WebSocketsSansIOProtocol], monkeypatch: pytest.MonkeyPatch
) -> None:
    """frame_writer reads uvicorn internals; a uvicorn release without them must fail here by name, not
    make every subscriber fall back to the slow path unnoticed (pyproject's uvicorn bounds)."""
    sends: list[Any] = []
    plain_writer = frame_writer

    def spy(send: Any) -> Any:
        sends.append(send)
        return plain_writer(send)

    monkeypatch.setattr("gql_mail.graphql.ws_handlers.frame_writer", spy)
    ws = await open_subscription(server, EVENTS_SUBSCRIPTION, {"account": "fw", "events": [MESSAGE_SENT]})
    try:
        assert len(sansio_connections) == 1, "the server does not run uvicorn's websockets-sansio protocol"
        protocol = sansio_connections[0]
        missing = [name for name in PROTOCOL_ATTRIBUTES if not hasattr(protocol, name)]
        assert not missing, f"uvicorn's WebSocketsSansIOProtocol lacks {missing}"
        connection_missing = [name for name in CONNECTION_ATTRIBUTES if not hasattr(protocol.conn, name)]
        assert not connection_missing, f"WebSocketsSansIOProtocol.conn lacks {connection_missing}"
        assert sends, "the subscription did not ask for a frame writer"
        assert getattr(sends[0], "__self__", None) is protocol, (
            f"the websocket's send kept in scope[{RAW_SEND!r}] is not a bound method of uvicorn's protocol"
        )
    finally:
        await ws.close()


@pytest.mark.parametrize("compression", ["deflate", None])
async def test_events_published_together_arrive_as_separate_next_messages_from_one_write(
    server: Server, sansio_connections: list[WebSocketsSansIOProtocol], compression: str | None
) -> None:
    ws = await open_subscription(
        server, EVENTS_SUBSCRIPTION, {"account": "fw", "events": [MESSAGE_SENT]}, compression=compression
    )
    try:
        assert len(sansio_connections) == 1, "the harness server is expected to run websockets-sansio"
        transport = sansio_connections[0].transport
        writes: list[bytes] = []
        plain_write = transport.write

        def write(data: Any) -> None:
            writes.append(bytes(data))
            plain_write(data)

        transport.write = write  # type: ignore[method-assign]
        wanted = [bus_event(n) for n in range(5)]
        # Events the subscription does not want, among them, are not sent.
        publish_together(
            server,
            [*wanted[:2], bus_event(50, account="other"), bus_event(51, name=MESSAGE_FAILED), *wanted[2:]],
        )
        messages = await receive(ws, 5)
        del transport.write
        assert [text_frames(chunk) for chunk in writes] == [5], "the 5 frames were not one socket write"
        for message, event in zip(messages, wanted, strict=True):
            assert message == {"id": "1", "type": "next", "payload": {"data": {"events": expected(event)}}}
        assert len({m["payload"]["data"]["events"]["data"]["queueId"] for m in messages}) == 5
        # Nothing else came with them, and a lone event afterwards still arrives (written alone).
        await assert_exactly(ws, server, [])
    finally:
        await ws.close()


async def test_batches_keep_arriving_in_order(server: Server) -> None:
    ws = await open_subscription(server, EVENTS_SUBSCRIPTION, {"account": None, "events": None})
    try:
        for round_ in range(3):
            wanted = [bus_event(10 * round_ + n, account=f"a{n}") for n in range(5)]
            publish_together(server, wanted)
            await assert_exactly(ws, server, wanted)
    finally:
        await ws.close()


async def test_the_general_path_receives_the_same_events(server: Server) -> None:
    fast = await open_subscription(server, EVENTS_SUBSCRIPTION, {"account": "fw", "events": [MESSAGE_SENT]})
    general = await open_subscription(server, GENERAL, {"account": "fw", "events": [MESSAGE_SENT]})
    try:
        wanted = [bus_event(n) for n in range(5)]
        publish_together(server, [*wanted[:3], bus_event(50, account="other"), *wanted[3:]])
        fast_messages, general_messages = await asyncio.gather(receive(fast, 5), receive(general, 5))
        assert fast_messages == general_messages
        for message, event in zip(general_messages, wanted, strict=True):
            assert message == {"id": "1", "type": "next", "payload": {"data": {"events": expected(event)}}}
        sentinel = bus_event(99)
        server.runtime.bus.publish(sentinel)
        after = await asyncio.gather(receive(fast, 1), receive(general, 1))
        assert [a[0]["payload"]["data"]["events"] for a in after] == [expected(sentinel)] * 2
    finally:
        await general.close()
        await fast.close()


@pytest.mark.parametrize("compression", ["deflate", None])
async def test_large_and_non_ascii_payloads_are_framed_for_the_client(
    server: Server, compression: str | None
) -> None:
    """Frames are built by gql-mail on the fast path: the 7-, 16- and 64-bit length forms and UTF-8 text
    must reach a real client intact, with permessage-deflate negotiated or without."""
    ws = await open_subscription(
        server, EVENTS_SUBSCRIPTION, {"account": "fw", "events": [MESSAGE_SENT]}, compression=compression
    )
    try:
        sizes = [10, 200, 70_000]
        wanted = [
            Event(MESSAGE_SENT, "fw", START, {"queueId": f"big{n}", "text": "é€😀x" * n}, order_key="big")
            for n in sizes
        ]
        publish_together(server, wanted)
        await assert_exactly(ws, server, wanted)
    finally:
        await ws.close()


def test_a_prebuilt_frame_is_what_websockets_would_send() -> None:
    """The frame built once for every subscriber without an extension is byte for byte the one the
    connection's own `send_text` makes, in all three length forms."""
    from websockets.protocol import SERVER, Protocol

    for text in ("x", "é" * 100, "€" * 30_000):
        connection = Protocol(SERVER)  # OPEN, no extension
        connection.send_text(text.encode())
        assert outgoing_frame(text.encode()).wire == b"".join(connection.data_to_send())
        assert outgoing_frame(text.encode()).text == text
