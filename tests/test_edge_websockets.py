"""Websockets as a whole, attacked: a cap on open connections per process, a cap on events queued for one
connection over all its subscriptions (a reader that stopped reading is closed with the reason), malformed
or deeply nested messages closing the connection with 4400, and on PostgreSQL a bounded relay queue."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
import websockets

from gql_mail.app import build_runtime
from gql_mail.config import Settings
from gql_mail.events import Event, EventBus, SubscriberTooSlow, Subscription
from gql_mail.pg_events import EVENTS_CHANNEL, EventRelay, asyncpg_dsn, encode_event
from gql_mail.runtime import Wakers
from tests.harness import EVENTS_SUBSCRIPTION, Server, run_server, subscribe
from tests.server_log import server_log, tracebacks


async def _until(predicate: Any, timeout: float = 20) -> None:  # noqa: ASYNC109 - a deadline for asyncio.timeout
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 (state the server changes; a bounded poll)
            await asyncio.sleep(0.01)


async def _init(ws: Any, token: str) -> None:
    await ws.send(json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}))
    assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "connection_ack"


async def _closed(ws: Any) -> tuple[int | None, str]:
    """Read until the server closes; its close code and reason."""
    with pytest.raises(websockets.ConnectionClosed):
        async with asyncio.timeout(20):
            while True:
                await ws.recv()
    assert ws.close_code is not None
    return ws.close_code, ws.close_reason or ""


@pytest.mark.fault(
    "open more websockets than max_ws_connections",
    "the one over the cap is closed with 4429 and a reason; closed ones give their slot back",
)
async def test_websocket_connections_are_capped_per_process(tmp_path: Path) -> None:
    async with run_server(tmp_path, max_ws_connections=2) as server:
        endpoint = server.app.state.graphql
        async with subscribe(server), subscribe(server):
            assert endpoint.open_websockets == 2
            async with websockets.connect(server.ws_url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
                code, reason = await _closed(ws)
            assert code == 4429 and "too many websocket connections" in reason
            # Anonymous sockets count too: they hold a slot until they go.
            async with websockets.connect(server.ws_url, subprotocols=["graphql-ws"]) as ws:  # type: ignore[list-item]
                code, _ = await _closed(ws)
            assert code == 4429
        await _until(lambda: endpoint.open_websockets == 0)
        async with subscribe(server) as sub, subscribe(server):
            assert sub.closed_code is None


async def test_per_token_refusal_names_the_limit(tmp_path: Path) -> None:
    async with run_server(tmp_path, max_ws_connections_per_token=1) as server, subscribe(server):
        async with websockets.connect(server.ws_url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
            await ws.send(
                json.dumps(
                    {"type": "connection_init", "payload": {"Authorization": f"Bearer {server.token}"}}
                )
            )
            code, reason = await _closed(ws)
        assert code == 4403 and "at most 1 websocket connections per token" in reason


@pytest.mark.fault(
    "websocket messages nested 100,000 deep, not JSON, or of the wrong shape (both protocols)",
    "the connection is closed with 4400 and the reason; no traceback in the server's log",
)
async def test_malformed_websocket_messages_close_with_4400(server: Server) -> None:
    limit = server.settings.max_json_depth
    deep = '{"type": "subscribe", "id": "1", "payload": {"query": "x", "variables": {"v": ' + "[" * 100_000
    deep += "]" * 100_000 + "}}}"
    transport_cases: list[tuple[str, str]] = [
        (deep, f"deeper than {limit}"),
        ("{not json", "invalid JSON"),
        ("[1, 2]", "JSON object"),
        ("42", "JSON object"),
        ('{"type": 5}', "JSON object"),
        ('{"type": "subscribe", "id": ["x"], "payload": {"query": "{ accounts { account } }"}}', "id"),
        ('{"type": "subscribe", "id": "1", "payload": "x"}', "query"),
        ('{"type": "subscribe", "id": "1", "payload": {"query": 5}}', "query"),
        ('{"type": "subscribe", "id": "1", "payload": {"query": "{ a }", "variables": [1]}}', "variables"),
        (
            '{"type": "subscribe", "id": "1", "payload": {"query": "{ a }", "operationName": 1}}',
            "operationName",
        ),
        ('{"type": "complete", "id": {"a": 1}}', "id"),
    ]
    legacy_cases: list[tuple[str, str]] = [
        ("[1]", "JSON object"),
        ('{"type": "start", "id": "1", "payload": 7}', "query"),
        ('{"type": "stop", "id": [1]}', "id"),
    ]
    with server_log() as log:
        for protocol, cases in (("graphql-transport-ws", transport_cases), ("graphql-ws", legacy_cases)):
            for text, words in cases:
                async with websockets.connect(server.ws_url, subprotocols=[protocol]) as ws:  # type: ignore[list-item]
                    await _init(ws, server.token)
                    await ws.send(text)
                    code, reason = await _closed(ws)
                assert code == 4400, (protocol, text[:60], code, reason)
                assert words in reason, (protocol, text[:60], reason)
        # A deep message before connection_init is refused alike.
        async with websockets.connect(server.ws_url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
            await ws.send(deep)
            code, reason = await _closed(ws)
        assert code == 4400 and "deeper than" in reason
    assert tracebacks(log) == []


def _event(n: int, data: dict[str, Any]) -> Event:
    return Event("messageSent", "acc", datetime.now(UTC), {**data, "n": n})


@pytest.mark.fault(
    "a websocket client that stops reading, with two subscriptions and max_ws_queued_events=50",
    "once 50 events wait for it over both, the connection is closed with 1013 and the reason",
)
async def test_a_connection_that_stops_reading_is_closed_as_too_slow(tmp_path: Path) -> None:
    async with run_server(tmp_path, max_ws_queued_events=50) as server:
        endpoint = server.app.state.graphql
        bus = server.runtime.bus
        # max_queue=1: the client library stops reading the socket after one unread message.
        async with websockets.connect(
            server.ws_url,
            subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
            max_queue=1,
            max_size=None,
            compression=None,  # compressed, the padding below would take no room in any buffer
        ) as ws:
            await _init(ws, server.token)
            for op in ("1", "2"):
                subscription = {"query": EVENTS_SUBSCRIPTION, "variables": {}}
                await ws.send(json.dumps({"id": op, "type": "subscribe", "payload": subscription}))
            await _until(lambda: bus.subscriber_count == 2)
            big = {"pad": "x" * 65536}  # one dict for every event: the server's memory is not the point
            published = 0
            with server_log() as log:
                while bus.subscriber_count and published < 2000:
                    bus.publish(_event(published, big))
                    published += 1
                    for _ in range(3):  # let the connection's writer run, as a real publisher would
                        await asyncio.sleep(0)
                assert bus.subscriber_count == 0, f"still subscribed after {published} events"
                await _until(lambda: endpoint.open_websockets == 0)
            assert tracebacks(log) == []
            # The client reads again: what was sent before, then the close frame with the reason.
            code, reason = await _closed(ws)
        assert code == 1013
        assert "fell 50 events behind over this connection" in reason
        assert published < 2000


# --- the PostgreSQL relay --------------------------------------------------------------------------


@asynccontextmanager
async def _relay(url: str, tmp_path: Path) -> AsyncIterator[EventRelay]:
    """One process's relay (its runtime, bus and PostgreSQL connections), with the smallest queue allowed."""
    settings = Settings(database_url=url, secret="s" * 32, data_dir=tmp_path, max_relay_queue=1000)
    rt = build_runtime(settings)
    rt.bus = EventBus()
    relay = EventRelay(rt)
    rt.wake = relay.attach(Wakers())
    await relay.start()
    try:
        yield relay
    finally:
        await relay.stop()
        await rt.db.dispose()


