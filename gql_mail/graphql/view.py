"""Strawberry's ASGI view with gql-mail's authentication.

HTTP: the token is checked before the schema runs (`GraphQLEndpoint`), so a request without a valid token
gets HTTP 401 and never data. Websockets: the token comes in `connection_init`; without a valid one the
connection is closed with 4403 (graphql-transport-ws) or 4401 (legacy graphql-ws).
"""
from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import ConnectionInitMessage

from gql_mail.graphql.context import Context
from gql_mail.runtime import Runtime
from gql_mail.services.tokens import Principal, authenticate, bearer

log = logging.getLogger(__name__)


def _ws_token(params: Any) -> str | None:
    if not isinstance(params, dict):
        return None
    value = params.get("Authorization") or params.get("authorization")
    if isinstance(value, str):
        return bearer(value)
    headers = params.get("headers")
    return _ws_token(headers) if isinstance(headers, dict) else None


class LegacyWSHandler(BaseGraphQLWSHandler[Context, None]):
    """graphql-ws closes a refused connection with 1011 by default; the contract says 4401."""

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        view: GqlMailView = self.view  # type: ignore[assignment]
        if await view.ws_principal(message.get("payload")) is None:
            await self.send_message({"type": "connection_error", "payload": {"message": "Unauthorized"}})
            await self.websocket.close(code=4401, reason="Unauthorized")
            return
        await super().handle_connection_init(message)


class GqlMailView(GraphQL[Context, None]):
    graphql_ws_handler_class = LegacyWSHandler

    def __init__(self, runtime: Runtime, ide_html: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runtime = runtime
        self._ide_html = ide_html

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Context:
        principal = request.scope.get("state", {}).get("principal")
        return Context(runtime=self.runtime, principal=principal, request=request, response=response)

    async def render_graphql_ide(self, request: Request) -> HTMLResponse:
        return HTMLResponse(self._ide_html or self.graphql_ide_html)

    async def ws_principal(self, params: Any) -> Principal | None:
        return await authenticate(self.runtime, _ws_token(params))

    async def on_ws_connect(self, context: Context) -> dict[str, object] | None:
        principal = await self.ws_principal(context.connection_params)
        if principal is None:
            raise ConnectionRejectionError({"message": "Unauthorized"})
        context.principal = principal
        return None


def _unauthenticated() -> JSONResponse:
    return JSONResponse(
        {"errors": [{"message": "a valid access token is required", "extensions": {"code": "UNAUTHENTICATED"}}]},
        status_code=401,
        headers={"WWW-Authenticate": 'Bearer realm="gql-mail"'},
    )


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse(
        {"errors": [{"message": f"request body over {limit} bytes", "extensions": {"code": "PAYLOAD_TOO_LARGE"}}]},
        status_code=413,
    )


class GraphQLEndpoint:
    """The ASGI app at /graphql: the IDE for browsers, a token check for everything else."""

    def __init__(self, view: GqlMailView) -> None:
        self.view = view

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.view(scope, receive, send)
            return
        request = Request(scope, receive)
        wants_ide = (
            request.method == "GET" and "text/html" in request.headers.get("accept", "") and "query" not in request.query_params
        )
        if not wants_ide:
            limit = self.view.runtime.settings.max_request_bytes
            length = request.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > limit:
                await _too_large(limit)(scope, receive, send)
                return
            principal = await authenticate(self.view.runtime, bearer(request.headers.get("authorization")))
            if principal is None:
                await _unauthenticated()(scope, receive, send)
                return
            scope.setdefault("state", {})["principal"] = principal
        await self.view(scope, receive, send)
