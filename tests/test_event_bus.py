"""The in-process event bus: what `Subscription.take()` returns, and how a subscription ends.

Bus-level tests on the real asyncio loop; no server. Waiting is on `take()` itself with a timeout.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from gql_mail.events import (
    ACCOUNT_CONNECTED,
    MAX_PENDING,
    MESSAGE_FAILED,
    MESSAGE_SENT,
    Event,
    EventBus,
    SubscriberTooSlow,
    Subscription,
    TokenRevoked,
)

START = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def event(n: int, name: str = MESSAGE_SENT, account: str | None = "acc") -> Event:
    return Event(name, account, START + timedelta(milliseconds=n), {"n": n})


def numbers(events: list[Event] | None) -> list[int]:
    assert events is not None
    return [e.data["n"] for e in events]


async def take(sub: Subscription) -> list[Event] | None:
    """`sub.take()`, which must answer within a second."""
    return await asyncio.wait_for(sub.take(), 1)


async def test_events_published_while_nobody_takes_come_back_together_in_order() -> None:
    bus = EventBus()
    sub = bus.open()
    try:
        for n in range(7):
            bus.publish(event(n))
        assert numbers(await take(sub)) == list(range(7))
        # They were all taken: the next take waits for the next publish.
        waiting = asyncio.create_task(sub.take())
        await asyncio.sleep(0)  # let it start waiting (nothing is awaited on the result here)
        assert not waiting.done()
        bus.publish(event(7))
        assert numbers(await asyncio.wait_for(waiting, 1)) == [7]
    finally:
        bus.release(sub)


async def test_a_waiting_take_wakes_for_an_event() -> None:
    bus = EventBus()
    sub = bus.open()
    waiting = asyncio.create_task(sub.take())
    await asyncio.sleep(0)
    bus.publish(event(1))
    assert numbers(await asyncio.wait_for(waiting, 1)) == [1]
    bus.release(sub)


async def test_a_heartbeat_subscription_without_events_returns_an_empty_batch() -> None:
    bus = EventBus()
    sub = bus.open(heartbeat=0.05)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await take(sub) == []
        assert loop.time() - started >= 0.04  # not before the heartbeat is due
        # It keeps beating, and events still come through between beats.
        assert await take(sub) == []
        bus.publish(event(1))
        assert numbers(await take(sub)) == [1]
        assert await take(sub) == []
    finally:
        bus.release(sub)


async def test_a_subscription_without_heartbeat_does_not_beat() -> None:
    bus = EventBus()
    sub = bus.open()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(sub.take(), 0.2)
    bus.release(sub)


async def test_a_subscriber_too_far_behind_gets_what_was_queued_then_is_ended() -> None:
    bus = EventBus()
    slow = bus.open()
    other = bus.open()
    assert bus.subscriber_count == 2
    for n in range(MAX_PENDING + 1):
        bus.publish(event(n))
        if n == MAX_PENDING - 1:
            assert numbers(await take(other)) == list(range(MAX_PENDING))  # `other` keeps up
    # The event that did not fit ended the slow subscription; the bus no longer counts it.
    assert bus.subscriber_count == 1
    assert numbers(await take(slow)) == list(range(MAX_PENDING))
    with pytest.raises(SubscriberTooSlow):
        await take(slow)
    # The subscriber that kept up is unaffected and got the last event too.
    assert numbers(await take(other)) == [MAX_PENDING]
    bus.publish(event(MAX_PENDING + 1))
    assert numbers(await take(other)) == [MAX_PENDING + 1]
    bus.release(slow)
    bus.release(other)
    assert bus.subscriber_count == 0


async def test_exactly_max_pending_queued_events_do_not_end_a_subscription() -> None:
    bus = EventBus()
    sub = bus.open()
    for n in range(MAX_PENDING):
        bus.publish(event(n))
    assert bus.subscriber_count == 1
    assert len(numbers(await take(sub))) == MAX_PENDING
    bus.publish(event(MAX_PENDING))
    assert numbers(await take(sub)) == [MAX_PENDING]
    bus.release(sub)


async def test_revoking_a_token_ends_its_subscriptions_and_drops_their_queued_events() -> None:
    bus = EventBus()
    queued = bus.open(token_id="t1")
    waiting_sub = bus.open(token_id="t1")
    kept = bus.open(token_id="t2")
    bus.publish(event(1))
    bus.publish(event(2))
    assert numbers(await take(waiting_sub)) == [1, 2]
    waiting = asyncio.create_task(waiting_sub.take())
    await asyncio.sleep(0)  # one loop turn: the take is now waiting for an event
    assert not waiting.done()

    bus.revoke("t1")
    assert bus.subscriber_count == 1
    with pytest.raises(TokenRevoked):
        await take(queued)  # events 1 and 2 were queued for it, and are not returned
    with pytest.raises(TokenRevoked):
        await asyncio.wait_for(waiting, 1)  # a take already waiting ends too
    # Nothing more reaches a revoked subscription; another token's is untouched.
    bus.publish(event(3))
    with pytest.raises(TokenRevoked):
        await take(queued)
    assert numbers(await take(kept)) == [1, 2, 3]
    for sub in (queued, waiting_sub, kept):
        bus.release(sub)
    assert bus.subscriber_count == 0


async def test_close_ends_every_subscription_with_none() -> None:
    bus = EventBus()
    idle = bus.open(account="idle")
    busy = bus.open(account="busy", heartbeat=0.05)
    waiting = asyncio.create_task(idle.take())
    await asyncio.sleep(0)  # one loop turn: the take is now waiting for an event
    assert not waiting.done()
    bus.publish(event(1, account="busy"))
    bus.close()
    assert bus.subscriber_count == 0
    assert await asyncio.wait_for(waiting, 1) is None  # a waiting take wakes up with None
    assert await take(idle) is None
    assert numbers(await take(busy)) == [1]  # what was queued before the close is still delivered
    assert await take(busy) is None  # and then None, not a heartbeat
    assert await take(busy) is None
    bus.publish(event(2, account="busy"))  # a closed bus reaches none of them
    assert await take(busy) is None


async def test_only_wanted_events_are_queued() -> None:
    bus = EventBus()
    by_account = bus.open(account="a")
    by_name = bus.open(events=[MESSAGE_FAILED, ACCOUNT_CONNECTED])
    both = bus.open(account="b", events=[MESSAGE_SENT])
    none_wanted = bus.open(events=[])
    everything = bus.open()
    published = [
        event(0, MESSAGE_SENT, "a"),
        event(1, MESSAGE_FAILED, "b"),
        event(2, MESSAGE_SENT, "b"),
        event(3, ACCOUNT_CONNECTED, None),
        event(4, MESSAGE_FAILED, "a"),
        event(5, MESSAGE_SENT, None),
    ]
    for e in published:
        bus.publish(e)
    assert numbers(await take(by_account)) == [0, 4]
    assert numbers(await take(by_name)) == [1, 3, 4]
    assert numbers(await take(both)) == [2]
    assert numbers(await take(everything)) == [0, 1, 2, 3, 4, 5]
    assert list(none_wanted.pending) == []
    assert list(by_account.pending) == []  # nothing else was queued
    for sub in (by_account, by_name, both, none_wanted, everything):
        bus.release(sub)


async def test_listeners_see_published_events_but_not_relayed_ones() -> None:
    bus = EventBus()
    relayed: list[int] = []
    bus.add_listener(lambda e: relayed.append(e.data["n"]))
    sub = bus.open()
    bus.publish(event(1))
    bus.publish_local(event(2))
    assert relayed == [1]
    assert numbers(await take(sub)) == [1, 2]
    bus.release(sub)


async def test_until_subscribers_wakes_on_every_change_of_the_count() -> None:
    bus = EventBus()
    await asyncio.wait_for(bus.until_subscribers(lambda n: n == 0), 0.2)  # already true: no wait

    two = asyncio.ensure_future(bus.until_subscribers(lambda n: n >= 2))
    first = bus.open()
    await asyncio.sleep(0)
    assert not two.done(), "one subscriber is not two"
    second = bus.open()
    await asyncio.wait_for(two, 1)

    none_left = asyncio.ensure_future(bus.until_subscribers(lambda n: n == 0))
    bus.release(first)
    await asyncio.sleep(0)
    assert not none_left.done()
    bus.close()
    await asyncio.wait_for(none_left, 1)
    assert bus.subscriber_count == 0
    bus.release(second)  # releasing an already closed subscription changes nothing


async def test_a_cancelled_wait_for_subscribers_leaves_nothing_behind() -> None:
    bus = EventBus()
    waiting = asyncio.ensure_future(bus.until_subscribers(lambda n: n > 0))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert bus._count_waiters == []
