"""The outbox endpoints of the REST API: EmailEngine's entry and page shapes, the same message and state
as GraphQL's `outbox`, cancelling, and the errors."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from gql_mail.events import iso
from gql_mail.services.tokens import create_token
from tests.harness import Server
from tests.rest_client import boom, rest, wait_state
from tests.servers.smtp import SmtpServer

OUTBOX = "query { outbox { queueId status } }"
NOT_FOUND = boom(404, "Requested queue entry was not found")


async def _scheduled(server: Server, smtp: SmtpServer, count: int) -> list[str]:
    """`count` messages due in an hour (they stay queued); their queueIds in submission order."""
    body = {
        "account": "sender",
        "name": "Sender",
        "email": "sender@example.com",
        "smtp": {"host": smtp.host, "port": smtp.port, "auth": {"user": smtp.user, "pass": smtp.password}},
    }
    assert (await rest(server, "POST", "/account", json=body)).status_code == 200
    await wait_state(server, "sender", "connected")
    send_at = iso(server.runtime.clock.now() + timedelta(hours=1))
    ids = []
    for n in range(count):
        message = {
            "from": {"address": "sender@example.com"},
            "to": [{"address": f"to{n}@example.com"}],
            "subject": "later",
            "text": "x",
            "sendAt": send_at,
        }
        answer = await rest(server, "POST", "/account/sender/submit", json=message)
        assert answer.status_code == 200, answer.text
        ids.append(answer.json()["queueId"])
    return ids


async def test_outbox_pages_show_the_messages_graphql_shows(server: Server, smtp_server: SmtpServer) -> None:
    ids = await _scheduled(server, smtp_server, 3)
    page = await rest(server, "GET", "/outbox", params={"pageSize": 2})
    assert page.status_code == 200
    body: dict[str, Any] = page.json()
    assert (body["total"], body["page"], body["pages"]) == (3, 0, 2)
    second = (await rest(server, "GET", "/outbox", params={"pageSize": 2, "page": 1})).json()
    listed = [m["queueId"] for m in body["messages"] + second["messages"]]
    graphql = (await server.gql(OUTBOX))["outbox"]
    assert listed == [m["queueId"] for m in graphql] == list(reversed(ids))  # newest first, both
    assert {m["status"] for m in graphql} == {"queued"}
    entry = body["messages"][0]
    assert entry["account"] == "sender" and entry["source"] == "api"
    assert entry["envelope"] == {"from": "sender@example.com", "to": ["to2@example.com"]}
    assert entry["subject"] == "later"
    assert entry["progress"] == {"status": "queued"}
    assert entry["scheduled"] == entry["nextAttempt"]
    assert (entry["attemptsMade"], entry["attempts"]) == (0, 10)
    assert (await rest(server, "GET", f"/outbox/{ids[2]}")).json() == entry

    too_big = await rest(server, "GET", "/outbox", params={"pageSize": 1001})
    assert too_big.status_code == 400 and too_big.json()["fields"][0]["key"] == "pageSize"
    unknown = await rest(server, "GET", "/outbox", params={"account": "sender"})
    assert unknown.json()["fields"] == [{"message": '"account" is not allowed', "key": "account"}]


async def test_delete_cancels_and_graphql_sees_it(server: Server, smtp_server: SmtpServer) -> None:
    [queue_id] = await _scheduled(server, smtp_server, 1)
    deleted = await rest(server, "DELETE", f"/outbox/{queue_id}")
    assert (deleted.status_code, deleted.json()) == (200, {"deleted": True})
    assert (await server.gql(OUTBOX))["outbox"] == [{"queueId": queue_id, "status": "cancelled"}]
    shown = (await rest(server, "GET", f"/outbox/{queue_id}")).json()
    assert (shown["progress"], shown["nextAttempt"]) == ({"status": "cancelled"}, False)
    again = await rest(server, "DELETE", f"/outbox/{queue_id}")
    assert (again.status_code, again.json()) == (200, {"deleted": False})

    for method in ("GET", "DELETE"):
        missing = await rest(server, method, "/outbox/nothing-here")
        assert (missing.status_code, missing.json()) == (404, NOT_FOUND)


async def test_outbox_needs_a_token_and_cancelling_needs_write(
    server: Server, smtp_server: SmtpServer
) -> None:
    [queue_id] = await _scheduled(server, smtp_server, 1)
    anonymous = await rest(server, "GET", "/outbox", token=None)
    assert (anonymous.status_code, anonymous.json()) == (401, boom(401, "Missing authentication"))
    _, read = await create_token(server.runtime, "read", "reader")
    assert (await rest(server, "GET", f"/outbox/{queue_id}", token=read)).status_code == 200
    refused = await rest(server, "DELETE", f"/outbox/{queue_id}", token=read)
    assert (refused.status_code, refused.json()) == (
        403,
        boom(403, "Unauthorized scope", requestedScope="api"),
    )
    assert (await server.gql(OUTBOX))["outbox"][0]["status"] == "queued"  # nothing changed


async def test_a_sent_message_shows_as_submitted_in_both(server: Server, smtp_server: SmtpServer) -> None:
    await _scheduled(server, smtp_server, 0)
    message = {"from": {"address": "sender@example.com"}, "to": [{"address": "to@example.com"}], "text": "x"}
    queue_id = (await rest(server, "POST", "/account/sender/submit", json=message)).json()["queueId"]
    async with asyncio.timeout(15):
        while True:
            if (await server.gql(OUTBOX))["outbox"] == [{"queueId": queue_id, "status": "sent"}]:
                break
            await asyncio.sleep(0.05)
    entry = (await rest(server, "GET", f"/outbox/{queue_id}")).json()
    assert entry["nextAttempt"] is False and entry["attemptsMade"] == 1
    assert entry["progress"]["status"] == "submitted" and entry["progress"]["response"].startswith("250")
    assert entry["progress"]["messageId"] == entry["messageId"]
