"""What a delivery attempt leaves in the database: the message's state as the API shows it, and one
delivery_attempt row per attempt. Outcomes are recorded by several statement shapes (a message every
recipient accepted takes a lean path that copies columns inside the database), so each shape is checked
against what was actually said over SMTP."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlmodel import col

from gql_mail.models import DeliveryAttempt, OutboxMessage
from tests.conftest import account_input, register_connected
from tests.harness import Server, subscribe
from tests.servers.smtp import SmtpServer

SUBMIT = """
mutation Submit($account: ID!, $input: SubmitMessageInput!) {
  submitMessage(account: $account, input: $input) { queueId }
}"""
MESSAGE = """
query Message($q: ID!) { message(queueId: $q) {
  status attemptsMade sentAt response accepted rejected lastError { message code } envelope { to } } }"""


def sent_to(*recipients: str) -> dict[str, Any]:
    return {"to": [{"address": r} for r in recipients], "subject": "Hi", "text": "Hello"}


async def submit_and_wait(server: Server, account: str, message: dict[str, Any], event: str) -> str:
    async with subscribe(server, account=account) as sub:
        queue_id: str = (await server.gql(SUBMIT, {"account": account, "input": message}))["submitMessage"][
            "queueId"
        ]
        await sub.wait_for(lambda e: e["event"] == event and e["data"]["queueId"] == queue_id)
    await server.drain()
    return queue_id


async def stored(server: Server, queue_id: str) -> tuple[OutboxMessage, list[DeliveryAttempt]]:
    async with server.runtime.db.read() as session:
        message = await session.get(OutboxMessage, queue_id)
        attempts = (
            (
                await session.execute(
                    select(DeliveryAttempt)
                    .where(col(DeliveryAttempt.outbox_id) == queue_id)
                    .order_by(col(DeliveryAttempt.attempt))
                )
            )
            .scalars()
            .all()
        )
    assert message is not None
    return message, list(attempts)


async def test_a_message_every_recipient_accepted(server: Server, smtp_server: SmtpServer) -> None:
    await register_connected(server, account_input("all", smtp_server))
    queue_id = await submit_and_wait(server, "all", sent_to("a@example.org", "b@example.org"), "messageSent")
    (received,) = await smtp_server.wait_for_messages(1)

    shown = (await server.gql(MESSAGE, {"q": queue_id}))["message"]
    assert shown["status"] == "sent" and shown["attemptsMade"] == 1 and shown["lastError"] is None
    assert shown["accepted"] == ["a@example.org", "b@example.org"] == list(received.rcpt_tos)
    assert shown["rejected"] is None
    assert shown["response"].startswith("250 ") and shown["sentAt"]

    message, attempts = await stored(server, queue_id)
    assert message.raw == b"", "the body is dropped once sent (no Sent copy asked for)"
    assert message.claimed_by is None and message.sent_at is not None
    assert [(a.attempt, a.ok, a.response, a.accepted, a.rejected, a.error) for a in attempts] == [
        (1, True, shown["response"], ["a@example.org", "b@example.org"], None, None)
    ]
    assert attempts[0].at == message.sent_at


async def test_a_message_some_recipients_refused(server: Server, smtp_server: SmtpServer) -> None:
    await register_connected(server, account_input("some", smtp_server))
    smtp_server.reject_recipients({"bad@example.org": (550, "5.1.1 User unknown")})
    queue_id = await submit_and_wait(
        server, "some", sent_to("good@example.org", "bad@example.org"), "messageSent"
    )

    shown = (await server.gql(MESSAGE, {"q": queue_id}))["message"]
    assert shown["status"] == "sent" and shown["attemptsMade"] == 1
    assert shown["accepted"] == ["good@example.org"]
    assert shown["rejected"]["bad@example.org"]["code"] == 550
    assert shown["envelope"]["to"] == ["good@example.org", "bad@example.org"]

    message, attempts = await stored(server, queue_id)
    assert message.raw == b""
    assert [(a.attempt, a.ok, a.accepted) for a in attempts] == [(1, True, ["good@example.org"])]
    assert attempts[0].rejected == shown["rejected"]


async def test_a_retried_message_keeps_every_attempt_and_clears_its_error(
    server: Server, smtp_server: SmtpServer
) -> None:
    await register_connected(server, account_input("again", smtp_server))
    smtp_server.fail_next(1, code=451, message="4.3.0 Try again later")
    queue_id = await submit_and_wait(server, "again", sent_to("to@example.org"), "messageDeliveryError")

    shown = (await server.gql(MESSAGE, {"q": queue_id}))["message"]
    assert shown["status"] == "queued" and shown["lastError"]["code"] == "EMESSAGE"
    message, _ = await stored(server, queue_id)
    assert message.raw != b"", "a message to be retried keeps its body"

    async with subscribe(server, account="again") as sub:
        server.advance(10)
        await sub.wait_for(lambda e: e["event"] == "messageSent" and e["data"]["queueId"] == queue_id)
    await server.drain()
    shown = (await server.gql(MESSAGE, {"q": queue_id}))["message"]
    assert shown["status"] == "sent" and shown["attemptsMade"] == 2 and shown["lastError"] is None

    message, attempts = await stored(server, queue_id)
    assert [(a.attempt, a.ok, a.smtp_code) for a in attempts] == [(1, False, 451), (2, True, None)]
    assert "Try again later" in (attempts[0].error or "")
    assert attempts[1].response == shown["response"] and attempts[1].accepted == ["to@example.org"]
