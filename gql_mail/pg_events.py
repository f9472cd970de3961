"""One event stream and one wake-up signal across many gql-mail processes, over PostgreSQL LISTEN/NOTIFY.

Every process has an in-memory `EventBus`. On PostgreSQL, an `EventRelay` joins the buses of all
processes that share the database:

    process A                                   PostgreSQL                      process B
    commit ─► bus.publish ─► relay (batches) ─► NOTIFY gql_mail_events ─► relay ─► bus.publish_local
    submit ─► rt.wake.delivery ─► relay ──────► NOTIFY gql_mail_wake ───► relay ─► delivery worker wakes

- Payload: JSON `{"o": origin, "e": [event, …]}`; several events share one notification up to
  `MAX_NOTIFY_BYTES` (PostgreSQL refuses payloads of 8,000 bytes or more). An event that alone is larger is
  stored in the `event_payload` table in the same transaction as the NOTIFY, which then carries only
  `{"o": origin, "p": id}`; the receivers read the row. Rows are deleted after `PAYLOAD_TTL_SECONDS`.
- Every process hears its own notifications too; `origin` (host, pid, random) tells them apart, so a
  relayed event is published locally once and never relayed back (`EventBus.publish_local`).
- Wake-ups (`gql_mail_wake`, payload kind `delivery` or `webhooks`) make a submission on A start an idle
  worker on B at once instead of at its next poll. Polling stays as the fallback, so a lost wake-up only
  costs up to one poll interval.

Why NOTIFY after the commit, from the relay's own connection, and not `pg_notify` inside each unit of work:
- Cost: a transaction that has issued NOTIFY takes a cluster-wide lock at commit to queue its
  notifications, so every notifying commit of every process is serialised. Delivery records outcomes in
  many small transactions; sending their events from one relay connection in batches (one statement,
  many notifications, and up to ~40 events per notification) keeps those commits independent and the
  notifying commits few.
- Guarantees: live subscriptions are best-effort by design (a slow subscriber is dropped; a reconnecting
  one misses what happened meanwhile). The durable path is the webhook outbox, whose rows are written in
  the unit of work's own transaction. The relay only ever sends events that are already committed, as
  the local bus does; a crash between the commit and the NOTIFY loses the live copy for other processes
  exactly as it loses it for this process's own subscribers.
- Connection loss: both connections reconnect with backoff. After the listening connection comes back,
  the local workers are woken once, because a wake-up may have been missed while it was down.
- Bounded: at most `max_relay_queue` events wait in each direction. Received events wait to be published
  here (stored payloads are read one by one, so a burst can outrun them); past the bound a notification
  is dropped and every local subscription that wanted one of its events is ended as too slow, so no
  subscriber misses an event without being told. Events to send pile up only while PostgreSQL is
  unreachable; past the bound the oldest are dropped, and the next notification sent says so (`"g"`),
  which ends the subscriptions of every other process as too slow. Wake-ups never queue: they are a set
  of kinds, sent once per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from datetime import datetime, timedelta
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import orjson
from sqlalchemy.engine import make_url

from gql_mail.events import Event, SubscriberTooSlow
from gql_mail.models import EventPayload
from gql_mail.runtime import Runtime, Wakers

log = logging.getLogger(__name__)

EVENTS_CHANNEL = "gql_mail_events"
WAKE_CHANNEL = "gql_mail_wake"
# PostgreSQL's limit is "shorter than 8000 bytes"; leave room for the envelope and the origin.
MAX_NOTIFY_BYTES = 7500
PAYLOAD_TTL_SECONDS = 600.0
WAKE_KINDS = ("delivery", "webhooks")

_NOTIFY_MANY = "SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS t(c, p)"
_CONNECTION_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


def asyncpg_dsn(database_url: str) -> str:
    """The SQLAlchemy URL (`postgresql+asyncpg://…`) as a DSN raw asyncpg accepts."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


def encode_event(event: Event) -> bytes:
    """An event as JSON; the date keeps microseconds so a relayed event is equal to the original."""
    value = {"n": event.event, "a": event.account, "t": event.date.isoformat(), "d": event.data}
    return orjson.dumps({**value, "k": event.order_key})


def decode_event(value: dict[str, Any]) -> Event:
    return Event(
        event=value["n"],
        account=value["a"],
        date=datetime.fromisoformat(value["t"]),
        data=value["d"],
        order_key=value.get("k", ""),
    )


