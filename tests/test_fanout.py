"""The fan-out fast path answers exactly as the schema would, and steps aside for anything unusual."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets

from gql_mail.graphql.fanout import events_plan
from tests.conftest import account_input, register_connected
from tests.harness import EVENTS_SUBSCRIPTION, Server
from tests.servers.smtp import SmtpServer

GENERAL = """
subscription Ev($account: ID) {
  events(account: $account) { ...E }
}
fragment E on Event { event account date data }"""


def test_plan_recognises_the_plain_document_only() -> None:
    plan = events_plan(EVENTS_SUBSCRIPTION, None)
    assert plan is not None and plan.response_key == "events"
    assert plan.resolve({"account": "a", "events": ["messageSent"]}) == ("a", ["messageSent"])
    assert plan.resolve({"account": None, "events": ["noSuchEvent"]}) is None  # general path: coded error
    aliased = events_plan('subscription { e: events(events: ["messageSent"]) { kind: event date } }', None)
    assert aliased is not None and aliased.selections == (("kind", "event"), ("date", "date"))
    for declined in (
        GENERAL,
        "subscription { events { event @include(if: true) } }",
        "subscription($a: Int) { events(account: $a) { event } }",
        "subscription($a: ID, $unused: ID) { events(account: $a) { event } }",
        "subscription { events { nope } }",
        "query { accounts { account } }",
        "subscription { events { event } ",
    ):
        assert events_plan(declined, None) is None, declined


async def open_subscription(server: Server, query: str, variables: dict[str, Any]) -> Any:
    ws = await websockets.connect(server.ws_url, subprotocols=["graphql-transport-ws"])  # type: ignore[list-item]
    await ws.send(
        json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {server.token}"}})
    )
    assert json.loads(await ws.recv())["type"] == "connection_ack"
    await ws.send(
        json.dumps({"id": "s", "type": "subscribe", "payload": {"query": query, "variables": variables}})
    )
    return ws


async def test_fast_and_general_paths_send_the_same_events(server: Server, smtp_server: SmtpServer) -> None:
    await register_connected(server, account_input("fan", smtp_server))
    before = server.runtime.bus.subscriber_count
    fast = await open_subscription(server, EVENTS_SUBSCRIPTION, {"account": "fan", "events": None})
    general = await open_subscription(server, GENERAL, {"account": "fan"})
    async with asyncio.timeout(5):
        await server.runtime.bus.until_subscribers(lambda n: n >= before + 2)
    await server.gql(
        'mutation { submitMessage(account: "fan", input: {to: {address: "x@example.org"}, text: "hi"}) '
        "{ queueId } }"
    )
    fast_message = json.loads(await asyncio.wait_for(fast.recv(), 10))
    general_message = json.loads(await asyncio.wait_for(general.recv(), 10))
    assert fast_message["type"] == general_message["type"] == "next"
    assert fast_message["payload"] == general_message["payload"]
    assert fast_message["payload"]["data"]["events"]["event"] == "messageSent"
    # A completed subscription is forgotten by the bus.
    await fast.send(json.dumps({"id": "s", "type": "complete"}))
    async with asyncio.timeout(5):
        await server.runtime.bus.until_subscribers(lambda n: n <= before + 1)
    await general.close()
    await fast.close()


async def test_unknown_event_names_still_get_a_coded_error(server: Server) -> None:
    ws = await websockets.connect(server.ws_url, subprotocols=["graphql-transport-ws"])  # type: ignore[list-item]
    await ws.send(
        json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {server.token}"}})
    )
    await ws.recv()
    await ws.send(
        json.dumps(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {"query": EVENTS_SUBSCRIPTION, "variables": {"events": ["bogus"]}},
            }
        )
    )
    message = json.loads(await ws.recv())
    await ws.close()
    errors = message["payload"]["errors"] if message["type"] == "next" else message["payload"]
    assert errors[0]["extensions"]["code"] == "BAD_USER_INPUT"
