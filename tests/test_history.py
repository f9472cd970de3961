"""A message's history after a real flow: its attempts with their SMTP codes, its events, and the webhook
POSTs of those events; and a listing's history costs one query per field, not one per message."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import event

from tests.conftest import account_input, register_connected
from tests.harness import Server, subscribe, wait_webhook, webhook_event
from tests.servers.smtp import SmtpServer
from tests.servers.webhook_receiver import WebhookReceiver

SUBMIT = """
mutation Submit($account: ID!, $input: SubmitMessageInput!) {
  submitMessage(account: $account, input: $input) { queueId }
}"""
HOOK = "mutation Hook($input: WebhookInput!) { createWebhook(input: $input) { id } }"
HISTORY = """
query History($q: ID!) { message(queueId: $q) {
  status attemptsMade
  deliveryAttempts { attempt attemptedAt duration result errorCode smtpResponseCode response }
  events { event date }
  webhookDeliveries { webhook event status attempts lastError }
} }"""
OUTBOX_HISTORY = (
    "{ outbox { queueId deliveryAttempts { result } events { event } webhookDeliveries { status } } }"
)
MESSAGE = {"to": [{"address": "to@example.org"}], "subject": "Hi", "text": "Hello"}


async def submit(server: Server, account: str) -> str:
    answer = await server.gql(SUBMIT, {"account": account, "input": MESSAGE})
    return str(answer["submitMessage"]["queueId"])


async def test_failed_twice_then_sent_shows_three_attempts_events_and_webhook_posts(
    server: Server, smtp_server: SmtpServer, webhook_receiver: WebhookReceiver
) -> None:
    hook = await server.gql(HOOK, {"input": {"url": webhook_receiver.url, "events": ["messageSent"]}})
    hook_id = hook["createWebhook"]["id"]
    await register_connected(server, account_input("hist", smtp_server))
    smtp_server.fail_next(2, code=451, message="4.3.0 Try again later")

    async with subscribe(server, account="hist") as sub:
        queue_id = await submit(server, "hist")
        for n in (1, 2):
            await sub.wait_count(lambda e: e["event"] == "messageDeliveryError", n)
            await server.drain()
            server.advance(3600)
        await sub.wait_for(lambda e: e["event"] == "messageSent")
    await server.drain()
    await wait_webhook(webhook_receiver, webhook_event("messageSent", queue_id))

    shown = (await server.gql(HISTORY, {"q": queue_id}))["message"]
    assert shown["status"] == "sent" and shown["attemptsMade"] == 3
    attempts = shown["deliveryAttempts"]
    assert [(a["attempt"], a["result"], a["smtpResponseCode"], a["errorCode"]) for a in attempts] == [
        (1, "failed", 451, "EMESSAGE"),
        (2, "failed", 451, "EMESSAGE"),
        (3, "sent", 250, None),
    ]
    assert "4.3.0 Try again later" in attempts[0]["response"] and attempts[2]["response"].startswith("250")
    assert all(a["duration"] is not None and 0 <= a["duration"] < 5 for a in attempts)
    assert [a["attemptedAt"] for a in attempts] == sorted(a["attemptedAt"] for a in attempts)
    events = [e["event"] for e in shown["events"]]
    assert events == ["messageDeliveryError", "messageDeliveryError", "messageSent"]
    assert shown["events"][2]["date"].endswith("Z")

    # The messageSent POST is marked delivered just after the receiver answered.
    await server.drain()
    for _ in range(50):
        deliveries = (await server.gql(HISTORY, {"q": queue_id}))["message"]["webhookDeliveries"]
        if deliveries and deliveries[0]["status"] == "delivered":
            break
        await asyncio.sleep(0.05)  # the dispatcher records the answer just after the receiver got it
    assert deliveries == [
        {"webhook": hook_id, "event": "messageSent", "status": "delivered", "attempts": 1, "lastError": None}
    ]


async def test_a_permanently_failed_message_reports_messageFailed(
    server: Server, smtp_server: SmtpServer
) -> None:
    await register_connected(server, account_input("perm", smtp_server))
    smtp_server.fail_next(1, code=554, message="5.7.1 Rejected")
    async with subscribe(server, account="perm") as sub:
        queue_id = await submit(server, "perm")
        await sub.wait_for(lambda e: e["event"] == "messageFailed")
    await server.drain()
    shown = (await server.gql(HISTORY, {"q": queue_id}))["message"]
    assert shown["status"] == "failed"
    assert [(a["result"], a["smtpResponseCode"]) for a in shown["deliveryAttempts"]] == [("failed", 554)]
    assert [e["event"] for e in shown["events"]] == ["messageDeliveryError", "messageFailed"]


async def test_a_listing_reads_history_with_one_query_per_field(
    server: Server, smtp_server: SmtpServer
) -> None:
    await register_connected(server, account_input("many", smtp_server))
    for _ in range(5):
        await submit(server, "many")
    await server.drain()
    await smtp_server.wait_for_messages(5)

    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    engine = server.runtime.db.read_engine.sync_engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        listed = (await server.gql(OUTBOX_HISTORY))["outbox"]
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert len(listed) == 5 and all(m["deliveryAttempts"] == [{"result": "sent"}] for m in listed)
    assert all([e["event"] for e in m["events"]] == ["messageSent"] for m in listed)
    # SELECTs only: on PostgreSQL the read engine is the write engine, and the webhook worker's claim (an
    # UPDATE of webhook_delivery) may run meanwhile.
    reads = [
        s
        for s in statements
        if s.lstrip().upper().startswith("SELECT") and ("delivery_attempt" in s or "webhook_delivery" in s)
    ]
    assert len(reads) == 2, reads
