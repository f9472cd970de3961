"""Live events over the websocket, from the process's EventBus.

Most subscribers never reach this resolver: `fanout.py` serves the plain `events` subscription without
running the schema per subscriber. This is the general path (fragments, directives, anything unusual).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry

from gql_mail.events import SubscriberTooSlow, TokenRevoked
from gql_mail.graphql.context import Info
from gql_mail.graphql.types import Event
from gql_mail.graphql.ws_close import FORBIDDEN_CLOSE_CODE, TOO_SLOW_CLOSE_CODE, close_socket
from gql_mail.services.errors import Unauthenticated
from gql_mail.services.event_stream import event_stream


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Live events, optionally only of one account and/or only of the named event types."
    )
    async def events(
        self, info: Info, account: strawberry.ID | None = None, events: list[str] | None = None
    ) -> AsyncGenerator[Event, None]:
        context = info.context
        try:
            async for event in event_stream(
                context.runtime, context.principal, str(account) if account else None, events, context.queue
            ):
                yield Event.from_bus(event)
        except TokenRevoked:
            await close_socket(context.request, FORBIDDEN_CLOSE_CODE, "token revoked")
            raise Unauthenticated("the access token was revoked") from None
        except SubscriberTooSlow as exc:
            await close_socket(context.request, TOO_SLOW_CLOSE_CODE, str(exc))
            raise
