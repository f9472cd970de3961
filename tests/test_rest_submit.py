"""`POST /v1/account/{account}/submit` beyond the seed: the fields gql-mail honours reach the message,
the ones it cannot are refused by name, and an account that is not connected is refused with its state."""

from __future__ import annotations

import base64
import email
import email.policy
from email.message import EmailMessage
from typing import Any

from tests.harness import Server
from tests.rest_client import boom, connected_account, rest, wait_state
from tests.servers.smtp import SmtpServer

OUTBOX = "query { outbox { queueId } }"


async def test_submit_fields_reach_the_message(server: Server, smtp_server: SmtpServer) -> None:
    await connected_account(server, smtp_server)
    pdf = b"%PDF-1.4 not really"
    message = {
        "from": {"name": "Sender Name", "address": "sender@example.com"},
        "to": {"name": "To", "address": "to@example.org"},  # one object where a list is taken
        "cc": [{"address": "cc@example.org"}],
        "bcc": [{"address": "hidden@example.org"}],
        "replyTo": {"address": "reply@example.com"},
        "subject": "Fields",
        "text": "plain",
        "html": '<p>html <img src="cid:logo@x"></p>',
        "attachments": [
            {
                "filename": "doc.pdf",
                "content": base64.b64encode(pdf).decode(),
                "contentType": "application/pdf",
                "encoding": "base64",
            },
            {"filename": "logo.png", "content": base64.b64encode(b"png").decode(), "cid": "logo@x"},
        ],
        "headers": {"X-Campaign": "spring", "In-Reply-To": "<earlier@example.com>"},
        "messageId": "<chosen-id@example.com>",
        "deliveryAttempts": 3,
        "copy": False,
    }
    answer = (await rest(server, "POST", "/account/sender/submit", json=message)).json()
    assert answer["messageId"] == "<chosen-id@example.com>", answer
    (received,) = await smtp_server.wait_for_messages(1, timeout=15)
    assert set(received.rcpt_tos) == {"to@example.org", "cc@example.org", "hidden@example.org"}
    parsed = email.message_from_bytes(received.data, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed["Message-ID"] == "<chosen-id@example.com>"
    assert str(parsed["Reply-To"]) == "reply@example.com" and str(parsed["Cc"]) == "cc@example.org"
    assert parsed["Bcc"] is None
    assert parsed["X-Campaign"] == "spring" and parsed["In-Reply-To"] == "<earlier@example.com>"
    files = {part.get_filename(): part for part in parsed.iter_attachments()}
    assert files["doc.pdf"].get_content_type() == "application/pdf"
    assert files["doc.pdf"].get_content() == pdf
    inline = [p for p in parsed.walk() if p["Content-ID"] == "<logo@x>"]
    assert inline and inline[0].get_payload(decode=True) == b"png"
    attempts = await server.gql(
        'query { message(queueId: "%s") { attempts } }' % answer["queueId"]  # noqa: UP031
    )
    assert attempts["message"]["attempts"] == 3


async def test_idempotency_key_replays_the_first_answer(server: Server, smtp_server: SmtpServer) -> None:
    await connected_account(server, smtp_server)
    message = {"to": [{"address": "to@example.org"}], "subject": "once", "text": "x"}
    headers = {"Idempotency-Key": "order-42"}
    first = (await rest(server, "POST", "/account/sender/submit", json=message, headers=headers)).json()
    second = (await rest(server, "POST", "/account/sender/submit", json=message, headers=headers)).json()
    assert first["idempotency"] == {"key": "order-42", "status": "MISS"}
    assert second["idempotency"] == {"key": "order-42", "status": "HIT"}
    assert (second["queueId"], second["messageId"]) == (first["queueId"], first["messageId"])
    await smtp_server.wait_for_messages(1, timeout=15)
    assert len((await server.gql(OUTBOX))["outbox"]) == 1


async def test_unsupported_and_unknown_fields_are_refused_by_name(
    server: Server, smtp_server: SmtpServer
) -> None:
    await connected_account(server, smtp_server)
    base: dict[str, Any] = {"to": [{"address": "to@example.org"}], "text": "x"}
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"template": "abc"}, "template", "is not supported by gql-mail"),
        ({"mailMerge": [{"to": {"address": "a@example.org"}}]}, "mailMerge", "is not supported by gql-mail"),
        ({"reference": {"message": "AAAA"}}, "reference", "is not supported by gql-mail"),
        ({"trackOpens": True}, "trackOpens", "is not supported by gql-mail"),
        ({"trackClicks": True}, "trackClicks", "is not supported by gql-mail"),
        ({"trackingEnabled": True}, "trackingEnabled", "is not supported by gql-mail"),
        ({"gateway": "relay"}, "gateway", "is not supported by gql-mail"),
        ({"dsn": {"return": "headers"}}, "dsn", "is not supported by gql-mail"),
        ({"render": {"params": {}}}, "render", "is not supported by gql-mail"),
        (
            {"attachments": [{"content": "AAAA", "contentDisposition": "sideways"}]},
            "contentDisposition",
            "inline",
        ),
        ({"envelope": {"to": ["a@example.org"], "cc": []}}, "cc", "is not allowed"),
        ({"attachments": [{"content": "AAAA", "encoding": "hex"}]}, "encoding", "must be 'base64'"),
        ({"subjekt": "typo"}, "subjekt", "is not allowed"),
    ]
    for extra, key, words in cases:
        response = await rest(server, "POST", "/account/sender/submit", json={**base, **extra})
        assert response.status_code == 400, (extra, response.text)
        body = response.json()
        assert (body["statusCode"], body["error"], body["message"]) == (400, "Bad Request", "Invalid input")
        assert [f["key"] for f in body["fields"]] == [key], body
        assert words in body["fields"][0]["message"], body
    # What asks for nothing passes: EmailEngine clients send these defaults.
    fine = await rest(
        server,
        "POST",
        "/account/sender/submit",
        json={**base, "dryRun": False, "trackOpens": False, "render": False},
    )
    assert fine.status_code == 200, fine.text
    assert len((await server.gql(OUTBOX))["outbox"]) == 1  # only the last one was queued


