"""What every HTTP request goes through before a front door's handler sees it: the token, then the body.

The order is the rule: the token is checked from the headers before a byte of the body is read, so an
anonymous client never makes us buffer anything; an authenticated body is then read within its bounds
(`BodyReader`). Both front doors use the same `RequestGate` (app.py makes one per process), so a slow
upload through REST and one through GraphQL wait for the same large-body slots. How a refusal is worded
is the front door's (a GraphQL error, an EmailEngine Boom body); what is refused is decided here.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection, Request
from starlette.types import Receive

from gql_mail.http_edge.request_body import BodyReader
from gql_mail.runtime import Runtime
from gql_mail.services.tokens import Principal, authenticate, bearer


def announced_length(request: HTTPConnection) -> int | None:
    """The request's Content-Length, when it announces a valid one."""
    length = request.headers.get("content-length")
    return int(length) if length is not None and length.isdigit() else None


class RequestGate:
    """The token and body rules of the HTTP edge (module docstring)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        s = runtime.settings
        self.bodies = BodyReader(
            s.max_request_bytes,
            s.large_body_bytes,
            s.max_large_bodies,
            idle_seconds=s.body_idle_seconds,
            total_seconds=s.body_read_seconds,
        )

    @property
    def max_body_bytes(self) -> int:
        return self.bodies.max_bytes

    async def principal(
        self, request: HTTPConnection, *, query_parameter: str | None = None
    ) -> Principal | None:
        """Who is calling: the valid token of the `Authorization: Bearer` header, or None. A front door that
        also takes the token from the query string (EmailEngine's `access_token`) names the parameter; the
        header wins when both are given. Reads no body."""
        token = bearer(request.headers.get("authorization"))
        if token is None and query_parameter is not None:
            token = request.query_params.get(query_parameter)
        return await authenticate(self.runtime, token)

    async def read_body(self, request: Request, receive: Receive) -> bytes:
        """The whole body; BodyTooLarge when it is (announced or found to be) over `max_body_bytes`,
        BodyTooSlow when it does not arrive in time. Call it only once the caller is authenticated."""
        return await self.bodies.read(receive, announced_length(request))
