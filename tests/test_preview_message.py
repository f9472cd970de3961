"""`previewMessage`, EmailEngine's dryRun (issue 15, point 3): the message exactly as a submission would
queue it, nothing written; bad input refused with the very error a submission gets.

A real server and a real SMTP peer (the account must be CONNECTED, as for a submission); the preview is
read back with Python's `email` parser.
"""

from __future__ import annotations

import base64
import email
from email.message import EmailMessage
from email.policy import default
from typing import Any

import pytest
from sqlalchemy import func, select

from gql_mail.mail.compose import Address
from gql_mail.mail.preview_text import with_preview_text
from gql_mail.models import OutboxMessage
from gql_mail.services import outbox
from gql_mail.services.submission import SubmitSpec
from gql_mail.services.tokens import create_token
from tests.conftest import account_input, register_connected, smtp_block
from tests.faults.helpers import SUBMIT
from tests.harness import GraphQLErrors, Server, subscribe
from tests.servers.smtp import SmtpServer

PREVIEW = """
mutation Preview($account: ID!, $input: SubmitMessageInput!) {
  previewMessage(account: $account, input: $input) { response messageId preview envelope { from to } }
}"""

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
MESSAGE: dict[str, Any] = {
    "from": {"name": "Andris", "address": "andris@example.com"},
    "to": [{"name": "Ethereal", "address": "andris@ethereal.email"}],
    "cc": [{"address": "cc@example.org"}],
    "bcc": [{"address": "hidden@example.org"}],
    "subject": "Test message – preview",
    "text": "Hello from myself!",
    "html": "<html><body class='x'><p>Hello from myself!</p></body></html>",
    "previewText": "Your weekly summary",
    "attachments": [{"filename": "pixel.png", "content": base64.b64encode(PNG).decode()}],
    "headers": {"X-Campaign": "spring"},
    "messageId": "<dry-run-1@example.com>",
}


async def outbox_rows(server: Server) -> int:
    async with server.runtime.db.read() as session:
        return int((await session.execute(select(func.count()).select_from(OutboxMessage))).scalar_one())


async def preview(server: Server, account: str, message: dict[str, Any], token: str = "default") -> Any:
    return (await server.gql(PREVIEW, {"account": account, "input": message}, token=token))["previewMessage"]


def parsed(result: dict[str, Any]) -> EmailMessage:
    message = email.message_from_bytes(base64.b64decode(result["preview"], validate=True), policy=default)
    assert isinstance(message, EmailMessage)
    return message


async def test_a_dry_run_answers_the_composed_message_and_queues_nothing(
    server: Server, smtp_server: SmtpServer
) -> None:
    await register_connected(server, account_input("dry", smtp_server))
    result = await preview(server, "dry", MESSAGE)

    assert result["response"] == "Dry run"
    assert result["messageId"] == "<dry-run-1@example.com>"
    assert result["envelope"] == {
        "from": "andris@example.com",
        "to": ["andris@ethereal.email", "cc@example.org", "hidden@example.org"],
    }
    message = parsed(result)
    assert message["Message-ID"] == result["messageId"]
    assert message["From"] == "Andris <andris@example.com>"
    assert message["To"] == "Ethereal <andris@ethereal.email>"
    assert message["Cc"] == "cc@example.org"
    assert message["Bcc"] is None, "as queued: Bcc only in the envelope"
    assert message["Subject"] == "Test message – preview"
    assert message["X-Campaign"] == "spring"
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    assert text.get_content().splitlines() == ["Hello from myself!"]
    html_text = html.get_content().replace("\r\n", "\n")  # bodies are canonical text: CRLF
    assert "<body class='x'>\n<!--[if !gte mso 9]><!---->\n<div style=" in html_text
    assert "Your weekly summary &#8199;&#65279;&#847; " in html_text
    assert html_text.index("Your weekly summary") < html_text.index("<p>Hello from myself!</p>")
    (attachment,) = message.iter_attachments()
    assert attachment.get_filename() == "pixel.png" and attachment.get_content() == PNG

    assert await outbox_rows(server) == 0, "nothing queued or stored"


async def test_a_dry_run_is_the_submission_it_previews(server: Server, smtp_server: SmtpServer) -> None:
    """Same input, same clock: the dry run's bytes are the queued message's bytes. And an idempotency key
    given to a dry run records nothing: the submission with that key afterwards is a new one."""
    await register_connected(server, account_input("same", smtp_server))
    keyed = {**MESSAGE, "idempotencyKey": "order-1"}
    dry = await preview(server, "same", keyed)
    queued = (await server.gql(SUBMIT, {"account": "same", "input": keyed}))["submitMessage"]
    assert queued["response"] == "Queued for delivery"
    async with server.runtime.db.read() as session:
        row = await session.get(OutboxMessage, queued["queueId"])
    assert row is not None and row.raw == base64.b64decode(dry["preview"])
    assert await outbox_rows(server) == 1


