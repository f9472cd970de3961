"""Live events over the websocket, from the process's EventBus."""
from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry

from gql_mail.events import ALL_EVENTS
from gql_mail.graphql.context import Info
from gql_mail.graphql.types import Event
from gql_mail.services.errors import BadInput


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Live events, optionally only of one account and/or only of the named event types."
    )
    async def events(
        self, info: Info, account: strawberry.ID | None = None, events: list[str] | None = None
    ) -> AsyncGenerator[Event, None]:
        if events is not None and (unknown := sorted(set(events) - ALL_EVENTS)):
            raise BadInput(f"unknown event(s) {', '.join(unknown)}", field="events")
        runtime = info.context.runtime
        async for event in runtime.bus.subscribe(str(account) if account else None, events):
            yield Event.from_bus(event)
