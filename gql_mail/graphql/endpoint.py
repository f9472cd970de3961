"""The ASGI app at /graphql, in front of the Strawberry view: what is decided before the schema runs.

For browsers the IDE; for everything else the token is checked from the headers before a byte of the
body is read (401 at once otherwise), then the body is read within its bounds (`BodyReader`), so an
anonymous or oversized request never makes us buffer anything. Websockets: at most `max_ws_connections`
open in this process; over it, the connection is accepted only to be closed with 4429 and a reason.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from gql_mail.graphql.http_errors import error_response
from gql_mail.graphql.request_body import BodyReader, BodyTooLarge
from gql_mail.graphql.view import GqlMailView
from gql_mail.graphql.ws_close import TOO_MANY_CLOSE_CODE
from gql_mail.services.tokens import authenticate, bearer


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
    """See the module docstring."""

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
