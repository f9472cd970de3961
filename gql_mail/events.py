"""Events: defined once, published once, seen by live subscribers and by webhooks alike.

A unit of work collects events while it changes rows; on commit they are written as webhook_delivery rows
in the same transaction (the transactional outbox) and, after the commit, handed to `EventBus.publish`,
which fans them out to the GraphQL subscriptions of this process. `EventBus` is in-memory; a relay for
several processes plugs in through `add_listener`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
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
# A throttling reply paused the account (services/pacing.py): { account, until, reason, dailyQuota, pause }.
ACCOUNT_THROTTLED = "accountThrottled"

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
        ACCOUNT_THROTTLED,
    }
)


@lru_cache(maxsize=256)
def iso(value: datetime) -> str:
    """EmailEngine's date format: UTC, milliseconds, a Z. Cached: a batch of outcomes shares one time, and
    each of its events is formatted for its subscribers and again for its webhooks."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds")[:23] + "Z"


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
    # Whole websocket messages (text and frame) per (selection shape, operation id), from `wire`
    # (graphql/fanout.py).
    frames: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

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


class SubscriberTooSlow(Exception):
    """A subscriber fell `MAX_PENDING` events behind: its subscription ends (it may subscribe again)
    rather than hold the server's memory or make the publisher wait."""


MAX_PENDING = 10_000
_CLOSED = object()  # the bus ended the subscription (shutdown)


@dataclass(eq=False)
class QueueBudget:
    """Events queued for one consumer (a websocket connection) over all of its subscriptions.

    One connection with twenty subscriptions could otherwise hold twenty times `MAX_PENDING`. Past `limit`
    the subscription that would queue one more ends as too slow, and `on_overflow` is told once: a reader
    blocked on a full socket never comes back to take its subscription's end, so the connection must be
    closed from outside."""

    limit: int
    on_overflow: Callable[[SubscriberTooSlow], None] | None = None
    queued: int = 0
    overflowed: bool = False

    def overflow(self) -> SubscriberTooSlow:
        exc = SubscriberTooSlow(f"fell {self.limit} events behind over this connection; subscribe again")
        if not self.overflowed:
            self.overflowed = True
            if self.on_overflow is not None:
                self.on_overflow(exc)
        return exc


@dataclass(eq=False)
class Subscription:
    """One live subscriber.

    Events wait in a deque and the consumer takes all of them at each wake-up (`take`). Per event and per
    subscriber this costs an append and, when the consumer sleeps, one future's result: with hundreds of
    subscribers, the queue-plus-timeout wait it replaced (a task and a timer for every event) was a large
    part of the server's CPU. The heartbeat is one timer per subscriber that re-arms itself only when it
    fires, not one per wait.
    """

    account: str | None
    events: frozenset[str] | None
    token_id: str | None = None
    heartbeat: float | None = None
    budget: QueueBudget | None = None
    pending: deque[Event] = field(default_factory=deque)
    # Why the subscription ended (TokenRevoked, SubscriberTooSlow, _CLOSED), once it has.
    ended: object | None = None
    _waiter: asyncio.Future[None] | None = None
    _beat: bool = False
    _last_taken: float = 0.0
    _timer: asyncio.TimerHandle | None = None

    def wants(self, event: Event) -> bool:
        return (self.account is None or event.account == self.account) and (
            self.events is None or event.event in self.events
        )

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def push(self, event: Event) -> bool:
        """Queue an event; False when the subscriber is too far behind (it has been ended)."""
        budget = self.budget
        if len(self.pending) >= MAX_PENDING:
            self.end(SubscriberTooSlow(f"fell {MAX_PENDING} events behind; subscribe again"))
            return False
        if budget is not None:
            if budget.queued >= budget.limit:
                self.end(budget.overflow())
                return False
            budget.queued += 1
        self.pending.append(event)
        self._wake()
        return True

    def drop_pending(self) -> None:
        """Forget the queued events (the subscriber will not take them), giving back their budget."""
        if self.budget is not None:
            self.budget.queued -= len(self.pending)
        self.pending.clear()

    def end(self, reason: object) -> None:
        """End the subscription once the events already queued are taken."""
        if self.ended is None:
            self.ended = reason
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wake()

    def start_heartbeat(self) -> None:
        if self.heartbeat is not None:
            loop = asyncio.get_running_loop()
            self._last_taken = loop.time()
            self._timer = loop.call_later(self.heartbeat, self._on_timer)

    def _on_timer(self) -> None:
        assert self.heartbeat is not None
        loop = asyncio.get_running_loop()
        idle = loop.time() - self._last_taken
        if idle >= self.heartbeat:
            self._beat = True
            self._last_taken = loop.time()
            self._wake()
            idle = 0.0
        self._timer = loop.call_later(self.heartbeat - idle, self._on_timer)

    async def take(self) -> list[Event] | None:
        """Every queued event, oldest first, once there is one; [] after `heartbeat` seconds without any;
        None once the bus has closed. Raises TokenRevoked or SubscriberTooSlow when that ended it."""
        while True:
            if self.pending:
                batch = list(self.pending)
                self.pending.clear()
                if self.budget is not None:
                    self.budget.queued -= len(batch)
                if self.heartbeat is not None:
                    self._last_taken = asyncio.get_running_loop().time()
                return batch
            if self.ended is not None:
                if isinstance(self.ended, BaseException):
                    raise self.ended
                return None
            if self._beat:
                self._beat = False
                return []
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None


