"""The seed's send flow end to end: submit -> SMTP -> events on the subscription and at the webhook."""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import hmac
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest

from tests.conftest import account_input, register_connected, smtp_block
from tests.harness import GraphQLErrors, Server, subscribe, wait_webhook, webhook_event
from tests.servers.imap import ImapServer
from tests.servers.smtp import SmtpServer
from tests.servers.webhook_receiver import WebhookReceiver

SUBMIT = """
mutation Submit($account: ID!, $input: SubmitMessageInput!) {
  submitMessage(account: $account, input: $input) { response messageId sendAt queueId }
}"""
OUTBOX = """
query Out($account: ID) { outbox(account: $account) {
  queueId messageId account status attemptsMade attempts nextAttempt sendAt lastError { message code } } }"""
HOOK = (
    "mutation Hook($input: WebhookInput!) { createWebhook(input: $input) { id url events account enabled } }"
)

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def of(event: str, queue_id: str | None = None) -> Any:
    return lambda e: e["event"] == event and (queue_id is None or e["data"].get("queueId") == queue_id)


async def test_seed_flow(
    server: Server, smtp_server: SmtpServer, imap_server: ImapServer, webhook_receiver: WebhookReceiver
) -> None:
    hook = await server.gql(HOOK, {"input": {"url": webhook_receiver.url + "/hook", "secret": "s3cret"}})
    assert hook["createWebhook"]["enabled"] is True
    await register_connected(server, account_input("seed", smtp_server, imap_server))
    message = {
        "from": {"name": "Renée Müller", "address": "seed@example.com"},
        "to": [{"name": "Recipient, Esq.", "address": "to@example.org"}],
        "cc": {"address": "cc@example.org"},
        "bcc": [{"address": "hidden@example.org"}],
        "replyTo": [{"address": "reply@example.com"}],
        "subject": "Grüße — a test with ünïcödé",
        "text": "Hello from myself!",
        "html": '<p>Hello from myself! <img src="cid:logo@x"></p>',
        "attachments": [
            {"filename": "checkmark.png", "content": base64.b64encode(PNG).decode(), "cid": "logo@x"},
            {
                "filename": "notes.txt",
                "content": base64.b64encode(b"plain notes\n").decode(),
                "contentType": "text/plain",
            },
        ],
        "headers": {"X-Campaign": "42"},
    }
    async with subscribe(server, account="seed") as sub:
        answer = (await server.gql(SUBMIT, {"account": "seed", "input": message}))["submitMessage"]
        assert answer["response"] == "Queued for delivery"
        assert answer["messageId"].startswith("<") and answer["messageId"].endswith("@example.com>")
        assert answer["queueId"]
        sent = await sub.wait_for(of("messageSent", answer["queueId"]))

    received = (await smtp_server.wait_for_messages(1))[0]
    assert received.mail_from == "seed@example.com"
    assert sorted(received.rcpt_tos) == ["cc@example.org", "hidden@example.org", "to@example.org"]
    parsed = email.message_from_bytes(received.data, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed["Subject"] == message["subject"]
    assert parsed["From"].addresses[0].display_name == "Renée Müller"
    assert parsed["To"].addresses[0].display_name == "Recipient, Esq."
    assert parsed["Cc"].addresses[0].addr_spec == "cc@example.org"
    assert parsed["Bcc"] is None and b"hidden@example.org" not in received.data
    assert parsed["Reply-To"].addresses[0].addr_spec == "reply@example.com"
    assert parsed["Message-ID"] == answer["messageId"]
    assert parsed["X-Campaign"] == "42"
    body = parsed.get_body(("plain",))
    assert body is not None and body.get_content().strip() == "Hello from myself!"
    html = parsed.get_body(("html",))
    assert html is not None and "cid:logo@x" in html.get_content()
    parts = {p.get_filename(): p for p in parsed.walk() if p.get_filename()}
    assert parts["checkmark.png"].get_content() == PNG
    assert parts["checkmark.png"]["Content-ID"] == "<logo@x>"
    assert parts["notes.txt"].get_payload(decode=True) == b"plain notes\n"

    # The subscription's event: EmailEngine's data shape, with the server's real reply.
    assert sent["account"] == "seed"
    assert sent["data"]["messageId"] == answer["messageId"]
    assert sent["data"]["response"].startswith("250 ")
    assert sent["data"]["envelope"] == {
        "from": "seed@example.com",
        "to": ["to@example.org", "cc@example.org", "hidden@example.org"],
    }

    # The same event reached the webhook, signed.
    request = await wait_webhook(webhook_receiver, webhook_event("messageSent", answer["queueId"]))
    body_json = request.json()
    assert set(body_json) == {"serviceUrl", "account", "date", "event", "data"}
    assert body_json["event"] == "messageSent" and body_json["account"] == "seed"
    assert body_json["data"] == sent["data"] and body_json["date"] == sent["date"]
    expected = "sha256=" + hmac.new(b"s3cret", request.body, hashlib.sha256).hexdigest()
    assert request.header("X-GqlMail-Signature") == expected
    assert request.header("Content-Type") == "application/json"
    assert request.header("X-GqlMail-Delivery")

    # The Sent folder holds the copy.
    await server.workers.sent_copy.drain()
    copied = await server.gql(
        "query($q: ID!) { message(queueId: $q) { status copiedTo copyError copyStatus } }",
        {"q": answer["queueId"]},
    )
    assert copied["message"] == {
        "status": "sent",
        "copiedTo": "Sent",
        "copyError": None,
        "copyStatus": "done",
    }
    assert await imap_server.find("Sent", answer["messageId"]) is not None


def simple(to: str = "to@example.org", **extra: Any) -> dict[str, Any]:
    return {"to": [{"address": to}], "subject": "Hi", "text": "Hello", **extra}


async def submit(server: Server, account: str, message: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = (await server.gql(SUBMIT, {"account": account, "input": message}))[
        "submitMessage"
    ]
    return result


async def test_transient_failures_are_retried_with_backoff(
    server: Server, smtp_server: SmtpServer, webhook_receiver: WebhookReceiver
) -> None:
    await server.gql(
        HOOK, {"input": {"url": webhook_receiver.url, "events": ["messageDeliveryError", "messageSent"]}}
    )
    await register_connected(server, account_input("retry", smtp_server))
    smtp_server.fail_next(2, code=451, message="4.3.0 Try again later")
    async with subscribe(server, account="retry") as sub:
        start = server.clock.now()
        answer = await submit(server, "retry", simple())
        first = await sub.wait_for(of("messageDeliveryError"))
        job = first["data"]["job"]
        assert job["attemptsMade"] == 1 and job["attempts"] == 10
        assert first["data"]["errorCode"] == "EMESSAGE"  # nodemailer's code for a refused DATA
        assert first["data"]["smtpResponseCode"] == 451
        assert "Try again later" in first["data"]["error"]
        assert first["data"]["queueId"] == answer["queueId"]
        next1 = datetime.fromisoformat(job["nextAttempt"].replace("Z", "+00:00"))
        assert start + timedelta(seconds=3.75) <= next1 <= start + timedelta(seconds=5)

        # Not before its time.
        await server.drain()
        assert len([e for e in sub.events if e["event"] == "messageDeliveryError"]) == 1
        assert smtp_server.messages == []

        server.advance(5)
        second = await sub.wait_count(of("messageDeliveryError"), 2)
        job2 = second[1]["data"]["job"]
        assert job2["attemptsMade"] == 2
        next2 = datetime.fromisoformat(job2["nextAttempt"].replace("Z", "+00:00"))
        assert (
            server.clock.now() + timedelta(seconds=7.5) <= next2 <= server.clock.now() + timedelta(seconds=10)
        )

        server.advance(10)
        sent = await sub.wait_for(of("messageSent"))
    assert sent["data"]["queueId"] == answer["queueId"]
    assert len(await smtp_server.wait_for_messages(1)) == 1
    outbox = (await server.gql(OUTBOX, {"account": "retry"}))["outbox"]
    assert outbox[0]["status"] == "sent" and outbox[0]["attemptsMade"] == 3
    # The webhook receiver got the same three events, in order.
    await wait_webhook(webhook_receiver, webhook_event("messageSent", answer["queueId"]))
    events = [r.json()["event"] for r in webhook_receiver.received]
    assert events == ["messageDeliveryError", "messageDeliveryError", "messageSent"]
    assert [r.json()["data"].get("job", {}).get("attemptsMade") for r in webhook_receiver.received[:2]] == [
        1,
        2,
    ]


async def test_rejected_recipients_fail_at_once(server: Server, smtp_server: SmtpServer) -> None:
    await register_connected(server, account_input("rej", smtp_server))
    smtp_server.reject_recipients({"nobody@example.org": (550, "5.1.1 User unknown")})
    async with subscribe(server, account="rej") as sub:
        answer = await submit(server, "rej", simple("nobody@example.org"))
        error = await sub.wait_for(of("messageDeliveryError"))
        failed = await sub.wait_for(of("messageFailed"))
    assert error["data"]["smtpResponseCode"] == 550
    assert error["data"]["job"]["attemptsMade"] == 1 and error["data"]["job"]["nextAttempt"] is None
    assert failed["data"]["queueId"] == answer["queueId"]
    assert failed["data"]["messageId"] == answer["messageId"]
    assert "User unknown" in failed["data"]["error"]
    assert smtp_server.messages == []


async def test_partial_rejection_sends_to_the_rest(server: Server, smtp_server: SmtpServer) -> None:
    await register_connected(server, account_input("part", smtp_server))
    smtp_server.reject_recipients({"bad@example.org": (550, "5.1.1 User unknown")})
    async with subscribe(server, account="part") as sub:
        await submit(
            server,
            "part",
            {"to": [{"address": "good@example.org"}, {"address": "bad@example.org"}], "text": "x"},
        )
        sent = await sub.wait_for(of("messageSent"))
    assert sent["data"]["accepted"] == ["good@example.org"]
    assert sent["data"]["rejected"]["bad@example.org"]["code"] == 550
    assert (await smtp_server.wait_for_messages(1))[0].rcpt_tos == ("good@example.org",)


async def test_wrong_password_at_send_time_fails_the_message(server: Server, smtp_server: SmtpServer) -> None:
    await register_connected(server, account_input("pw", smtp_server))
    smtp_server.set_password("changed-at-the-provider")
    async with subscribe(server, account="pw") as sub:
        answer = await submit(server, "pw", simple())
        failed = await sub.wait_for(of("messageFailed"))
        await sub.wait_for(of("authenticationError"))
    assert failed["data"]["queueId"] == answer["queueId"]
    assert "535" in failed["data"]["error"] and failed["data"]["smtpResponseCode"] == 535
    account = await server.gql('{ account(account: "pw") { state } }')
    assert account["account"]["state"] == "AUTHENTICATION_ERROR"


async def test_server_that_stays_down(server: Server) -> None:
    own = SmtpServer().start()
    try:
        await register_connected(server, account_input("down", own))
    finally:
        own.stop()
    async with subscribe(server, account="down") as sub:
        answer = await submit(server, "down", simple(deliveryAttempts=3))
        for n in (1, 2, 3):
            errors = await sub.wait_count(of("messageDeliveryError"), n)
            assert errors[-1]["data"]["job"]["attemptsMade"] == n
            assert errors[-1]["data"]["errorCode"] == "ECONNECTION"
            server.advance(3600)
        failed = await sub.wait_for(of("messageFailed"))
    assert failed["data"]["queueId"] == answer["queueId"]
    assert errors[-1]["data"]["job"]["nextAttempt"] is None
    outbox = (await server.gql(OUTBOX, {"account": "down"}))["outbox"]
    assert outbox[0]["status"] == "failed" and outbox[0]["attemptsMade"] == 3
    assert outbox[0]["lastError"]["code"] == "ECONNECTION"


async def test_scheduled_send_waits_for_send_at(server: Server, smtp_server: SmtpServer) -> None:
    await register_connected(server, account_input("later", smtp_server))
    send_at = server.clock.now() + timedelta(hours=1)
    answer = await submit(server, "later", simple(sendAt=send_at.isoformat()))
    assert datetime.fromisoformat(answer["sendAt"]) == send_at
    await server.drain()
    assert smtp_server.messages == []
    outbox = (await server.gql(OUTBOX, {"account": "later"}))["outbox"]
    assert outbox[0]["status"] == "queued"
    server.advance(3599)
    await server.drain()
    assert smtp_server.messages == []
    async with subscribe(server, account="later") as sub:
        server.advance(1)
        await sub.wait_for(of("messageSent", answer["queueId"]))
    assert len(smtp_server.messages) == 1


async def test_cancel_removes_a_queued_message(server: Server, smtp_server: SmtpServer) -> None:
    await register_connected(server, account_input("cancel", smtp_server))
    answer = await submit(
        server, "cancel", simple(sendAt=(server.clock.now() + timedelta(minutes=5)).isoformat())
    )
    cancel = "mutation($q: ID!) { cancelMessage(queueId: $q) }"
    assert (await server.gql(cancel, {"q": answer["queueId"]}))["cancelMessage"] is True
    assert (await server.gql(cancel, {"q": answer["queueId"]}))["cancelMessage"] is False
    server.advance(600)
    await server.drain()
    assert smtp_server.messages == []
    outbox = (await server.gql(OUTBOX, {"account": "cancel"}))["outbox"]
    assert outbox[0]["status"] == "cancelled"
    with pytest.raises(GraphQLErrors) as err:
        await server.gql(cancel, {"q": "no-such-id"})
    assert err.value.codes == ["NOT_FOUND"]


async def test_idempotency_key_returns_the_first_answer(server: Server, smtp_server: SmtpServer) -> None:
    await register_connected(server, account_input("idem", smtp_server))
    first = await submit(server, "idem", simple(idempotencyKey="order-1"))
    again = await submit(server, "idem", simple(idempotencyKey="order-1", subject="changed"))
    assert again == first
    other = await submit(server, "idem", simple(idempotencyKey="order-2"))
    assert other["queueId"] != first["queueId"]
    await server.drain()
    assert len(smtp_server.messages) == 2
    # After 24 hours the key may be used again.
    server.advance(24 * 3600 + 1)
    later = await submit(server, "idem", simple(idempotencyKey="order-1"))
    assert later["queueId"] != first["queueId"]


async def test_submission_rules(server: Server, smtp_server: SmtpServer) -> None:
    with pytest.raises(GraphQLErrors) as err:
        await submit(server, "missing", simple())
    assert err.value.codes == ["NOT_FOUND"]

    own = SmtpServer().start()
    port = own.port
    own.stop()
    data = account_input("notready", smtp_server, smtp=None)
    data["smtp"] = smtp_block(smtp_server, port=port)
    await server.gql(
        "mutation($i: RegisterAccountInput!) { registerAccount(input: $i) { state } }", {"i": data}
    )
    with pytest.raises(GraphQLErrors) as err:
        await submit(server, "notready", simple())
    assert err.value.codes == ["ACCOUNT_NOT_READY"]

    await register_connected(server, account_input("rules", smtp_server))
    bad: list[tuple[dict[str, Any], str, str]] = [
        ({"text": "no recipients"}, "BAD_USER_INPUT", "to"),
        (simple("not an address"), "BAD_USER_INPUT", "to"),
        (simple(subject="Hi\r\nBcc: victim@example.org"), "BAD_USER_INPUT", "subject"),
        (simple(headers={"X-Evil": "a\r\nBcc: victim@example.org"}), "BAD_USER_INPUT", "headers"),
        (simple(sendAt=(server.clock.now() - timedelta(hours=1)).isoformat()), "BAD_USER_INPUT", "sendAt"),
        (
            simple(attachments=[{"filename": "a.bin", "content": "!!not base64!!"}]),
            "BAD_USER_INPUT",
            "attachments[0].content",
        ),
        (simple(deliveryAttempts=0), "BAD_USER_INPUT", "deliveryAttempts"),
    ]
    for message, code, field in bad:
        with pytest.raises(GraphQLErrors) as err:
            await submit(server, "rules", message)
        assert err.value.codes == [code], message
        assert err.value.errors[0]["extensions"].get("field") == field, message
    assert (await server.gql(OUTBOX, {"account": "rules"}))["outbox"] == []


async def test_payload_too_large(tmp_path: Any, smtp_server: SmtpServer) -> None:
    from tests.harness import run_server

    async with run_server(tmp_path, max_message_bytes=64 * 1024) as small:
        await register_connected(small, account_input("big", smtp_server))
        content = base64.b64encode(b"x" * 100_000).decode()
        with pytest.raises(GraphQLErrors) as err:
            await submit(small, "big", simple(attachments=[{"filename": "big.bin", "content": content}]))
        assert err.value.codes == ["PAYLOAD_TOO_LARGE"]
        assert (await small.gql(OUTBOX))["outbox"] == []


async def test_one_connection_carries_many_messages(server: Server, smtp_server: SmtpServer) -> None:
    await register_connected(server, account_input("reuse", smtp_server))
    verify_connections = smtp_server.connection_count
    send_at = (server.clock.now() + timedelta(seconds=10)).isoformat()
    for i in range(12):
        await submit(server, "reuse", simple(f"r{i}@example.org", sendAt=send_at))
    server.advance(10)
    messages = await smtp_server.wait_for_messages(12)
    connections = {m.connection_id for m in messages}
    # All twelve were due at once: they share at most the per-account connection cap, not one each.
    assert len(connections) <= server.settings.max_concurrent_per_account
    assert smtp_server.connection_count - verify_connections <= server.settings.max_concurrent_per_account


async def test_deleting_an_account_mid_delivery_breaks_nothing(
    server: Server, smtp_server: SmtpServer
) -> None:
    """Outcomes of a deleted account's in-flight messages are dropped, not allowed to fail a whole batch."""
    from gql_mail.mail.smtp import SendResult
    from gql_mail.queue import claim_messages
    from gql_mail.services.delivery import Outcome, record_outcomes

    await register_connected(server, account_input("doomed", smtp_server))
    await register_connected(server, account_input("bystander", smtp_server))
    server.workers.scheduler.pause()
    try:
        doomed = await submit(server, "doomed", simple())
        other = await submit(server, "bystander", simple())
        claimed = await claim_messages(server.runtime, 10)
        assert {c.id for c in claimed} == {doomed["queueId"], other["queueId"]}
        await server.gql('mutation { deleteAccount(account: "doomed") }')
        ok = SendResult(response="250 2.0.0 Ok", accepted=("to@example.org",), rejected={})
        await record_outcomes(server.runtime, [Outcome(c, result=ok) for c in claimed])
    finally:
        server.workers.scheduler.resume()
    status = await server.gql(
        "query($q: ID!) { message(queueId: $q) { status attemptsMade } }", {"q": other["queueId"]}
    )
    assert status["message"] == {"status": "sent", "attemptsMade": 1}
    with pytest.raises(GraphQLErrors):
        await server.gql("query($q: ID!) { message(queueId: $q) { status } }", {"q": doomed["queueId"]})


async def test_a_trickle_of_messages_reuses_one_connection(server: Server, smtp_server: SmtpServer) -> None:
    """Messages submitted one after another, each sent before the next arrives, share the connection that
    stays open for a moment after its lane ran dry."""
    await register_connected(server, account_input("trickle", smtp_server))
    verify_connections = smtp_server.connection_count
    for i in range(3):
        await submit(server, "trickle", simple(f"t{i}@example.org"))
        await smtp_server.wait_for_messages(i + 1)
    messages = await smtp_server.wait_for_messages(3)
    assert len({m.connection_id for m in messages}) == 1
    assert smtp_server.connection_count - verify_connections == 1
