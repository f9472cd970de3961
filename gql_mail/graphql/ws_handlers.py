"""Strawberry's two websocket protocol handlers, with gql-mail's rules added.

Both protocols (graphql-transport-ws and the legacy graphql-ws): the token re-check on each new
operation (services/token_policy.py), so a revocation takes effect at once; a coded error when a
connection asks for more subscriptions than `max_subscriptions_per_connection`; a malformed message
closes the connection with 4400 and says why (Strawberry's handlers raised on some, e.g. a message that
is a list, and logged a traceback); and an overflow of the connection's event budget cancels its
operations and closes it with 1013 (`SlowConsumer`, shared by both). graphql-transport-ws also serves
the plain `events` subscription through the fan-out fast path (fanout.py) rather than the schema.

Undocumented Strawberry internals used here (tests/test_view_library.py checks them):
`BaseGraphQLTransportWSHandler`'s `handle_subscribe`, `run_operation`, `send_message`, `operations`,
`connection_acknowledged`, `max_subscriptions_per_connection`, `context`, `websocket`, and `Operation`'s
`id`, `query`, `operation_name`, `variables`, `send_operation_message`; `BaseGraphQLWSHandler`'s
`handle_connection_init`, `handle_start`, `send_message`, `tasks`, `view`, `context`, `websocket`; both
handlers' `handle` and `handle_message` (and graphql-transport-ws's `handle_invalid_message`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import SubscribeMessage
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import ConnectionInitMessage, StartMessage

from gql_mail.events import SubscriberTooSlow, TokenRevoked
from gql_mail.graphql.context import Context
from gql_mail.graphql.fanout import events_plan
from gql_mail.graphql.frame_writer import frame_writer, open_gate
from gql_mail.graphql.server_send import RAW_SEND
from gql_mail.graphql.ws_close import (
    BAD_MESSAGE_CLOSE_CODE,
    FORBIDDEN_CLOSE_CODE,
    LEGACY_UNAUTHORIZED_CLOSE_CODE,
    TOO_SLOW_CLOSE_CODE,
    close_reason,
    close_socket,
)
from gql_mail.services.event_stream import event_batches
from gql_mail.services.token_policy import still_authorised

if TYPE_CHECKING:
    from gql_mail.graphql.view import GqlMailView


def _limit_error(limit: int | None) -> dict[str, Any]:
    return {
        "message": f"at most {limit} subscriptions per connection; open another connection",
        "extensions": {"code": "BAD_USER_INPUT"},
    }


def _message_fault(message: object, kinds: dict[str, bool]) -> str | None:
    """Why a websocket message is malformed, or None. `kinds`: the message types that carry an operation
    `id`, and whether their payload must be an operation (query, variables, operationName)."""
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return "a message must be a JSON object with a string `type`"
    kind = message["type"]
    if kind not in kinds:
        return None  # the protocol's own handling (unknown types, connection_init's payload)
    if not isinstance(message.get("id"), str):
        return f"`{kind}` needs a string `id`"
    if not kinds[kind]:
        return None
    payload = message.get("payload")
    if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
        return f"`{kind}` needs a payload with a string `query`"
    if not isinstance(payload.get("variables"), dict | None):
        return "`variables` must be an object"
    if not isinstance(payload.get("operationName"), str | None):
        return "`operationName` must be a string"
    return None


async def _close_too_slow(socket: WebSocket, operations: list[asyncio.Task[Any]], exc: Exception) -> None:
    """Close a connection that fell too far behind over all its subscriptions. Its operations are cancelled
    first: they may be blocked sending to a full socket, and would otherwise fail (and be logged) there."""
    for task in operations:
        task.cancel()
    open_gate(socket.scope.get(RAW_SEND))
    await close_socket(socket, TOO_SLOW_CLOSE_CODE, str(exc))


class SlowConsumer:
    """Both protocols' handling of an overflow of the connection's event budget (`Context.queue`): the
    connection's operations are cancelled and it is closed with 1013. Mixed in before Strawberry's handler,
    whose `handle` it wraps; a handler says which tasks are its operations."""

    context: Context
    _closing: asyncio.Task[None] | None = None

    def _operation_tasks(self) -> list[asyncio.Task[Any]]:
        raise NotImplementedError

    async def handle(self) -> None:
        if self.context.queue is not None:
            self.context.queue.on_overflow = self._too_slow
        await super().handle()  # type: ignore[misc]  # Strawberry's handler, next in the MRO

    def _too_slow(self, exc: SubscriberTooSlow) -> None:
        tasks = self._operation_tasks()
        self._closing = asyncio.create_task(_close_too_slow(self.context.request, tasks, exc))


class TransportWSHandler(SlowConsumer, BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws: gql-mail's rules (module docstring) and the fan-out fast path."""

    def _operation_tasks(self) -> list[asyncio.Task[Any]]:
        return [op.task for op in self.operations.values() if op.task is not None]

    async def handle_message(self, message: Any) -> None:
        fault = _message_fault(message, {"subscribe": True, "complete": False})
        if fault is not None:
            await self.handle_invalid_message(fault)
            return
        await super().handle_message(message)

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        if not await still_authorised(self.context.runtime, self.context.principal):
            await self.websocket.close(code=FORBIDDEN_CLOSE_CODE, reason="token revoked")
            return
        limit = self.max_subscriptions_per_connection
        if self.connection_acknowledged and limit is not None and len(self.operations) >= limit:
            refusal: Any = {"id": message["id"], "type": "error", "payload": [_limit_error(limit)]}
            await self.send_message(refusal)
            return
        await super().handle_subscribe(message)

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        plan = events_plan(operation.query, operation.operation_name)
        arguments = plan.resolve(operation.variables) if plan is not None else None
        if plan is None or arguments is None:
            await super().run_operation(operation)
            return
        socket = self.context.request
        # Straight to the server's own send: Starlette's per-message wrappers cost more than the frame.
        write = frame_writer(socket.scope.get(RAW_SEND) or socket.send)
        try:
            context = self.context
            async for batch in event_batches(context.runtime, context.principal, *arguments, context.queue):
                await write([plan.frame(operation.id, event) for event in batch])
        except TokenRevoked:
            await close_socket(socket, FORBIDDEN_CLOSE_CODE, "token revoked")
            return
        except SubscriberTooSlow as exc:
            await close_socket(socket, TOO_SLOW_CLOSE_CODE, str(exc))
            return
        except (WebSocketDisconnect, OSError, RuntimeError):  # the client went away mid-send
            return
        await operation.send_operation_message({"id": operation.id, "type": "complete"})


