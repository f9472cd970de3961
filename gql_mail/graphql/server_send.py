"""The ASGI server's own `send` of each websocket, kept for the fan-out fast path.

Starlette wraps `send` once per middleware layer, and every event frame would pay for each wrapper;
`frame_writer` writes straight through the server's (see frame_writer.py for what it relies on).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

# Where `KeepServerSend` leaves the ASGI server's own `send` in a websocket's scope.
RAW_SEND = "gql_mail.server_send"


class KeepServerSend:
    """Outermost middleware: keeps the server's `send` of each websocket in its scope (`RAW_SEND`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope[RAW_SEND] = send
        await self.app(scope, receive, send)
