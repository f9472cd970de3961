"""Hostile and oversized requests get clear, coded errors and change nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import websockets

from gql_mail.services.tokens import create_token, revoke_token
from tests.conftest import account_input, register_connected
from tests.harness import EVENTS_SUBSCRIPTION, Server, run_server, subscribe
from tests.servers.smtp import SmtpServer


def first_code(body: dict[str, Any]) -> str:
    return str(body["errors"][0]["extensions"]["code"])


async def test_query_depth_is_limited(server: Server) -> None:
    deep = "{ accounts { smtp { host } " + "".join("" for _ in range(3)) + "} }"
    assert (await server.post(deep)).status_code == 200
    # __type(name) { fields { type { fields { type ... } } } } nests as deep as a client likes.
    nested = "type { name ofType { name } }"
    for _ in range(15):
        nested = f"type {{ fields {{ {nested} }} }}"
    query = '{ __type(name: "Account") { fields { ' + nested + " } } }"
    body = (await server.post(query)).json()
    assert first_code(body) == "BAD_USER_INPUT" and "depth" in body["errors"][0]["message"]
    assert body.get("data") is None


async def test_aliases_and_tokens_are_limited(server: Server) -> None:
    many_aliases = "{ " + " ".join(f"a{i}: accounts {{ account }}" for i in range(200)) + " }"
    body = (await server.post(many_aliases)).json()
    assert first_code(body) == "BAD_USER_INPUT" and body.get("data") is None
    huge = "{ accounts { " + " ".join("account" for _ in range(6000)) + " } }"
    body = (await server.post(huge)).json()
    assert first_code(body) == "BAD_USER_INPUT" and body.get("data") is None


async def test_request_body_size_is_limited(tmp_path: Path) -> None:
    async with run_server(tmp_path, max_request_bytes=64 * 1024) as small:
        padding = "x" * (100 * 1024)
        response = await small.post("{ accounts { account } }", {"pad": padding})
        assert response.status_code == 413
        assert first_code(response.json()) == "PAYLOAD_TOO_LARGE"

        async def chunks() -> Any:
            body = json.dumps({"query": "{ accounts { account } }", "variables": {"pad": padding}}).encode()
            for i in range(0, len(body), 8192):
                yield body[i : i + 8192]

        chunked = await small.http.post(
            small.url + "/graphql",
            content=chunks(),
            headers={"Authorization": f"Bearer {small.token}", "Content-Type": "application/json"},
        )
        assert chunked.status_code == 413


async def test_recipients_and_attachments_are_limited(tmp_path: Path, smtp_server: SmtpServer) -> None:
    async with run_server(tmp_path, max_recipients=3, max_attachments=2) as small:
        await register_connected(small, account_input("lim", smtp_server))
        submit = 'mutation($i: SubmitMessageInput!) { submitMessage(account: "lim", input: $i) { queueId } }'
        body = (
            await small.post(submit, {"i": {"to": [{"address": f"r{i}@example.org"} for i in range(4)]}})
        ).json()
        assert first_code(body) == "BAD_USER_INPUT" and body["errors"][0]["extensions"]["field"] == "to"
        atts = [{"filename": f"{i}.txt", "content": "aGk="} for i in range(3)]
        body = (
            await small.post(submit, {"i": {"to": {"address": "a@example.org"}, "attachments": atts}})
        ).json()
        assert (
            first_code(body) == "BAD_USER_INPUT" and body["errors"][0]["extensions"]["field"] == "attachments"
        )
        assert (await small.gql("{ outbox { queueId } }"))["outbox"] == []


async def test_subscriptions_per_connection_are_limited(tmp_path: Path) -> None:
    async with run_server(tmp_path, max_subscriptions_per_connection=2) as small:
        async with websockets.connect(small.ws_url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
            await ws.send(
                json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {small.token}"}})
            )
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            for op in ("1", "2", "3"):
                await ws.send(
                    json.dumps(
                        {
                            "id": op,
                            "type": "subscribe",
                            "payload": {"query": EVENTS_SUBSCRIPTION, "variables": {}},
                        }
                    )
                )
            error = json.loads(await ws.recv())
        assert error["type"] == "error" and error["id"] == "3"
        assert error["payload"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        assert "at most 2 subscriptions" in error["payload"][0]["message"]


async def test_websocket_connections_per_token_are_limited(tmp_path: Path) -> None:
    async with run_server(tmp_path, max_ws_connections_per_token=2) as small:
        async with subscribe(small), subscribe(small):
            async with websockets.connect(small.ws_url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
                await ws.send(
                    json.dumps(
                        {"type": "connection_init", "payload": {"Authorization": f"Bearer {small.token}"}}
                    )
                )
                with pytest.raises(websockets.ConnectionClosed):
                    await ws.recv()
                assert ws.close_code == 4403
        # Closed connections give their slots back.
        async with subscribe(small), subscribe(small):
            pass


async def test_revoked_token_ends_open_subscriptions_at_once(server: Server) -> None:
    row, token = await create_token(server.runtime, "api")
    async with subscribe(server, token=token) as sub:
        await revoke_token(server.runtime, row.id)
        with pytest.raises(AssertionError, match="websocket closed"):
            await sub.wait_for(lambda e: False, timeout=5)
        assert sub.closed_code in (4401, 4403)


async def test_revocation_elsewhere_is_noticed_by_recheck(tmp_path: Path) -> None:
    """A token revoked by another process (here: directly in the database) ends subscriptions at the next
    re-check."""
    from sqlalchemy import update

    from gql_mail.models import AccessToken

    async with run_server(tmp_path, token_recheck_seconds=0.2) as srv:
        row, token = await create_token(srv.runtime, "api")
        async with subscribe(srv, token=token) as sub:
            async with srv.runtime.db.write() as session:
                await session.execute(
                    update(AccessToken).where(AccessToken.id == row.id).values(revoked_at=srv.clock.now())  # type: ignore[arg-type]
                )
            with pytest.raises(AssertionError, match="websocket closed"):
                await sub.wait_for(lambda e: False, timeout=5)
