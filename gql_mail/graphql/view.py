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
`handle_connection_init`, `handle_start`, `send_message`, `tasks`, `view`, `context`, `websocket`.
tests/test_view_library.py fails, naming what is missing, when a release lacks any of it.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import SubscribeMessage
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import ConnectionInitMessage, StartMessage
from strawberry.types import ExecutionResult

from gql_mail.events import SubscriberTooSlow, TokenRevoked
from gql_mail.graphql.context import Context
from gql_mail.graphql.errors import coded
from gql_mail.graphql.event_stream import event_batches
from gql_mail.graphql.fanout import events_plan
from gql_mail.graphql.frame_writer import frame_writer
from gql_mail.graphql.subscriptions import TOO_SLOW_CLOSE_CODE, close_socket
from gql_mail.runtime import Runtime
from gql_mail.services.tokens import Principal, authenticate, bearer, is_active

log = logging.getLogger(__name__)

# Where `KeepServerSend` leaves the ASGI server's own `send` in a websocket's scope.
RAW_SEND = "gql_mail.server_send"


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


async def _still_authorised(context: Context) -> bool:
    """Each new operation on an open websocket re-checks its token, so a revocation takes effect at once."""
    principal = context.principal
    return principal is None or await is_active(context.runtime, principal.token_id)


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """Strawberry's handler, with a coded error when a connection asks for too many subscriptions."""

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
            async for batch in event_batches(self.context.runtime, self.context.principal, *arguments):
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
    """graphql-ws closes a refused connection with 1011 by default; the contract says 4401."""

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


class GqlMailView(GraphQL[Context, None]):
    graphql_ws_handler_class = LegacyWSHandler
    graphql_transport_ws_handler_class = TransportWSHandler

    def __init__(self, runtime: Runtime, ide_html: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runtime = runtime
        self._ide_html = ide_html
        self.ws_connections: Counter[str] = Counter()

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Context:
        principal = request.scope.get("state", {}).get("principal")
        return Context(runtime=self.runtime, principal=principal, request=request, response=response)

    async def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:
        # Parse errors (e.g. the token limit) are answered before any extension sees them: code them here.
        if result.errors:
            result.errors = [coded(e) for e in result.errors]
        return await super().process_result(request, result)

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
            raise ConnectionRejectionError(
                {"message": f"at most {limit} websocket connections per token", "code": "FORBIDDEN"}
            )
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


def _unauthenticated() -> JSONResponse:
    return JSONResponse(
        {
            "errors": [
                {"message": "a valid access token is required", "extensions": {"code": "UNAUTHENTICATED"}}
            ]
        },
        status_code=401,
        headers={"WWW-Authenticate": 'Bearer realm="gql-mail"'},
    )


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse(
        {
            "errors": [
                {"message": f"request body over {limit} bytes", "extensions": {"code": "PAYLOAD_TOO_LARGE"}}
            ]
        },
        status_code=413,
    )


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None once it passes `limit` (chunked bodies have no Content-Length to check)."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return bytes(body)
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        if not message.get("more_body", False):
            return bytes(body)


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
    """The ASGI app at /graphql: the IDE for browsers, a token check for everything else."""

    def __init__(self, view: GqlMailView) -> None:
        self.view = view

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            try:
                await self.view(scope, receive, send)
            finally:
                self.view.release_ws(scope)
            return
        request = Request(scope, receive)
        wants_ide = (
            request.method == "GET"
            and "text/html" in request.headers.get("accept", "")
            and "query" not in request.query_params
        )
        if not wants_ide:
            limit = self.view.runtime.settings.max_request_bytes
            length = request.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > limit:
                await _too_large(limit)(scope, receive, send)
                return
            body = await _read_body(receive, limit)
            if body is None:
                await _too_large(limit)(scope, receive, send)
                return
            receive = _replay(body, receive)
            principal = await authenticate(self.view.runtime, bearer(request.headers.get("authorization")))
            if principal is None:
                await _unauthenticated()(scope, receive, send)
                return
            scope.setdefault("state", {})["principal"] = principal
        await self.view(scope, receive, send)


class KeepServerSend:
    """Outermost middleware: keeps the server's `send` of each websocket in its scope, for the fan-out
    fast path (Starlette wraps `send` once per layer; every event frame would pay for each wrapper)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope[RAW_SEND] = send
        await self.app(scope, receive, send)
