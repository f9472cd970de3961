"""Events: defined once, published once, seen by live subscribers and by webhooks alike.

A unit of work collects events while it changes rows; on commit they are written as webhook_delivery rows
in the same transaction (the transactional outbox) and, after the commit, handed to `EventBus.publish`,
which fans them out to the GraphQL subscriptions of this process. `EventBus` is in-memory; a relay for
several processes plugs in through `add_listener`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

log = logging.getLogger(__name__)

MESSAGE_SENT = "messageSent"
MESSAGE_DELIVERY_ERROR = "messageDeliveryError"
MESSAGE_FAILED = "messageFailed"
MESSAGE_COPY_ERROR = "messageCopyError"
ACCOUNT_ADDED = "accountAdded"
ACCOUNT_DELETED = "accountDeleted"
ACCOUNT_CONNECTED = "accountConnected"
AUTHENTICATION_ERROR = "authenticationError"
CONNECT_ERROR = "connectError"

ALL_EVENTS = frozenset(
    {
        MESSAGE_SENT,
        MESSAGE_DELIVERY_ERROR,
        MESSAGE_FAILED,
        MESSAGE_COPY_ERROR,
        ACCOUNT_ADDED,
        ACCOUNT_DELETED,
        ACCOUNT_CONNECTED,
        AUTHENTICATION_ERROR,
        CONNECT_ERROR,
    }
)


def iso(value: datetime) -> str:
    """EmailEngine's date format: UTC, milliseconds, a Z."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class Event:
    event: str
    account: str | None
    date: datetime
    data: dict[str, Any]
    # Webhook deliveries with the same key reach a receiver in order (a message's events, an account's).
    order_key: str = ""
    # Serialised forms per subscription shape, so 500 subscribers cost one serialisation (graphql/fanout.py).
    wire: dict[Any, bytes] = field(default_factory=dict, compare=False, repr=False)

    def webhook_body(self, service_url: str) -> bytes:
        """The one place the JSON body is built (EmailEngine's shape)."""
        return orjson.dumps(
            {
                "serviceUrl": service_url,
                "account": self.account,
                "date": iso(self.date),
                "event": self.event,
                "data": self.data,
            }
        )


class TokenRevoked(Exception):
    """The token behind a subscription was revoked; the subscription ends at once."""


_REVOKED = object()


@dataclass(eq=False)
class Subscription:
    """One live subscriber: a bounded queue; a subscriber too slow to keep up is dropped, never waited for."""

    account: str | None
    events: frozenset[str] | None
    token_id: str | None = None
    queue: asyncio.Queue[Any] = field(default_factory=lambda: asyncio.Queue(maxsize=10_000))
    overflowed: bool = False

    def wants(self, event: Event) -> bool:
        return (self.account is None or event.account == self.account) and (
            self.events is None or event.event in self.events
        )


class EventBus:
    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()
        self._listeners: list[Callable[[Event], None]] = []

    @property
    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    def add_listener(self, listener: Callable[[Event], None]) -> None:
        self._listeners.append(listener)

    def publish(self, event: Event) -> None:
        """Hand an event to every live subscriber of this process and to the listeners (a relay to
        other processes); never blocks."""
        self.publish_local(event)
        for listener in self._listeners:
            listener(event)

    def publish_local(self, event: Event) -> None:
        """Hand an event to this process's subscribers only: for events relayed from another process,
        which must not be relayed back."""
        for sub in list(self._subscriptions):
            if not sub.wants(event):
                continue
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                log.warning("dropping a subscriber that fell 10,000 events behind")
                sub.overflowed = True
                self._subscriptions.discard(sub)

    async def subscribe(
        self,
        account: str | None = None,
        events: Collection[str] | None = None,
        *,
        token_id: str | None = None,
        heartbeat: float | None = None,
    ) -> AsyncIterator[Event | None]:
        """Events as they are published; None every `heartbeat` seconds of silence, so the consumer can
        re-check things (its token) without an event. Raises TokenRevoked after `revoke(token_id)`."""
        sub = Subscription(account, frozenset(events) if events is not None else None, token_id)
        self._subscriptions.add(sub)
        try:
            while True:
                if not sub.queue.empty():
                    item = sub.queue.get_nowait()  # the common case under load: no timer, no task
                else:
                    try:
                        item = await asyncio.wait_for(sub.queue.get(), heartbeat)
                    except TimeoutError:
                        yield None
                        continue
                if item is None:
                    return
                if item is _REVOKED:
                    raise TokenRevoked(token_id)
                yield item
        finally:
            self._subscriptions.discard(sub)

    def revoke(self, token_id: str) -> None:
        """End every subscription opened with this token."""
        for sub in list(self._subscriptions):
            if sub.token_id == token_id:
                self._subscriptions.discard(sub)
                try:
                    sub.queue.put_nowait(_REVOKED)
                except asyncio.QueueFull:
                    sub.queue.get_nowait()
                    sub.queue.put_nowait(_REVOKED)

    def close(self) -> None:
        """End every subscription (server shutdown)."""
        for sub in list(self._subscriptions):
            try:
                sub.queue.put_nowait(None)
            except asyncio.QueueFull:
                pass
        self._subscriptions.clear()