@asynccontextmanager
async def _payloads_locked(url: str) -> AsyncIterator[None]:
    """The event_payload table locked: a relay reading or writing a stored payload waits until the end."""
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        transaction = connection.transaction()
        await transaction.start()
        await connection.execute("LOCK TABLE event_payload IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            await transaction.rollback()
    finally:
        await connection.close()


def _notification(origin: str, events: list[Event]) -> str:
    return '{"o":' + json.dumps(origin) + ',"e":[' + ",".join(encode_event(e).decode() for e in events) + "]}"


async def _drain(sub: Subscription) -> BaseException | None:
    """Take what a subscription has queued; the exception that ended it, or None if it is still live."""
    while sub.pending or sub.ended is not None:
        try:
            if await asyncio.wait_for(sub.take(), 5) is None:
                return None
        except SubscriberTooSlow as exc:
            return exc
    return None


@pytest.mark.fault(
    "PostgreSQL relay: a burst of 1,100 events while this server is stuck reading a stored payload "
    "(max_relay_queue=1000)",
    "the relay queue stays within 1,000 events; subscribers that wanted dropped events are ended as too "
    "slow, others keep going",
)
async def test_relay_overflow_ends_subscribers_who_miss_events(pg_url: str, tmp_path: Path) -> None:
    async with _relay(pg_url, tmp_path) as relay:
        bus = relay.rt.bus
        wanting = bus.open(account="acc")
        elsewhere = bus.open(account="elsewhere")
        sender = await asyncpg.connect(asyncpg_dsn(pg_url))
        try:
            async with _payloads_locked(pg_url):
                # Another server's stored payload first: reading it waits for the lock, events pile up.
                await sender.execute("SELECT pg_notify($1, $2)", EVENTS_CHANNEL, '{"o":"other:1:x","p":1}')
                burst = [_notification("other:1:x", [_event(n, {})]) for n in range(1100)]
                await sender.execute(
                    "SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS t(c, p)",
                    [EVENTS_CHANNEL] * len(burst),
                    burst,
                )
                await _until(lambda: relay.dropped_events > 0)
                assert wanting.ended is not None and elsewhere.ended is None
            await _until(lambda: relay._incoming_events == 0)
        finally:
            await sender.close()
        assert relay.peak_queued <= 1000
        assert relay.dropped_events == 1100 - (relay.peak_queued - 1)
        assert isinstance(await _drain(wanting), SubscriberTooSlow)
        assert elsewhere.ended is None and bus.subscriber_count == 1
        bus.release(wanting)
        bus.release(elsewhere)


@pytest.mark.fault(
    "PostgreSQL relay: 1,500 events to send while PostgreSQL does not take them (max_relay_queue=1000)",
    "the oldest are dropped, and the other server's subscribers are told (ended as too slow), not left "
    "to miss them",
)
async def test_relay_events_a_sender_drops_end_other_servers_subscribers(pg_url: str, tmp_path: Path) -> None:
    async with _relay(pg_url, tmp_path / "a") as a, _relay(pg_url, tmp_path / "b") as b:
        listener = b.rt.bus.open()
        async with _payloads_locked(pg_url):
            # A stored payload first: A's sender waits for the lock while the rest piles up.
            a.rt.bus.publish(_event(0, {"pad": "x" * 10_000}))
            await _until(lambda: not a._outgoing)  # taken as a batch, now stuck in its transaction
            for n in range(1, 1501):
                a.rt.bus.publish(_event(n, {}))
            assert len(a._outgoing) <= 1000 and a._lost > 0
            assert listener.ended is None
        await _until(lambda: listener.ended is not None)  # B heard of the gap
        assert isinstance(await _drain(listener), SubscriberTooSlow)
        b.rt.bus.release(listener)