class LegacyWSHandler(SlowConsumer, BaseGraphQLWSHandler[Context, None]):
    """Legacy graphql-ws: gql-mail's rules (module docstring); it closes a refused connection with 1011 by
    default, the contract says 4401."""

    def _operation_tasks(self) -> list[asyncio.Task[Any]]:
        return list(self.tasks.values())

    async def handle_message(self, message: Any) -> None:
        fault = _message_fault(message, {"start": True, "stop": False})
        if fault is not None:
            await self.websocket.close(code=BAD_MESSAGE_CLOSE_CODE, reason=close_reason(fault))
            return
        await super().handle_message(message)

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        view: GqlMailView = self.view  # type: ignore[assignment]
        if await view.ws_principal(message.get("payload")) is None:
            await self.send_message({"type": "connection_error", "payload": {"message": "Unauthorized"}})
            await self.websocket.close(code=LEGACY_UNAUTHORIZED_CLOSE_CODE, reason="Unauthorized")
            return
        await super().handle_connection_init(message)

    async def handle_start(self, message: StartMessage) -> None:
        if not await still_authorised(self.context.runtime, self.context.principal):
            await self.websocket.close(code=LEGACY_UNAUTHORIZED_CLOSE_CODE, reason="token revoked")
            return
        limit = self.max_subscriptions_per_connection
        if limit is not None and message["id"] not in self.tasks and len(self.tasks) >= limit:
            refusal: Any = {"type": "error", "id": message["id"], "payload": _limit_error(limit)}
            await self.send_message(refusal)
            return
        await super().handle_start(message)
