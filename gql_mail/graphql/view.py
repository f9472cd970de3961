"""Strawberry's ASGI view with gql-mail's authentication.

HTTP: the token is checked before the schema runs (`GraphQLEndpoint`), so a request without a valid token
gets HTTP 401 and never data. Websockets: the token comes in `connection_init`; without a valid one the
connection is closed with 4403 (graphql-transport-ws) or 4401 (legacy graphql-ws).

This module is gql-mail's only use of Strawberry's undocumented websocket handler internals (hence
Strawberry's upper bound in pyproject: its 0.x minors may change them). It relies on: the view's
`graphql_ws_handler_class` / `graphql_transport_ws_handler_class`; `BaseGraphQLTransportWSHandler`'s
`handle_subscribe`, `run_operation`, `send_message`, `operations`, `connection_acknowledged`,
`max_subscriptions_per_connection`, `context`, `websocket`, and `Operation`'s `id`, `query`,
`operation_name`, `variables`, `send_operation_message`; `BaseGraphQLWSHandler`'s
`handle_connection_init`, `handle_start`, `send_message`, `tasks`, `view`, `context`, `websocket`; both
handlers' `handle` and `handle_message` (and graphql-transport-ws's `handle_invalid_message`); the view's
`websocket_adapter_class`, `pick_websocket_subprotocol`, `decode_json`, `parse_json`, `parse_http_body`,
`run`; `ASGIWebSocketAdapter`'s `iter_json`, `close`, `ws`, `view`.
tests/test_view_library.py fails, naming what is missing, when a release lacks any of it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncGenerator
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse
from strawberry.http.exceptions import NonTextMessageReceived
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import SubscribeMessage
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import ConnectionInitMessage, StartMessage
from strawberry.types import ExecutionResult

try:  # where Strawberry's releases since 0.33x keep it
    from cross_web import HTTPException
except ImportError:  # pragma: no cover - older releases (the dependency floor)
    from strawberry.http.exceptions import HTTPException  # type: ignore[attr-defined,no-redef]

from gql_mail.events import QueueBudget, SubscriberTooSlow, TokenRevoked
from gql_mail.graphql.context import Context
from gql_mail.graphql.errors import coded
from gql_mail.graphql.event_stream import event_batches
from gql_mail.graphql.fanout import events_plan
from gql_mail.graphql.frame_writer import frame_writer, open_gate
from gql_mail.graphql.json_body import MalformedJson, decode
from gql_mail.graphql.request_body import BodyReader, BodyTooLarge
from gql_mail.graphql.subscriptions import TOO_SLOW_CLOSE_CODE, close_socket
from gql_mail.runtime import Runtime
from gql_mail.services.tokens import Principal, authenticate, bearer, is_active

log = logging.getLogger(__name__)

# Where `KeepServerSend` leaves the ASGI server's own `send` in a websocket's scope.
RAW_SEND = "gql_mail.server_send"
# Where `on_ws_connect` leaves the reason it refused a connection, for the close frame (scope["state"]).
REFUSAL = "ws_refusal"
# graphql-transport-ws: the message was not one the protocol allows.
BAD_MESSAGE_CLOSE_CODE = 4400
# Over the process's cap on open websockets (the protocol's code for "too many").
TOO_MANY_CLOSE_CODE = 4429
_MAX_REASON_BYTES = 123  # a close frame's reason


def _reason(text: str) -> str:
    return text.encode()[:_MAX_REASON_BYTES].decode(errors="ignore")


def _ws_token(params: Any) -> str | None:
    if not isinstance(params, dict):
        return None
    value = params.get("Authorization") or params.get("authorization")
    if isinstance(value, str):
        return bearer(value)
    headers = params.get("headers")
    return _ws_token(headers) if isinstance(headers, dict) else None


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


async def _still_authorised(context: Context) -> bool:
    """Each new operation on an open websocket re-checks its token, so a revocation takes effect at once."""
    principal = context.principal
    return principal is None or await is_active(context.runtime, principal.token_id)


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """Strawberry's handler, with a coded error when a connection asks for too many subscriptions, and a
    malformed message closing the connection with 4400 and the reason (Strawberry's handler raised on
    some, e.g. a message that is a list, and logged a traceback)."""

    _closing: asyncio.Task[None] | None = None

    async def handle(self) -> None:
        if self.context.queue is not None:
            self.context.queue.on_overflow = self._too_slow
        await super().handle()

    def _too_slow(self, exc: SubscriberTooSlow) -> None:
        tasks = [op.task for op in self.operations.values() if op.task is not None]
        self._closing = asyncio.create_task(_close_too_slow(self.context.request, tasks, exc))

    async def handle_message(self, message: Any) -> None:
        fault = _message_fault(message, {"subscribe": True, "complete": False})
        if fault is not None:
            await self.handle_invalid_message(fault)
            return
        await super().handle_message(message)

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        if not await _still_authorised(self.context):
            await self.websocket.close(code=4403, reason="token revoked")
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
            await close_socket(socket, 4403, "token revoked")
            return
        except SubscriberTooSlow as exc:
            await close_socket(socket, TOO_SLOW_CLOSE_CODE, str(exc))
            return
        except (WebSocketDisconnect, OSError, RuntimeError):  # the client went away mid-send
            return
        await operation.send_operation_message({"id": operation.id, "type": "complete"})


class LegacyWSHandler(BaseGraphQLWSHandler[Context, None]):
    """graphql-ws closes a refused connection with 1011 by default; the contract says 4401. A malformed
    message closes the connection with 4400 and the reason, as on graphql-transport-ws."""

    _closing: asyncio.Task[None] | None = None

    async def handle(self) -> None:
        if self.context.queue is not None:
            self.context.queue.on_overflow = self._too_slow
        await super().handle()

    def _too_slow(self, exc: SubscriberTooSlow) -> None:
        tasks = list(self.tasks.values())
        self._closing = asyncio.create_task(_close_too_slow(self.context.request, tasks, exc))

    async def handle_message(self, message: Any) -> None:
        fault = _message_fault(message, {"start": True, "stop": False})
        if fault is not None:
            await self.websocket.close(code=BAD_MESSAGE_CLOSE_CODE, reason=_reason(fault))
            return
        await super().handle_message(message)

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        view: GqlMailView = self.view  # type: ignore[assignment]
        if await view.ws_principal(message.get("payload")) is None:
            await self.send_message({"type": "connection_error", "payload": {"message": "Unauthorized"}})
            await self.websocket.close(code=4401, reason="Unauthorized")
            return
        await super().handle_connection_init(message)

    async def handle_start(self, message: StartMessage) -> None:
        if not await _still_authorised(self.context):
            await self.websocket.close(code=4401, reason="token revoked")
            return
        limit = self.max_subscriptions_per_connection
        if limit is not None and message["id"] not in self.tasks and len(self.tasks) >= limit:
            refusal: Any = {"type": "error", "id": message["id"], "payload": _limit_error(limit)}
            await self.send_message(refusal)
            return
        await super().handle_start(message)


class WebSocketAdapter(ASGIWebSocketAdapter):
    """Strawberry's websocket adapter with clear close reasons: a message that is not JSON we accept (too
    deep included) closes the connection with 4400 and says why, and a refused `connection_init` names the
    limit that refused it rather than "Forbidden"."""

    async def iter_json(self, *, ignore_parsing_errors: bool = False) -> AsyncGenerator[object, None]:
        try:
            while self.ws.application_state != WebSocketState.DISCONNECTED:
                text = await self.ws.receive_text()
                try:
                    value = self.view.decode_json(text)
                except MalformedJson as exc:
                    if ignore_parsing_errors:
                        continue
                    await self.close(BAD_MESSAGE_CLOSE_CODE, str(exc))
                    return
                yield value
        except KeyError as exc:
            raise NonTextMessageReceived from exc
        except WebSocketDisconnect:
            pass

    async def close(self, code: int, reason: str) -> None:
        refusal = self.ws.scope.get("state", {}).pop(REFUSAL, None)
        if refusal is not None and code == 4403:
            reason = refusal
        await self.ws.close(code=code, reason=_reason(reason))


class GqlMailView(GraphQL[Context, None]):
    graphql_ws_handler_class = LegacyWSHandler
    graphql_transport_ws_handler_class = TransportWSHandler
    websocket_adapter_class = WebSocketAdapter

    def __init__(self, runtime: Runtime, ide_html: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runtime = runtime
        self._ide_html = ide_html
        self.ws_connections: Counter[str] = Counter()

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Context:
        principal = request.scope.get("state", {}).get("principal")
        context = Context(runtime=self.runtime, principal=principal, request=request, response=response)
        if isinstance(request, WebSocket):
            context.queue = QueueBudget(self.runtime.settings.max_ws_queued_events)
        return context

    async def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:
        # Parse errors (e.g. the token limit) are answered before any extension sees them: code them here.
        if result.errors:
            result.errors = [coded(e) for e in result.errors]
        return await super().process_result(request, result)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        try:
            response = await self.run(Request(scope, receive))
        except HTTPException as exc:  # Strawberry's refusals of a body or a request, coded like ours
            response = error_response(exc.status_code, "BAD_USER_INPUT", exc.reason)
        await response(scope, receive, send)

    def decode_json(self, data: str | bytes) -> object:
        return decode(data, self.runtime.settings.max_json_depth)

    def parse_json(self, data: str | bytes) -> Any:
        """An HTTP body (or GET's `variables`): a JSON object, else HTTP 400."""
        try:
            value = self.decode_json(data)
        except MalformedJson as exc:
            raise HTTPException(400, str(exc)) from None
        if not isinstance(value, dict):
            raise HTTPException(400, "the request must be a JSON object")
        return value

    async def parse_http_body(self, request: Any) -> Any:
        data = await super().parse_http_body(request)
        for item in data if isinstance(data, list) else [data]:
            if not isinstance(item.operation_name, str | None):
                raise HTTPException(400, "`operationName` must be a string")
        return data

    async def render_graphql_ide(self, request: Request) -> HTMLResponse:
        return HTMLResponse(self._ide_html or self.graphql_ide_html)

    async def ws_principal(self, params: Any) -> Principal | None:
        return await authenticate(self.runtime, _ws_token(params))

    async def on_ws_connect(self, context: Context) -> dict[str, object] | None:
        principal = await self.ws_principal(context.connection_params)
        if principal is None:
            raise ConnectionRejectionError({"message": "Unauthorized"})
        limit = self.runtime.settings.max_ws_connections_per_token
        if self.ws_connections[principal.token_id] >= limit:
            refusal = f"at most {limit} websocket connections per token"
            context.request.scope.setdefault("state", {})[REFUSAL] = refusal
            raise ConnectionRejectionError({"message": refusal, "code": "FORBIDDEN"})
        self.ws_connections[principal.token_id] += 1
        # The endpoint gives the slot back when the socket closes.
        context.request.scope.setdefault("state", {})["ws_token_id"] = principal.token_id
        context.principal = principal
        return None

    def release_ws(self, scope: Scope) -> None:
        token_id = scope.get("state", {}).pop("ws_token_id", None)
        if token_id is not None:
            self.ws_connections[token_id] -= 1
            if self.ws_connections[token_id] <= 0:
                del self.ws_connections[token_id]


def error_response(status: int, code: str, message: str) -> JSONResponse:
    """An HTTP error in the shape of a GraphQL answer.

    Answered before the body was read (401, 413), the server discards what of the body still arrives
    without keeping it; the connection is not closed, because closing a socket with unread bytes resets
    it and a client still sending would lose the answer."""
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="gql-mail"'
    return JSONResponse(
        {"errors": [{"message": message, "extensions": {"code": code}}]}, status_code=status, headers=headers
    )


def _announced(request: Request) -> int | None:
    length = request.headers.get("content-length")
    return int(length) if length is not None and length.isdigit() else None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class GraphQLEndpoint:
    """The ASGI app at /graphql: the IDE for browsers; for everything else the token is checked from the
    headers before a byte of the body is read (401 at once otherwise), then the body is read within its
    bounds (`BodyReader`). Websockets: at most `max_ws_connections` open in this process."""

    def __init__(self, view: GqlMailView) -> None:
        self.view = view
        s = view.runtime.settings
        self.bodies = BodyReader(s.max_request_bytes, s.large_body_bytes, s.max_large_bodies)
        self.open_websockets = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        request = Request(scope, receive)
        wants_ide = (
            request.method == "GET"
            and "text/html" in request.headers.get("accept", "")
            and "query" not in request.query_params
        )
        if not wants_ide:
            principal = await authenticate(self.view.runtime, bearer(request.headers.get("authorization")))
            if principal is None:
                answer = error_response(401, "UNAUTHENTICATED", "a valid access token is required")
                await answer(scope, receive, send)
                return
            scope.setdefault("state", {})["principal"] = principal
            if request.method == "POST":
                body = await self._read_body(request, receive)
                if body is None:
                    limit = self.bodies.max_bytes
                    too_large = error_response(413, "PAYLOAD_TOO_LARGE", f"request body over {limit} bytes")
                    await too_large(scope, receive, send)
                    return
                receive = _replay(body, receive)
        await self.view(scope, receive, send)

    async def _read_body(self, request: Request, receive: Receive) -> bytes | None:
        announced = _announced(request)
        if announced is not None and announced > self.bodies.max_bytes:
            return None
        try:
            return await self.bodies.read(receive, announced)
        except BodyTooLarge:
            return None

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.view.runtime.settings.max_ws_connections
        if self.open_websockets >= limit:
            socket = WebSocket(scope, receive, send)
            protocol = await self.view.pick_websocket_subprotocol(socket)
            await socket.accept(subprotocol=protocol)
            reason = f"too many websocket connections (at most {limit}); try again later"
            await socket.close(code=TOO_MANY_CLOSE_CODE, reason=reason)
            return
        self.open_websockets += 1
        try:
            await self.view(scope, receive, send)
        finally:
            self.open_websockets -= 1
            self.view.release_ws(scope)


class KeepServerSend:
    """Outermost middleware: keeps the server's `send` of each websocket in its scope, for the fan-out
    fast path (Starlette wraps `send` once per layer; every event frame would pay for each wrapper)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope[RAW_SEND] = send
        await self.app(scope, receive, send)