async def test_service_validation_is_a_400_naming_the_field(server: Server, smtp_server: SmtpServer) -> None:
    await connected_account(server, smtp_server)
    for message, key in [
        ({"to": [{"address": "not an address"}], "text": "x"}, "to"),
        ({"to": [{"address": "a@example.org"}], "text": "x", "deliveryAttempts": 0}, "deliveryAttempts"),
        ({"to": [{"address": "a@example.org"}], "text": "x", "sendAt": "2001-01-01T00:00:00Z"}, "sendAt"),
        ({"to": [{"address": "a@example.org"}], "attachments": [{"content": "***"}]}, "content"),
        ({"text": "nobody"}, "to"),
    ]:
        response = await rest(server, "POST", "/account/sender/submit", json=message)
        assert response.status_code == 400, (message, response.text)
        assert [f["key"] for f in response.json()["fields"]] == [key], response.json()
    assert (await server.gql(OUTBOX))["outbox"] == []


async def test_submit_to_an_account_that_cannot_send(
    server: Server, smtp_server: SmtpServer, closed_port: int
) -> None:
    message = {"to": [{"address": "to@example.org"}], "text": "x"}
    missing = await rest(server, "POST", "/account/nobody/submit", json=message)
    assert (missing.status_code, missing.json()) == (
        404,
        boom(404, "Account record was not found for requested ID"),
    )

    body = {
        "account": "locked",
        "name": "Locked",
        "email": "locked@example.com",
        "smtp": {
            "host": smtp_server.host,
            "port": smtp_server.port,
            "auth": {"user": smtp_server.user, "pass": "wrong"},
        },
    }
    await rest(server, "POST", "/account", json=body)
    await wait_state(server, "locked", "authenticationError")
    refused = await rest(server, "POST", "/account/locked/submit", json=message)
    assert (refused.status_code, refused.json()) == (
        503,
        boom(
            503,
            "Requested account can not be authenticated",
            code="AuthenticationFails",
            state="authenticationError",
        ),
    )
    assert (await server.gql(OUTBOX))["outbox"] == []


async def test_dry_run_answers_the_composed_message_and_queues_nothing(
    server: Server, smtp_server: SmtpServer
) -> None:
    await connected_account(server, smtp_server)
    body = {
        "to": [{"address": "rcpt@example.org"}],
        "subject": "Preview",
        "html": "<p>Hello</p>",
        "previewText": "Hidden preheader",
        "dryRun": True,
    }
    response = await rest(server, "POST", "/account/sender/submit", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"response", "messageId", "preview"}
    assert answer["response"] == "Dry run"
    message = email.message_from_bytes(base64.b64decode(answer["preview"]), policy=email.policy.default)
    assert message["Subject"] == "Preview"
    assert message["Message-ID"] == answer["messageId"]
    assert isinstance(message, EmailMessage)
    html = message.get_body(("html",))
    assert html is not None and "Hidden preheader" in html.get_content()
    assert (await server.gql(OUTBOX))["outbox"] == []  # nothing queued
