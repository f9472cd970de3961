"""Small GraphQL and assertion helpers shared by the fault tests."""

from __future__ import annotations

from typing import Any

from tests.harness import Server
from tests.servers.smtp import ReceivedMessage

SUBMIT = """
mutation Submit($account: ID!, $input: SubmitMessageInput!) {
  submitMessage(account: $account, input: $input) { response messageId sendAt queueId }
}"""
MESSAGE = """
query Msg($q: ID!) { message(queueId: $q) {
  queueId status attemptsMade attempts nextAttempt response accepted rejected copiedTo copyError
  lastError { message code } } }"""
HOOK = "mutation Hook($input: WebhookInput!) { createWebhook(input: $input) { id } }"


def of(event: str, queue_id: str | None = None) -> Any:
    """A predicate for Subscriber.wait_for: this event (of this message)."""
    return lambda e: e["event"] == event and (queue_id is None or e["data"].get("queueId") == queue_id)


def simple(to: str = "to@example.org", **extra: Any) -> dict[str, Any]:
    return {"to": [{"address": to}], "subject": "Fault", "text": "Hello", **extra}


async def submit(server: Server, account: str, message: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = (await server.gql(SUBMIT, {"account": account, "input": message}))[
        "submitMessage"
    ]
    return result


async def message(server: Server, queue_id: str) -> dict[str, Any]:
    result: dict[str, Any] = (await server.gql(MESSAGE, {"q": queue_id}))["message"]
    return result


def message_id_of(received: ReceivedMessage) -> str:
    for line in received.data.split(b"\r\n"):
        if not line:
            break
        if line.lower().startswith(b"message-id:"):
            return line.split(b":", 1)[1].strip().decode()
    raise AssertionError("a received message without a Message-ID")


def copies(received: list[ReceivedMessage], message_id: str) -> int:
    """How many times the sink recorded the message with this Message-ID."""
    return sum(message_id_of(r) == message_id for r in received)
