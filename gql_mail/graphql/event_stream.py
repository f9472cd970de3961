"""The events one subscriber may see, shared by the schema's `events` resolver and the fan-out fast path.

Filters by account and event names, ends the stream when the subscriber's token is revoked: at once for
revocations in this process (TokenRevoked from the bus), within `token_recheck_seconds` for revocations
made elsewhere (a re-check on the bus's heartbeat).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Collection

from gql_mail.events import ALL_EVENTS, Event, QueueBudget, TokenRevoked
from gql_mail.runtime import Runtime
from gql_mail.services.tokens import Principal, is_active
from gql_mail.services.validation import event_names


def check_event_names(events: Collection[str] | None) -> None:
    if events is not None:
        event_names(events, known=ALL_EVENTS)


async def event_batches(
    runtime: Runtime,
    principal: Principal | None,
    account: str | None,
    events: Collection[str] | None,
    budget: QueueBudget | None = None,
) -> AsyncIterator[list[Event]]:
    """The events in the order they were published, in batches of those that were waiting together (a
    subscriber that keeps up gets one at a time). Raises TokenRevoked when the subscriber's token stops
    being valid, SubscriberTooSlow when it fell too far behind (alone, or with the other subscriptions
    that share its `budget`)."""
    check_event_names(events)
    token_id = principal.token_id if principal else None
    recheck = runtime.settings.token_recheck_seconds
    checked = time.monotonic()
    sub = runtime.bus.open(account, events, token_id=token_id, heartbeat=recheck, budget=budget)
    try:
        while (batch := await sub.take()) is not None:
            if token_id is not None and time.monotonic() - checked >= recheck:
                if not await is_active(runtime, token_id):
                    raise TokenRevoked(token_id)
                checked = time.monotonic()
            if batch:
                yield batch
    finally:
        runtime.bus.release(sub)


async def event_stream(
    runtime: Runtime,
    principal: Principal | None,
    account: str | None,
    events: Collection[str] | None,
    budget: QueueBudget | None = None,
) -> AsyncIterator[Event]:
    """`event_batches`, one event at a time."""
    async for batch in event_batches(runtime, principal, account, events, budget):
        for event in batch:
            yield event
