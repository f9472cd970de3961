"""retryMessage: a failed message is queued again with a fresh budget and delivered to a real SMTP server;
what cannot be retried is refused with a code."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import update

from gql_mail.models import OutboxMessage, table
from gql_mail.services.errors import Conflict
from gql_mail.services.outbox import retry_message
from tests.conftest import account_input, register_connected
from tests.harness import GraphQLErrors, Server, subscribe
from tests.servers.smtp import SmtpServer

SUBMIT = """
mutation Submit($account: ID!, $input: SubmitMessageInput!) {
  submitMessage(account: $account, input: $input) { queueId }
}"""
RETRY = "mutation Retry($q: ID!) { retryMessage(queueId: $q) { status attemptsMade attempts nextAttempt } }"
HISTORY = """
query History($q: ID!) { message(queueId: $q) {
  status attemptsMade deliveryAttempts { attempt result smtpResponseCode } events { event }
} }"""
MESSAGE = {
    "to": [{"address": "to@example.org"}],
    "subject": "Retried",
    "text": "Hello",
    "deliveryAttempts": 2,
}


async def failed_message(server: Server, smtp_server: SmtpServer, account: str) -> str:
    """A message that failed for good: a permanent 554 at DATA."""
    await register_connected(server, account_input(account, smtp_server))
    smtp_server.fail_next(1, code=554, message="5.7.1 Not now")
    async with subscribe(server, account=account) as sub:
        answer = await server.gql(SUBMIT, {"account": account, "input": MESSAGE})
        queue_id: str = answer["submitMessage"]["queueId"]
        await sub.wait_for(lambda e: e["event"] == "messageFailed" and e["data"]["queueId"] == queue_id)
    await server.drain()
    return queue_id


async def test_a_failed_message_is_delivered_after_a_retry(server: Server, smtp_server: SmtpServer) -> None:
    queue_id = await failed_message(server, smtp_server, "again")

    async with subscribe(server, account="again") as sub:
        retried = (await server.gql(RETRY, {"q": queue_id}))["retryMessage"]
        assert (retried["status"], retried["attemptsMade"], retried["attempts"]) == ("queued", 0, 2)
        assert retried["nextAttempt"] is not None
        sent = await sub.wait_for(lambda e: e["event"] == "messageSent")
        assert sent["data"]["queueId"] == queue_id
    await server.drain()
    (received,) = await smtp_server.wait_for_messages(1)
    assert b"Subject: Retried" in received.data

    shown = (await server.gql(HISTORY, {"q": queue_id}))["message"]
    assert shown["status"] == "sent" and shown["attemptsMade"] == 1
    assert [(a["attempt"], a["result"], a["smtpResponseCode"]) for a in shown["deliveryAttempts"]] == [
        (1, "failed", 554),
        (1, "sent", 250),
    ]
    assert [e["event"] for e in shown["events"]] == ["messageDeliveryError", "messageFailed", "messageSent"]

    with pytest.raises(GraphQLErrors) as refused:
        await server.gql(RETRY, {"q": queue_id})
    assert refused.value.codes == ["CONFLICT"] and "sent" in refused.value.errors[0]["message"]


async def test_two_retries_at_once_queue_it_once(server: Server, smtp_server: SmtpServer) -> None:
    queue_id = await failed_message(server, smtp_server, "twice")
    outcomes = await asyncio.gather(
        retry_message(server.runtime, queue_id),
        retry_message(server.runtime, queue_id),
        return_exceptions=True,
    )
    assert sorted(type(o).__name__ for o in outcomes) == ["Conflict", "OutboxMessage"]


async def test_refusals_are_coded(server: Server, smtp_server: SmtpServer) -> None:
    with pytest.raises(GraphQLErrors) as unknown:
        await server.gql(RETRY, {"q": "nope"})
    assert unknown.value.codes == ["NOT_FOUND"]

    queue_id = await failed_message(server, smtp_server, "gone")
    # What a message that stalled too often, or whose outcome could not be recorded, is left with.
    async with server.runtime.db.write() as session:
        await session.execute(
            update(table(OutboxMessage)).where(table(OutboxMessage).c.id == queue_id).values(raw=b"")
        )
    with pytest.raises(GraphQLErrors) as gone:
        await server.gql(RETRY, {"q": queue_id})
    assert gone.value.codes == ["CONFLICT"] and "no longer stored" in gone.value.errors[0]["message"]
    with pytest.raises(Conflict):
        await retry_message(server.runtime, queue_id)
