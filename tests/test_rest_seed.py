"""The seed's two curl commands, byte for byte, against a real server, then the whole send flow through
the REST API alone (webhook set by /v1/settings, connected, delivered, the messageSent POST verified the
way EmailEngine tells its receivers to); and the REST and GraphQL front doors showing the same state."""

from __future__ import annotations

import email
import email.policy
import json
import re
from collections.abc import Sequence
from pathlib import Path

from tests.harness import Server, run_server, subscribe, wait_webhook, webhook_event
from tests.rest_client import boom, rest, verify_webhook, wait_state
from tests.servers.imap import ImapServer
from tests.servers.smtp import SmtpServer
from tests.servers.webhook_receiver import WebhookReceiver

# "Sending Email with the EmailEngine API", step 1 and step 2, as the curl commands send them.
SEED_ACCOUNT = b"""{
        "account": "example",
        "name": "Andris Reinman",
        "email": "andris@example.com",
        "imap": {
          "auth": { "user": "andris", "pass": "secretpass" },
          "host": "mail.example.com",
          "port": 993,
          "secure": true
        },
        "smtp": {
          "auth": { "user": "andris", "pass": "secretpass" },
          "host": "mail.example.com",
          "port": 465,
          "secure": true
        }
      }"""
SEED_SUBMIT = b"""{
        "to": [{ "name": "Ethereal", "address": "andris@ethereal.email" }],
        "subject": "Test message",
        "text": "Hello from myself!",
        "html": "<p>Hello from myself!</p>"
      }"""
SERVICE_SECRET = "the-receiver-s-shared-secret"
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def _local(host: str, port: int) -> Sequence[str]:
    """DNS for the test: the seed's mail.example.com is this machine."""
    assert host == "mail.example.com", host
    return ["127.0.0.1"]


async def test_seed_calls_verbatim_then_send_flow_rest_only(
    tmp_path: Path, smtp_server: SmtpServer, imap_server: ImapServer, webhook_receiver: WebhookReceiver
) -> None:
    smtp_server.set_credentials("andris", "secretpass")
    async with run_server(tmp_path, resolver=_local) as server:
        # The receiver an EmailEngine user already runs, set up the EmailEngine way.
        settings = {
            "webhooks": webhook_receiver.url,
            "webhooksEnabled": True,
            "webhookEvents": ["messageSent"],
            "serviceSecret": SERVICE_SECRET,
        }
        assert (await rest(server, "POST", "/settings", json=settings)).status_code == 200

        created = await rest(server, "POST", "/account", content=SEED_ACCOUNT)
        assert (created.status_code, created.json()) == (200, {"account": "example", "state": "new"})

        # Nothing listens on 993/465 here: the check fails, and submission is refused naming the state.
        failed = await wait_state(server, "example", "connectError")
        assert failed["lastError"]["response"]
        refused = await rest(server, "POST", "/account/example/submit", content=SEED_SUBMIT)
        assert refused.status_code == 503
        assert refused.json() == boom(
            503,
            "Can not establish server connection for requested account",
            code="ConnectionError",
            state="connectError",
        )

        # The same call with the ports our servers listen on updates the account (EmailEngine's upsert).
        fixed = json.loads(SEED_ACCOUNT)
        fixed["smtp"].update(port=smtp_server.port, secure=False)
        fixed["imap"].update(
            port=imap_server.port, secure=False, auth={"user": imap_server.user, "pass": imap_server.password}
        )
        updated = await rest(server, "POST", "/account", json=fixed)
        assert (updated.status_code, updated.json()) == (200, {"account": "example", "state": "existing"})
        account = await wait_state(server, "example", "connected", "connectError", "authenticationError")
        assert account["state"] == "connected", account
        assert account["lastError"] is None
        assert account["smtp"]["auth"] == {"user": "andris", "pass": "******"}

        queued = await rest(server, "POST", "/account/example/submit", content=SEED_SUBMIT)
        assert queued.status_code == 200, queued.text
        answer = queued.json()
        assert set(answer) == {"response", "messageId", "sendAt", "queueId"}
        assert answer["response"] == "Queued for delivery"
        assert re.fullmatch(r"<[^@<>]+@example\.com>", answer["messageId"]), answer
        assert ISO_MS.match(answer["sendAt"]), answer

        (received,) = await smtp_server.wait_for_messages(1, timeout=15)
        assert received.mail_from == "andris@example.com"
        assert received.rcpt_tos == ("andris@ethereal.email",)
        message = email.message_from_bytes(received.data, policy=email.policy.default)
        assert message["Message-ID"] == answer["messageId"]
        assert message["Subject"] == "Test message"
        assert str(message["To"]) == "Ethereal <andris@ethereal.email>"
        assert str(message["From"]) == "Andris Reinman <andris@example.com>"

        post = await wait_webhook(webhook_receiver, webhook_event("messageSent", answer["queueId"]))
        signature = post.header("X-EE-Wh-Signature")
        assert signature is not None and verify_webhook(post.body, signature, SERVICE_SECRET)
        notice = post.json()
        assert (notice["account"], notice["event"]) == ("example", "messageSent")
        assert notice["data"]["messageId"] == answer["messageId"]
        assert notice["data"]["envelope"] == {"from": "andris@example.com", "to": ["andris@ethereal.email"]}
        assert notice["data"]["response"].startswith("250 ")


MESSAGE = """query M($queueId: ID!) { message(queueId: $queueId) { queueId messageId account status } }"""


async def test_a_message_submitted_over_rest_is_the_same_message_in_graphql(
    server: Server, smtp_server: SmtpServer
) -> None:
    body = {
        "account": "both",
        "name": "Both",
        "email": "both@example.com",
        "smtp": {
            "host": smtp_server.host,
            "port": smtp_server.port,
            "auth": {"user": smtp_server.user, "pass": smtp_server.password},
        },
    }
    assert (await rest(server, "POST", "/account", json=body)).json() == {"account": "both", "state": "new"}
    await wait_state(server, "both", "connected")
    send_at = "2099-01-01T00:00:00.000Z"  # scheduled: still queued when GraphQL looks
    submitted = await rest(
        server,
        "POST",
        "/account/both/submit",
        json={"to": {"address": "to@example.org"}, "subject": "x", "text": "y", "sendAt": send_at},
    )
    answer = submitted.json()
    assert answer["sendAt"] == send_at, answer
    seen = (await server.gql(MESSAGE, {"queueId": answer["queueId"]}))["message"]
    assert seen == {
        "queueId": answer["queueId"],
        "messageId": answer["messageId"],
        "account": "both",
        "status": "queued",
    }


async def test_rest_writes_show_on_the_graphql_subscription(server: Server, smtp_server: SmtpServer) -> None:
    body = {
        "account": "watched",
        "name": "Watched",
        "email": "watched@example.com",
        "smtp": {
            "host": smtp_server.host,
            "port": smtp_server.port,
            "auth": {"user": smtp_server.user, "pass": smtp_server.password},
        },
    }
    async with subscribe(server, account="watched") as sub:
        assert (await rest(server, "POST", "/account", json=body)).status_code == 200
        added = await sub.wait_for(lambda e: e["event"] == "accountAdded")
        assert added["data"]["email"] == "watched@example.com"
        await sub.wait_for(lambda e: e["event"] == "accountConnected")
        deleted = await rest(server, "DELETE", "/account/watched")
        assert deleted.json() == {"account": "watched", "deleted": True}
        await sub.wait_for(lambda e: e["event"] == "accountDeleted")
