"""How a GraphQL websocket is closed, and the codes it closes with (CONTRACT.md's).

One place for the codes and the closing, so the two protocols' handlers, the adapter, the subscription
resolver and the endpoint cannot drift apart. `close_socket` tolerates a socket that is already closed:
a subscription ending and an overflow of the connection's event budget may race to close it.
"""

from __future__ import annotations

from starlette.websockets import WebSocket

# "Try Again Later": the subscriber read too slowly and fell too far behind; it may reconnect at once.
TOO_SLOW_CLOSE_CODE = 1013
# graphql-transport-ws: the message was not one the protocol allows (legacy graphql-ws uses it too).
BAD_MESSAGE_CLOSE_CODE = 4400
# The legacy graphql-ws protocol's "unauthorised" (a refused connection_init, a revoked token).
LEGACY_UNAUTHORIZED_CLOSE_CODE = 4401
# graphql-transport-ws's "forbidden" (a refused connection_init, a revoked token).
FORBIDDEN_CLOSE_CODE = 4403
# Over the process's cap on open websockets (the protocol's code for "too many").
TOO_MANY_CLOSE_CODE = 4429
_MAX_REASON_BYTES = 123  # what a close frame's reason may hold


def close_reason(text: str) -> str:
    """`text` cut to what a close frame can carry (at a character boundary)."""
    return text.encode()[:_MAX_REASON_BYTES].decode(errors="ignore")


async def close_socket(socket: object, code: int, reason: str) -> None:
    if isinstance(socket, WebSocket):
        try:
            await socket.close(code=code, reason=reason)
        except RuntimeError:  # already closed
            pass
