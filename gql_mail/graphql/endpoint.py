"""The ASGI app at /graphql, in front of the Strawberry view: what is decided before the schema runs.

For browsers the IDE; for everything else the HTTP edge's gate (http_edge/gate.py, shared with REST):
the token from the headers before a byte of the body is read (401 at once otherwise), then the body
within its bounds (413 past them); this module only words the refusals as GraphQL errors.
Websockets: at most `max_ws_connections` open in this process (services/connection_quota.py); over it,
the connection is accepted only to be closed with 4429 and the quota's reason.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from gql_mail.graphql.http_errors import error_response
from gql_mail.graphql.view import GqlMailView
from gql_mail.graphql.ws_close import TOO_MANY_CLOSE_CODE
from gql_mail.http_edge.gate import RequestGate
from gql_mail.http_edge.request_body import SLOW_BODY, BodyTooLarge, BodyTooSlow


class GraphQLEndpoint:
    """See the module docstring."""

    def __init__(self, view: GqlMailView, gate: RequestGate) -> None:
        self.view = view
        self.gate = gate
        self.quota = view.quota

    @property
    def open_websockets(self) -> int:
        return self.quota.open

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
            principal = await self.gate.principal(request)
            if principal is None:
                answer = error_response(401, "UNAUTHENTICATED", "a valid access token is required")
                await answer(scope, receive, send)
                return
            scope.setdefault("state", {})["principal"] = principal
            if request.method == "POST":
                try:
                    body = await self.gate.read_body(request, receive)
                except BodyTooLarge:
                    limit = self.gate.max_body_bytes
                    too_large = error_response(413, "PAYLOAD_TOO_LARGE", f"request body over {limit} bytes")
                    await too_large(scope, receive, send)
                    return
                except BodyTooSlow:
                    await error_response(408, "BAD_USER_INPUT", SLOW_BODY)(scope, receive, send)
                    return
                # Strawberry reads the body from the Request (Starlette keeps a read body in `_body`).
                request._body = body
        await self.view.answer(request, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = self.quota.enter()
        if refusal is not None:
            socket = WebSocket(scope, receive, send)
            protocol = await self.view.pick_websocket_subprotocol(socket)
            await socket.accept(subprotocol=protocol)
            await socket.close(code=TOO_MANY_CLOSE_CODE, reason=refusal)
            return
        try:
            await self.view(scope, receive, send)
        finally:
            self.quota.leave()
            self.view.release_ws(scope)
