"""No one gets in without a valid token: over HTTP (401) and over websockets (4401/4403)."""

from __future__ import annotations

import json

import pytest
import websockets

from gql_mail.services.tokens import create_token, revoke_token
from tests.harness import Server

QUERY = "{ accounts { account } }"


async def test_http_without_bad_and_revoked_tokens_get_401(server: Server) -> None:
    assert (await server.post(QUERY)).status_code == 200
    for token in (None, "nonsense", "gqlm_" + "x" * 43):
        response = await server.post(QUERY, token=token)
        assert response.status_code == 401, token
        assert "data" not in response.json()
        assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    row, token = await create_token(server.runtime, "api")
    assert (await server.post(QUERY, token=token)).status_code == 200
    await revoke_token(server.runtime, row.id)
    assert (await server.post(QUERY, token=token)).status_code == 401


async def test_read_scope_cannot_mutate(server: Server) -> None:
    _, token = await create_token(server.runtime, "read")
    assert (await server.post(QUERY, token=token)).status_code == 200
    response = await server.post('mutation { deleteWebhook(id: "x") }', token=token)
    assert response.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_get_cannot_run_mutations(server: Server) -> None:
    response = await server.http.get(
        server.url + "/graphql",
        params={"query": 'mutation { deleteWebhook(id: "x") }'},
        headers={"Authorization": f"Bearer {server.token}"},
    )
    assert response.status_code in (400, 405)
    assert "deleteWebhook" not in response.text or "errors" in response.text


async def test_health_needs_no_token(server: Server) -> None:
    response = await server.http.get(server.url + "/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


async def test_graphiql_page_is_served_without_token(server: Server) -> None:
    response = await server.http.get(server.url + "/graphql", headers={"Accept": "text/html"})
    assert response.status_code == 200 and "graphiql" in response.text.lower()
    assert 'src="https://' not in response.text


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
@pytest.mark.parametrize(
    "payload", [{}, {"Authorization": "Bearer nope"}, {"authorization": "Bearer gqlm_bad"}]
)
async def test_websocket_rejects_bad_tokens(server: Server, protocol: str, payload: dict[str, str]) -> None:
    async with websockets.connect(server.ws_url, subprotocols=[protocol]) as ws:  # type: ignore[list-item]
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        messages = []
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                messages.append(json.loads(await ws.recv()))
        assert ws.close_code in (4401, 4403)
        assert all(m.get("type") != "connection_ack" for m in messages)


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
async def test_websocket_accepts_lowercase_key(server: Server, protocol: str) -> None:
    async with websockets.connect(server.ws_url, subprotocols=[protocol]) as ws:  # type: ignore[list-item]
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {server.token}"}})
        )
        assert json.loads(await ws.recv())["type"] == "connection_ack"