async def test_the_service_answers_what_emailengine_answers(server: Server, smtp_server: SmtpServer) -> None:
    """What a REST handler returns for `dryRun: true`: {response, messageId, preview}."""
    await register_connected(server, account_input("svc", smtp_server))
    spec = SubmitSpec(to=(Address(address="you@example.org"),), subject="Hi", text="Hi")
    result = await outbox.preview_message(server.runtime, "svc", spec)
    assert result.response == "Dry run" and result.message_id.endswith("@example.com>")
    assert base64.b64decode(result.preview) == result.raw and result.raw.endswith(b"\r\n")
    assert await outbox_rows(server) == 0


BAD_INPUTS: dict[str, dict[str, Any]] = {
    "CR/LF in the subject": {"subject": "Hi\r\nBcc: victim@example.org"},
    "attachment not base64": {"attachments": [{"filename": "a.txt", "content": "not base64!"}]},
    "no recipient": {"to": [], "cc": [], "bcc": []},
    "deliveryAttempts out of range": {"deliveryAttempts": 0},
    "sendAt in the past": {"sendAt": "2001-01-01T00:00:00Z"},
    "previewText over 1024 characters": {"previewText": "x" * 1025},
    "a reserved extra header": {"headers": {"Subject": "twice"}},
    "an idempotency key with a line break": {"idempotencyKey": "a\nb"},
}


def refusal(exc: GraphQLErrors) -> tuple[Any, ...]:
    (error,) = exc.errors
    return error["extensions"]["code"], error["extensions"].get("field"), error["message"]


@pytest.mark.parametrize("case", list(BAD_INPUTS))
async def test_bad_input_is_refused_as_a_submission_is(
    server: Server, smtp_server: SmtpServer, case: str
) -> None:
    await register_connected(server, account_input("bad", smtp_server))
    message = {**MESSAGE, **BAD_INPUTS[case]}
    with pytest.raises(GraphQLErrors) as dry:
        await preview(server, "bad", message)
    with pytest.raises(GraphQLErrors) as real:
        await server.gql(SUBMIT, {"account": "bad", "input": message})
    assert refusal(dry.value) == refusal(real.value)
    assert refusal(dry.value)[0] == "BAD_USER_INPUT"
    assert await outbox_rows(server) == 0


async def test_unknown_and_unready_accounts_are_refused_as_for_a_submission(
    server: Server, smtp_server: SmtpServer
) -> None:
    with pytest.raises(GraphQLErrors) as unknown:
        await preview(server, "nobody", MESSAGE)
    assert refusal(unknown.value)[:2] == ("NOT_FOUND", "account")

    data = account_input(
        "locked", smtp_server, smtp=smtp_block(smtp_server, auth={"user": "smtpuser", "pass": "wrong"})
    )
    async with subscribe(server, account="locked") as sub:
        await server.gql(
            "mutation R($input: RegisterAccountInput!) { registerAccount(input: $input) { state } }",
            {"input": data},
        )
        await sub.wait_for(lambda e: e["event"] == "authenticationError")
    with pytest.raises(GraphQLErrors) as dry:
        await preview(server, "locked", MESSAGE)
    with pytest.raises(GraphQLErrors) as real:
        await server.gql(SUBMIT, {"account": "locked", "input": MESSAGE})
    assert refusal(dry.value) == refusal(real.value)
    assert refusal(dry.value)[0] == "ACCOUNT_NOT_READY" and "AUTHENTICATION_ERROR" in refusal(dry.value)[2]
    assert await outbox_rows(server) == 0


async def test_a_read_only_token_cannot_preview(server: Server, smtp_server: SmtpServer) -> None:
    await register_connected(server, account_input("ro", smtp_server))
    _, token = await create_token(server.runtime, "read", "read-only")
    with pytest.raises(GraphQLErrors) as refused:
        await preview(server, "ro", MESSAGE, token=token)
    assert refused.value.codes == ["FORBIDDEN"]


def test_preview_text_goes_where_emailengine_puts_it() -> None:
    assert with_preview_text("<p>x</p>", "").startswith("<p>"), "empty: unchanged"
    no_body = with_preview_text("<p>x</p>", "Pre")
    assert no_body.startswith("<!--[if !gte mso 9]><!---->\n<div") and no_body.endswith(
        "<!--<![endif]-->\n<p>x</p>"
    )
    multiline_tag = with_preview_text('<BODY\n  style="a">x', "Pre")
    assert multiline_tag.startswith('<BODY\n  style="a">\n<!--[if') and multiline_tag.endswith("-->x")
    unclosed = "<body" + " " * 1000 + ">x"
    assert with_preview_text(unclosed, "Pre") == unclosed, "no '>' within 1,000 characters: left as is"
    assert with_preview_text("<bodyguard><body>x", "Pre").startswith("<bodyguard><body>\n<!--")
