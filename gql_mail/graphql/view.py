"""Strawberry's ASGI view, configured for gql-mail: the per-request context, coded errors, bounded JSON,
websocket authentication from `connection_init`, and gql-mail's websocket handlers and adapter.

The token of an HTTP request is checked before the view runs (endpoint.py); a websocket's comes in
`connection_init` and is checked here: without a valid one the connection is closed with 4403
(graphql-transport-ws) or 4401 (legacy graphql-ws, ws_handlers.py).

gql-mail's uses of Strawberry's undocumented internals are in this module, ws_handlers.py and
ws_adapter.py (hence Strawberry's upper bound in pyproject: its 0.x minors may change them). Here: the
view's `graphql_ws_handler_class` / `graphql_transport_ws_handler_class`, `websocket_adapter_class`,
`on_ws_connect`, `pick_websocket_subprotocol` (endpoint.py), `decode_json`, `parse_json`,
`parse_http_body`, `run`. tests/test_view_library.py fails, naming what is missing, when a release lacks
any of it.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse
from strawberry.types import ExecutionResult

try:  # where Strawberry's releases since 0.33x keep it
    from cross_web import HTTPException
except ImportError:  # pragma: no cover - older releases (the dependency floor)
    from strawberry.http.exceptions import HTTPException  # type: ignore[attr-defined,no-redef]

from gql_mail.events import QueueBudget
from gql_mail.graphql.context import Context
from gql_mail.graphql.errors import coded
from gql_mail.graphql.http_errors import error_response
from gql_mail.graphql.ws_adapter import REFUSAL, WebSocketAdapter
from gql_mail.graphql.ws_handlers import LegacyWSHandler, TransportWSHandler
from gql_mail.http_edge.json_body import MalformedJson, decode
from gql_mail.http_edge.request_metrics import current_labels
from gql_mail.runtime import Runtime
from gql_mail.services.connection_quota import ConnectionQuota
from gql_mail.services.tokens import Principal, authenticate, bearer


def _ws_token(params: Any) -> str | None:
    if not isinstance(params, dict):
        return None
    value = params.get("Authorization") or params.get("authorization")
    if isinstance(value, str):
        return bearer(value)
    headers = params.get("headers")
    return _ws_token(headers) if isinstance(headers, dict) else None


class GqlMailView(GraphQL[Context, None]):
    graphql_ws_handler_class = LegacyWSHandler
    graphql_transport_ws_handler_class = TransportWSHandler
    websocket_adapter_class = WebSocketAdapter

    def __init__(
        self, runtime: Runtime, quota: ConnectionQuota, ide_html: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.runtime = runtime
        self.quota = quota  # per token here; in all at the endpoint
        self._ide_html = ide_html

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
            current_labels().outcome = str((result.errors[0].extensions or {}).get("code", "error"))
        return await super().process_result(request, result)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        await self.answer(Request(scope, receive), send)

    async def answer(self, request: Request, send: Send) -> None:
        """Run an HTTP request and send the answer. The endpoint calls this with the Request whose body
        the gate has already read (so Strawberry reads it from there, not through a second `receive`)."""
        try:
            response = await self.run(request)
        except HTTPException as exc:  # Strawberry's refusals of a body or a request, coded like ours
            response = error_response(exc.status_code, "BAD_USER_INPUT", exc.reason)
        await response(request.scope, request.receive, send)

    def encode_json(self, data: object) -> str:
        """orjson, several times faster than the standard library's encoder Strawberry uses; text, because
        websocket messages are sent as text frames. What orjson refuses (an integer past 64 bits inside a
        JSON scalar) goes through the standard library."""
        try:
            return orjson.dumps(data).decode()
        except TypeError:
            encoded = super().encode_json(data)
            return encoded if isinstance(encoded, str) else encoded.decode()

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
        refusal = self.quota.claim(principal.token_id)
        if refusal is not None:
            context.request.scope.setdefault("state", {})[REFUSAL] = refusal
            raise ConnectionRejectionError({"message": refusal, "code": "FORBIDDEN"})
        # The endpoint gives the slot back when the socket closes.
        context.request.scope.setdefault("state", {})["ws_token_id"] = principal.token_id
        context.principal = principal
        return None

    def release_ws(self, scope: Scope) -> None:
        token_id = scope.get("state", {}).pop("ws_token_id", None)
        if token_id is not None:
            self.quota.release(token_id)
