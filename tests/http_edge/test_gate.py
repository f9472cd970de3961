"""The gate both front doors share: who is calling, from the headers or a named query parameter."""

from __future__ import annotations

from starlette.requests import Request

from gql_mail.http_edge.gate import RequestGate
from tests.harness import Server


def _request(headers: dict[str, str], query: str = "") -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request(
        {"type": "http", "method": "GET", "path": "/", "headers": raw, "query_string": query.encode()}
    )


async def test_the_bearer_header_is_the_token(server: Server) -> None:
    gate = RequestGate(server.runtime)
    principal = await gate.principal(_request({"Authorization": f"Bearer {server.token}"}))
    assert principal is not None and principal.can_write
    assert await gate.principal(_request({"Authorization": "Bearer gqlm_nope"})) is None
    assert await gate.principal(_request({})) is None


async def test_the_query_parameter_counts_only_where_a_front_door_names_it(server: Server) -> None:
    gate = RequestGate(server.runtime)
    request = _request({}, f"access_token={server.token}")
    assert await gate.principal(request) is None  # GraphQL: headers only
    assert await gate.principal(request, query_parameter="access_token") is not None
    # The header wins when both are given: a bad header is not rescued by a good parameter.
    both = _request({"Authorization": "Bearer gqlm_nope"}, f"access_token={server.token}")
    assert await gate.principal(both, query_parameter="access_token") is None
