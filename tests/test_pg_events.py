"""The PostgreSQL event relay: packing (pure), and two relays on one real database (whenever PostgreSQL is
reachable), standing in for two processes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

from gql_mail.app import build_runtime
from gql_mail.config import Settings
from gql_mail.events import Event, EventBus
from gql_mail.pg_events import MAX_NOTIFY_BYTES, EventRelay, asyncpg_dsn, decode_event, encode_event, pack
from gql_mail.runtime import Runtime, Wakers


def _event(n: int, size: int = 10) -> Event:
    date = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    return Event("messageSent", "acc", date, {"n": n, "x": "y" * size})


def test_event_round_trips_through_json() -> None:
    event = _event(1)
    assert decode_event(orjson.loads(encode_event(event))) == event


def test_pack_keeps_order_and_limit_and_sets_aside_oversized() -> None:
    events = [encode_event(_event(i, size=300)) for i in range(100)]
    big = encode_event(_event(1000, size=MAX_NOTIFY_BYTES))
    payloads, oversized = pack("host:1:abc", [*events[:50], big, *events[50:]])
    assert oversized == [big]
    assert all(len(p.encode()) <= MAX_NOTIFY_BYTES for p in payloads)
    assert len(payloads) < 10
    decoded = [e for p in payloads for e in orjson.loads(p)["e"]]
    assert [e["d"]["n"] for e in decoded] == list(range(100))
    assert {orjson.loads(p)["o"] for p in payloads} == {"host:1:abc"}


def test_asyncpg_dsn_drops_the_driver() -> None:
    assert asyncpg_dsn("postgresql+asyncpg://u:p@h:5432/db") == "postgresql://u:p@h:5432/db"


@dataclass
class Node:
    rt: Runtime
    relay: EventRelay
    woken: list[str]


async def _node(url: str, tmp_path: Path) -> Node:
    rt = build_runtime(Settings(database_url=url, secret="s" * 32, data_dir=tmp_path))
    rt.bus = EventBus()
    relay = EventRelay(rt)
    woken: list[str] = []
    local = Wakers(delivery=lambda: woken.append("delivery"), webhooks=lambda: woken.append("webhooks"))
    rt.wake = relay.attach(local)
    await relay.start()
    return Node(rt, relay, woken)


async def _stop(*nodes: Node) -> None:
    for node in nodes:
        await node.relay.stop()
        await node.rt.db.dispose()


async def _collect(bus: EventBus, n: int, timeout: float = 10.0) -> list[Event]:  # noqa: ASYNC109
    out: list[Event] = []
    sub = bus.open()
    try:
        async with asyncio.timeout(timeout):
            while len(out) < n and (batch := await sub.take()) is not None:
                out.extend(batch)
    finally:
        bus.release(sub)
    return out[:n]  # as the subscriber that stops after n would have seen


async def test_events_and_wakeups_cross_processes_once(pg_url: str, tmp_path: Path) -> None:
    a, b = await _node(pg_url, tmp_path / "a"), await _node(pg_url, tmp_path / "b")
    try:
        on_a = asyncio.create_task(_collect(a.rt.bus, 502))
        on_b = asyncio.create_task(_collect(b.rt.bus, 502))
        await asyncio.sleep(0.05)  # both subscriptions registered
        events = [_event(i) for i in range(500)]
        big = _event(500, size=20_000)  # over the NOTIFY limit: relayed through event_payload
        events += [big, _event(501)]
        for event in events:
            a.rt.bus.publish(event)
        got = await on_b
        # Same events, and in order, except that an oversized one may be overtaken (see `pack`).
        assert sorted(got, key=lambda e: e.data["n"]) == events
        assert [e for e in got if e is not big and e != big] == [e for e in events if e != big]
        # A's own subscribers saw each event once: relayed copies of its own events are ignored.
        assert await on_a == events
        await asyncio.sleep(0.2)
        assert a.relay.received_events == 0

        a.rt.wake.delivery()
        async with asyncio.timeout(5):
            while "delivery" not in b.woken:  # noqa: ASYNC110 (a plain list the relay appends to)
                await asyncio.sleep(0.01)
        assert a.woken == ["delivery"]  # locally, once; not again through PostgreSQL
    finally:
        await _stop(a, b)


async def test_listener_reconnects_after_its_connection_is_killed(pg_url: str, tmp_path: Path) -> None:
    a, b = await _node(pg_url, tmp_path / "a"), await _node(pg_url, tmp_path / "b")
    b.relay._reconnect_seconds = 0.1
    try:
        import asyncpg  # type: ignore[import-untyped]

        admin = await asyncpg.connect(asyncpg_dsn(pg_url))
        try:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await admin.close()
        assert killed >= 2
        async with asyncio.timeout(10):
            # Back to listening, and the local workers were woken in case a wake-up was missed.
            while not ("delivery" in b.woken and b.relay._listening.is_set()):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        on_b = asyncio.create_task(_collect(b.rt.bus, 1))
        await asyncio.sleep(0.05)
        a.rt.bus.publish(_event(7))  # A's sender reconnects too
        assert [e.data["n"] for e in await on_b] == [7]
    finally:
        await _stop(a, b)
