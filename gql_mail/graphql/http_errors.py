"""HTTP refusals at /graphql in the shape of a GraphQL answer (`errors[].extensions.code`), so a GraphQL
client reads a 401, 413 or malformed body the way it reads any other coded error (CONTRACT.md)."""

from __future__ import annotations

from starlette.responses import JSONResponse


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