def pack(origin: str, encoded: list[bytes], limit: int = MAX_NOTIFY_BYTES) -> tuple[list[str], list[bytes]]:
    """Group encoded events into as few notification payloads as fit under `limit` bytes, in order.

    Returns the payloads and, separately, the events too large for any notification; the caller stores
    those and sends their ids. Order between the two kinds is not kept (only oversized events, which are
    rare, can overtake or be overtaken)."""
    head = b'{"o":' + orjson.dumps(origin) + b',"e":['
    tail = b"]}"
    payloads: list[str] = []
    oversized: list[bytes] = []
    current: list[bytes] = []
    size = len(head) + len(tail)
    for item in encoded:
        if len(head) + len(item) + len(tail) > limit:
            oversized.append(item)
            continue
        if current and size + 1 + len(item) > limit:
            payloads.append((head + b",".join(current) + tail).decode())
            current, size = [], len(head) + len(tail)
        size += len(item) + (1 if current else 0)
        current.append(item)
    if current:
        payloads.append((head + b",".join(current) + tail).decode())
    return payloads, oversized


class EventRelay:
    """Relays this process's events and wake-ups to every other process on the same PostgreSQL database,
    and theirs to this one. Created by the app's lifespan only when the database is PostgreSQL."""

    def __init__(
        self, rt: Runtime, *, reconnect_seconds: float = 1.0, keepalive_seconds: float = 10.0
    ) -> None:
        self.rt = rt
        self.origin = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._own_prefix = '{"o":' + orjson.dumps(self.origin).decode() + ","
        self._dsn = asyncpg_dsn(rt.settings.database_url)
        self._reconnect_seconds = reconnect_seconds
        self._keepalive_seconds = keepalive_seconds
        self._max_queue = rt.settings.max_relay_queue
        self._outgoing: list[bytes] = []
        self._lost = 0  # events dropped from `_outgoing` that no other process has been told of yet
        self._wakes: set[str] = set()
        self._send_wanted = asyncio.Event()
        self._incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._incoming_events = 0  # events in `_incoming` (a stored payload counts as one)
        self._overflowing = False  # warned about an overflow that has not drained yet
        self._listening = asyncio.Event()
        self._local = Wakers()
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        self._last_cleanup: datetime | None = None
        self.sent_notifications = 0
        self.received_events = 0
        # Received events dropped because `max_relay_queue` were already waiting, and the most that waited.
        self.dropped_events = 0
        self.peak_queued = 0

    # --- wiring -------------------------------------------------------------------------------------

    def attach(self, local: Wakers) -> Wakers:
        """Given this process's wake-up hooks, return hooks that also wake the other processes; wake-ups
        that arrive from them call `local` only."""
        self._local = local

        def delivery() -> None:
            local.delivery()
            self._broadcast_wake("delivery")

        def webhooks() -> None:
            local.webhooks()
            self._broadcast_wake("webhooks")

        # A Sent copy is woken only here: the process that recorded `sent` has a copier; others poll.
        return Wakers(
            delivery=delivery,
            webhooks=webhooks,
            account_check=local.account_check,
            sent_copy=local.sent_copy,
        )

    def detach(self) -> None:
        self._local = Wakers()

    async def start(self, *, connect_timeout: float = 10.0) -> None:
        """Start relaying; returns once this process is listening, so a subscriber served right after
        startup already hears the other processes (or after `connect_timeout`, reconnecting meanwhile)."""
        self._running = True
        self.rt.bus.add_listener(self._on_local_event)
        self._tasks = [
            asyncio.create_task(self._listen_loop(), name="relay:listen"),
            asyncio.create_task(self._consume_loop(), name="relay:consume"),
            asyncio.create_task(self._send_loop(), name="relay:send"),
        ]
        try:
            await asyncio.wait_for(self._listening.wait(), connect_timeout)
        except TimeoutError:
            log.warning("event relay: not listening after %.0f s; it keeps trying", connect_timeout)

    async def stop(self, *, flush_timeout: float = 2.0) -> None:
        """Send what is still queued (briefly), then close the connections."""
        self._running = False
        self.detach()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(flush_timeout):
                while self._outgoing or self._wakes:
                    self._send_wanted.set()
                    await asyncio.sleep(0.01)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    # --- outgoing -----------------------------------------------------------------------------------

    def _on_local_event(self, event: Event) -> None:
        """EventBus listener: called for every event this process publishes (after its commit)."""
        if not self._running:
            return
        if len(self._outgoing) >= self._max_queue:
            drop = max(1, self._max_queue // 10)
            log.warning(
                "event relay: %d events not yet sent; dropping the oldest %d (other processes' subscribers "
                "will be ended as too slow)",
                len(self._outgoing),
                drop,
            )
            del self._outgoing[:drop]
            self._lost += drop
        self._outgoing.append(encode_event(event))
        self._send_wanted.set()

    def _broadcast_wake(self, kind: str) -> None:
        if self._running:
            self._wakes.add(kind)
            self._send_wanted.set()

    async def _send_loop(self) -> None:
        connection: asyncpg.Connection | None = None
        try:
            while True:
                await self._send_wanted.wait()
                self._send_wanted.clear()
                while self._outgoing or self._wakes:
                    # Take a batch first: events published while it is being sent go in the next one.
                    batch, self._outgoing = self._outgoing[:2000], self._outgoing[2000:]
                    wakes, self._wakes = self._wakes, set()
                    lost, self._lost = self._lost, 0
                    try:
                        if connection is None or connection.is_closed():
                            connection = await asyncpg.connect(self._dsn, timeout=10)
                        await self._send(connection, batch, wakes, lost)
                    except _CONNECTION_ERRORS as exc:
                        log.warning("event relay: sending failed (%s); retrying", exc)
                        self._outgoing[:0] = batch
                        self._wakes |= wakes
                        self._lost += lost
                        if connection is not None:
                            connection.terminate()
                            connection = None
                        await asyncio.sleep(self._reconnect_seconds)
                await self._cleanup(connection)
        finally:
            if connection is not None:
                connection.terminate()

    async def _send(
        self, connection: asyncpg.Connection, batch: list[bytes], wakes: set[str], lost: int = 0
    ) -> None:
        payloads, oversized = pack(self.origin, batch)
        if lost:  # before the events that followed the lost ones
            payloads.insert(0, self._own_prefix + f'"g":{lost}}}')
        channels = [EVENTS_CHANNEL] * len(payloads)
        now = self.rt.clock.now()
        # One transaction: stored payload rows become visible exactly when their notifications go out.
        async with connection.transaction():
            if oversized:
                ids = await connection.fetch(
                    "INSERT INTO event_payload (body, created_at) SELECT b, $2 FROM unnest($1::bytea[]) AS b "
                    "RETURNING id",
                    oversized,
                    now,
                )
                for row in ids:
                    channels.append(EVENTS_CHANNEL)
                    payloads.append(self._own_prefix + f'"p":{int(row["id"])}}}')
            for kind in sorted(wakes):
                channels.append(WAKE_CHANNEL)
                payloads.append(self._own_prefix + '"k":' + orjson.dumps(kind).decode() + "}")
            if payloads:
                await connection.execute(_NOTIFY_MANY, channels, payloads)
        self.sent_notifications += len(payloads)

    async def _cleanup(self, connection: asyncpg.Connection | None) -> None:
        """Delete stored payloads old enough that every listener has read them (any process may)."""
        now = self.rt.clock.now()
        if connection is None or (
            self._last_cleanup is not None and now - self._last_cleanup < timedelta(seconds=60)
        ):
            return
        self._last_cleanup = now
        try:
            cutoff = now - timedelta(seconds=PAYLOAD_TTL_SECONDS)
            await connection.execute("DELETE FROM event_payload WHERE created_at < $1", cutoff)
        except _CONNECTION_ERRORS as exc:
            log.warning("event relay: cleaning up stored payloads failed: %s", exc)

    # --- incoming -----------------------------------------------------------------------------------

    def _on_notification(self, _connection: Any, _pid: int, channel: str, payload: str) -> None:
        if payload.startswith(self._own_prefix):
            return  # our own, already published here
        try:
            message = orjson.loads(payload)
        except orjson.JSONDecodeError:
            log.warning("event relay: ignoring a malformed notification on %s", channel)
            return
        if channel == WAKE_CHANNEL:
            self._wake_local(message.get("k", ""))
            return
        count = _event_count(message)
        if self._incoming_events + count > self._max_queue:
            self._drop(message, count)
            return
        self._incoming_events += count
        self.peak_queued = max(self.peak_queued, self._incoming_events)
        self._incoming.put_nowait(message)

    def _drop(self, message: dict[str, Any], count: int) -> None:
        """A notification that does not fit: its events are lost here, so the local subscriptions that
        wanted any of them end as too slow (all of them when the events are unknown: a stored payload)."""
        self.dropped_events += count
        values = message.get("e")
        missed = [decode_event(v) for v in values] if isinstance(values, list) else None
        reason = SubscriberTooSlow(
            f"this server fell {self._max_queue} events behind the other servers; subscribe again"
        )
        ended = self.rt.bus.end_lagging(missed, reason)
        if not self._overflowing:
            self._overflowing = True
            log.warning(
                "event relay: %d received events wait to be published; dropping more (ended %d "
                "subscriptions that wanted them)",
                self._incoming_events,
                ended,
            )

    def _wanted(self, _connection: Any, _pid: int, channel: str, payload: str) -> None:
        """The notification callback: events are decoded only if someone here is subscribed (a node
        nobody watches pays next to nothing for the others' events); wake-ups always count."""
        if channel == EVENTS_CHANNEL and self.rt.bus.subscriber_count == 0:
            return
        self._on_notification(_connection, _pid, channel, payload)

    def _wake_local(self, kind: str) -> None:
        if kind == "delivery":
            self._local.delivery()
        elif kind == "webhooks":
            self._local.webhooks()

    async def _listen_loop(self) -> None:
        first = True
        while True:
            connection: asyncpg.Connection | None = None
            try:
                connection = await asyncpg.connect(self._dsn, timeout=10)
                lost = asyncio.Event()
                connection.add_termination_listener(lambda _c, lost=lost: lost.set())
                await connection.add_listener(EVENTS_CHANNEL, self._wanted)
                await connection.add_listener(WAKE_CHANNEL, self._wanted)
                self._listening.set()
                if not first:
                    log.info("event relay: listening again")
                    for kind in WAKE_KINDS:  # a wake-up may have been missed while we were away
                        self._wake_local(kind)
                first = False
                # A dead TCP connection is only noticed on traffic: ping now and then.
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), self._keepalive_seconds)
                    if not lost.is_set():
                        await asyncio.wait_for(connection.execute("SELECT 1"), self._keepalive_seconds)
                log.warning("event relay: lost the listening connection; reconnecting")
            except _CONNECTION_ERRORS as exc:
                log.warning("event relay: cannot listen (%s); retrying", exc)
            finally:
                self._listening.clear()
                if connection is not None:
                    connection.terminate()
            await asyncio.sleep(self._reconnect_seconds)

    async def _consume_loop(self) -> None:
        """Publish received events locally, in the order they were notified."""
        while True:
            message = await self._incoming.get()
            try:
                if "g" in message:
                    self._sender_lost(int(message["g"]))
                    continue
                if "e" in message:
                    values: list[dict[str, Any]] = message["e"]
                else:
                    values = await self._read_stored(int(message["p"]))
                for value in values:
                    self.received_events += 1
                    self.rt.bus.publish_local(decode_event(value))
            except Exception:
                log.exception("event relay: could not publish a relayed event")
            finally:
                self._incoming_events -= _event_count(message)
                if self._overflowing and self._incoming_events <= self._max_queue // 2:
                    self._overflowing = False
                    log.info("event relay: caught up with the other servers' events")

    def _sender_lost(self, count: int) -> None:
        """Another process dropped events it could not send: whoever subscribes here may have missed them."""
        ended = self.rt.bus.end_lagging(
            None, SubscriberTooSlow("another server lost events it could not relay; subscribe again")
        )
        log.warning(
            "event relay: another server dropped %d unsent events; ended %d subscriptions", count, ended
        )

    async def _read_stored(self, payload_id: int) -> list[dict[str, Any]]:
        async with self.rt.db.read() as session:
            row = await session.get(EventPayload, payload_id)
        if row is None:
            log.warning("event relay: stored event %d is gone (kept %.0f s)", payload_id, PAYLOAD_TTL_SECONDS)
            return []
        return [orjson.loads(row.body)]


def _event_count(message: dict[str, Any]) -> int:
    """How many events a notification carries (a stored payload is one; a gap notice none)."""
    values = message.get("e")
    if isinstance(values, list):
        return len(values)
    return 1 if "p" in message else 0


def relay_for(rt: Runtime) -> EventRelay | None:
    """The relay this runtime needs: one on PostgreSQL, none on SQLite (a single process by nature)."""
    return None if rt.db.is_sqlite else EventRelay(rt)


__all__ = [
    "EVENTS_CHANNEL",
    "MAX_NOTIFY_BYTES",
    "WAKE_CHANNEL",
    "EventRelay",
    "asyncpg_dsn",
    "decode_event",
    "encode_event",
    "pack",
    "relay_for",
]
