"""The events one subscriber may see, for any front door that streams them (the GraphQL `events`
subscription and its fan-out fast path today).

Filters by account and event names (checked by `validation.event_names`, the one rule for them), ends the
stream when the subscriber's token is revoked: at once for revocations in this process (TokenRevoked
from the bus), within `token_recheck_seconds` for revocations made elsewhere (`TokenRecheck`, on the
bus's heartbeat).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection

from gql_mail.events import Event, QueueBudget
from gql_mail.runtime import Runtime
from gql_mail.services.token_policy import TokenRecheck
from gql_mail.services.tokens import Principal
from gql_mail.services.validation import event_names


async def event_batches(
    runtime: Runtime,
    principal: Principal | None,
    account: str | None,
    events: Collection[str] | None,
    budget: QueueBudget | None = None,
) -> AsyncIterator[list[Event]]:
    """The events in the order they were published, in batches of those that were waiting together (a
    subscriber that keeps up gets one at a time). Raises BadInput for unknown event names, TokenRevoked
    when the subscriber's token stops being valid, SubscriberTooSlow when it fell too far behind (alone,
    or with the other subscriptions that share its `budget`)."""
    if events is not None:
        event_names(events)
    recheck = TokenRecheck(runtime, principal)
    token_id = principal.token_id if principal else None
    sub = runtime.bus.open(account, events, token_id=token_id, heartbeat=recheck.every, budget=budget)
    try:
        while (batch := await sub.take()) is not None:
            await recheck.check()
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
