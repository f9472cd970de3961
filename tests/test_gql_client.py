"""A stock GraphQL client (the `gql` package) over both websocket subprotocols sees the send flow."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from gql import Client, gql
from gql.transport.websockets import WebsocketsTransport

from tests.conftest import account_input, register_connected
from tests.harness import Server
from tests.servers.smtp import SmtpServer

EVENTS = 'subscription($a: ID) { events(account: $a, events: ["messageSent"]) { event account date data } }'
SUBMIT = (
    "mutation($a: ID!, $i: SubmitMessageInput!) "
    "{ submitMessage(account: $a, input: $i) { response queueId } }"
)


@pytest.mark.parametrize(
    "protocol", [WebsocketsTransport.APOLLO_SUBPROTOCOL, WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL]
)
async def test_subscribe_and_submit_with_gql(server: Server, smtp_server: SmtpServer, protocol: str) -> None:
    await register_connected(server, account_input("stock", smtp_server))
    transport = WebsocketsTransport(
        url=server.ws_url, init_payload={"Authorization": f"Bearer {server.token}"}, subprotocols=[protocol]
    )
    async with Client(transport=transport) as session:
        before = server.runtime.bus.subscriber_count
        received: list[dict[str, Any]] = []

        request = gql(EVENTS)
        request.variable_values = {"a": "stock"}

        async def listen() -> None:
            async for result in session.subscribe(request):
                received.append(result["events"])
                return

        listener = asyncio.create_task(listen())
        async with asyncio.timeout(5):
            await server.runtime.bus.until_subscribers(lambda n: n > before)
        # Legacy graphql-ws carries only subscriptions; the submission goes over HTTP as clients do.
        answer = await server.gql(
            SUBMIT, {"a": "stock", "i": {"to": {"address": "x@example.org"}, "text": "hi"}}
        )
        assert answer["submitMessage"]["response"] == "Queued for delivery"
        await asyncio.wait_for(listener, 10)
    assert received[0]["event"] == "messageSent"
    assert received[0]["data"]["queueId"] == answer["submitMessage"]["queueId"]