class EventBus:
    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()
        self._listeners: list[Callable[[Event], None]] = []
        self._count_waiters: list[asyncio.Future[None]] = []

    @property
    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    async def until_subscribers(self, enough: Callable[[int], bool]) -> None:
        """Return once the number of live subscriptions satisfies `enough`: for a client that must know
        its subscription is live before it causes the events it waits for (the tests do)."""
        while not enough(len(self._subscriptions)):
            waiter = asyncio.get_running_loop().create_future()
            self._count_waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._count_waiters:
                    self._count_waiters.remove(waiter)

    def _count_changed(self) -> None:
        waiters, self._count_waiters = self._count_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

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
        behind: list[Subscription] = []
        for sub in self._subscriptions:
            if sub.wants(event) and not sub.push(event):
                behind.append(sub)
        for sub in behind:
            log.warning("ended a subscription: %s", sub.ended)
            self._subscriptions.discard(sub)
        if behind:
            self._count_changed()

    def open(
        self,
        account: str | None = None,
        events: Collection[str] | None = None,
        *,
        token_id: str | None = None,
        heartbeat: float | None = None,
        budget: QueueBudget | None = None,
    ) -> Subscription:
        """A live subscription; `release` it when done. See `Subscription.take`. Subscriptions opened
        with one `budget` share its bound on queued events."""
        frozen = frozenset(events) if events is not None else None
        sub = Subscription(account, frozen, token_id, heartbeat, budget)
        sub.start_heartbeat()
        self._subscriptions.add(sub)
        self._count_changed()
        return sub

    def release(self, sub: Subscription) -> None:
        sub.end(_CLOSED)
        sub.drop_pending()
        self._subscriptions.discard(sub)
        self._count_changed()

    def end_lagging(self, missed: Collection[Event] | None, reason: SubscriberTooSlow) -> int:
        """End as too slow every subscription that would have received one of `missed` (None: any event),
        events this process lost (its PostgreSQL relay overflowed), so that no subscriber misses an event
        without being told; returns how many were ended."""
        ended = [s for s in self._subscriptions if missed is None or any(s.wants(e) for e in missed)]
        for sub in ended:
            self._subscriptions.discard(sub)
            sub.end(reason)
        if ended:
            self._count_changed()
        return len(ended)

    def revoke(self, token_id: str) -> None:
        """End every subscription opened with this token."""
        for sub in [s for s in self._subscriptions if s.token_id == token_id]:
            self._subscriptions.discard(sub)
            sub.drop_pending()  # nothing more reaches a revoked token, not even what was queued
            sub.end(TokenRevoked(token_id))
        self._count_changed()

    def close(self) -> None:
        """End every subscription (server shutdown)."""
        for sub in self._subscriptions:
            sub.end(_CLOSED)
        self._subscriptions.clear()
        self._count_changed()
