"""Strawberry's websocket adapter with clear close reasons.

A message that is not JSON we accept (too deep included) closes the connection with 4400 and says why,
and a refused `connection_init` names the limit that refused it rather than "Forbidden": `on_ws_connect`
(view.py) leaves its reason in the scope's state under `REFUSAL`, and the adapter's `close` puts it in
the close frame.

Undocumented Strawberry internals used here (tests/test_view_library.py checks them):
`ASGIWebSocketAdapter`'s `iter_json`, `close`, `ws`, `view`; the view's `decode_json`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from starlette.websockets import WebSocketDisconnect, WebSocketState
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.http.exceptions import NonTextMessageReceived

from gql_mail.graphql.ws_close import BAD_MESSAGE_CLOSE_CODE, FORBIDDEN_CLOSE_CODE, close_reason
from gql_mail.http_edge.json_body import MalformedJson

# Where `on_ws_connect` leaves the reason it refused a connection, for the close frame (scope["state"]).
REFUSAL = "ws_refusal"


class WebSocketAdapter(ASGIWebSocketAdapter):
    """See the module docstring."""

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
        if refusal is not None and code == FORBIDDEN_CLOSE_CODE:
            reason = refusal
        await self.ws.close(code=code, reason=close_reason(reason))
