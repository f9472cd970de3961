"""Live events over the websocket, from the process's EventBus."""
from __future__ import annotations

import time
from collections.abc import AsyncGenerator

import strawberry
from starlette.websockets import WebSocket

from gql_mail.events import ALL_EVENTS, TokenRevoked
from gql_mail.graphql.context import Info
from gql_mail.graphql.types import Event
from gql_mail.services.errors import BadInput, Unauthenticated
from gql_mail.services.tokens import is_active


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
        principal = info.context.principal
        token_id = principal.token_id if principal else None
        recheck = runtime.settings.token_recheck_seconds
        checked = time.monotonic()
        try:
            async for event in runtime.bus.subscribe(
                str(account) if account else None, events, token_id=token_id, heartbeat=recheck
            ):
                if token_id is not None and time.monotonic() - checked >= recheck:
                    # Revoked in another process (this process's revocations arrive as TokenRevoked).
                    if not await is_active(runtime, token_id):
                        raise TokenRevoked(token_id)
                    checked = time.monotonic()
                if event is not None:
                    yield Event.from_bus(event)
        except TokenRevoked:
            await _close(info, 4403, "token revoked")
            raise Unauthenticated("the access token was revoked") from None


async def _close(info: Info, code: int, reason: str) -> None:
    socket = info.context.request
    if isinstance(socket, WebSocket):
        try:
            await socket.close(code=code, reason=reason)
        except RuntimeError:  # already closed
            pass
