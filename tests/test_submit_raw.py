"""EmailEngine's `raw` + `envelope`, per-message `sentMailPath` and attachment `contentDisposition`: what
a user submits is what the SMTP server and the Sent folder receive, through REST and GraphQL alike."""

from __future__ import annotations

import base64
import email
import email.policy
from email.message import EmailMessage
from typing import Any

from tests.conftest import account_input, imap_block, register_connected
from tests.harness import Server, subscribe
from tests.rest_client import connected_account, rest
from tests.servers.imap import ImapServer
from tests.servers.smtp import SmtpServer

SUBMIT = """
mutation Submit($account: ID!, $input: SubmitMessageInput!) {
  submitMessage(account: $account, input: $input) { messageId queueId }
}"""
OUTBOX = "query { outbox { queueId } }"
COPIED = "query Msg($q: ID!) { message(queueId: $q) { copyStatus copiedTo } }"

# LF line breaks, a folded Subject, a Bcc over two lines, 8-bit body text, no Message-ID, Date or
# MIME-Version: what a hand-written or another library's message looks like.
RAW = (
    b"From: Raw Sender <sender@example.com>\n"
    b"To: to@example.org\n"
    b"Bcc: hidden@example.org,\n"
    b" also-hidden@example.org\n"
    b"Subject: a folded\n"
    b" subject\n"
    b"Content-Type: text/plain; charset=utf-8\n"
    b"Content-Transfer-Encoding: 8bit\n"
    b"\n"
    b"Hello \xc3\xbcber\n"
    b"second line\n"
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_raw_is_sent_as_it_is_to_its_header_recipients(server: Server, smtp_server: SmtpServer) -> None:
    await connected_account(server, smtp_server)
    response = await rest(server, "POST", "/account/sender/submit", json={"raw": b64(RAW)})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["response"] == "Queued for delivery"

    (received,) = await smtp_server.wait_for_messages(1, timeout=15)
    assert received.mail_from == "sender@example.com"
    assert received.rcpt_tos == ("to@example.org", "hidden@example.org", "also-hidden@example.org")
    head, _, body = received.data.partition(b"\r\n\r\n")
    assert body == b"Hello \xc3\xbcber\r\nsecond line\r\n"  # byte for byte, line breaks CRLF
    assert b"Subject: a folded\r\n subject\r\n" in head + b"\r\n"  # the user's own folding kept
    assert b"hidden" not in head  # Bcc gone with its continuation line
    parsed = email.message_from_bytes(received.data, policy=email.policy.default)
    assert parsed["Message-ID"] == answer["messageId"]
    assert answer["messageId"].endswith("@example.com>")
    assert parsed["Date"] is not None and parsed["MIME-Version"] == "1.0"


async def test_envelope_and_message_id_override_the_headers(server: Server, smtp_server: SmtpServer) -> None:
    await connected_account(server, smtp_server)
    raw = b"From: a@example.com\r\nTo: listed@example.org\r\nMessage-ID: <old@example.com>\r\n\r\nbody\r\n"
    body = {
        "raw": b64(raw),
        "envelope": {"from": "bounces@example.com", "to": "only@example.org"},  # one where a list is taken
        "messageId": "new@example.com",
    }
    answer = (await rest(server, "POST", "/account/sender/submit", json=body)).json()
    assert answer["messageId"] == "<new@example.com>", answer
    (received,) = await smtp_server.wait_for_messages(1, timeout=15)
    assert (received.mail_from, received.rcpt_tos) == ("bounces@example.com", ("only@example.org",))
    assert received.data.count(b"Message-ID:") == 1 and b"Message-ID: <new@example.com>" in received.data


async def test_a_raw_message_keeps_its_own_message_id(server: Server, smtp_server: SmtpServer) -> None:
    await connected_account(server, smtp_server)
    raw = b"From: a@example.com\r\nTo: b@example.org\r\nMessage-ID:  <mine@example.com>\r\n\r\nbody\r\n"
    answer = (await rest(server, "POST", "/account/sender/submit", json={"raw": b64(raw)})).json()
    assert answer["messageId"] == "<mine@example.com>"
    (received,) = await smtp_server.wait_for_messages(1, timeout=15)
    assert received.data.count(b"Message-ID:") == 1


async def test_an_envelope_redirects_a_composed_message(server: Server, smtp_server: SmtpServer) -> None:
    await connected_account(server, smtp_server)
    message = {
        "to": [{"address": "shown@example.org"}],
        "text": "x",
        "envelope": {"to": ["actual@example.org", "ACTUAL@example.org"]},
    }
    assert (await rest(server, "POST", "/account/sender/submit", json=message)).status_code == 200
    (received,) = await smtp_server.wait_for_messages(1, timeout=15)
    assert (received.mail_from, received.rcpt_tos) == ("sender@example.com", ("actual@example.org",))
    assert b"To: shown@example.org" in received.data


async def test_refused_raw_submissions_name_the_field_and_queue_nothing(
    server: Server, smtp_server: SmtpServer
) -> None:
    await connected_account(server, smtp_server)
    good = b64(RAW)
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"raw": good, "text": "x"}, "text", "cannot be given with raw"),
        ({"raw": good, "to": [{"address": "x@example.org"}]}, "to", "cannot be given with raw"),
        ({"raw": good, "subject": "s"}, "subject", "cannot be given with raw"),
        ({"raw": "not base64!"}, "raw", "not valid base64"),
        ({"raw": b64(b"just some text\r\n\r\nbody")}, "raw", "not an RFC 5322 message"),
        ({"raw": b64(b"To: b@example.org\r\n\r\nbody")}, "envelope", "no sender"),
        ({"raw": b64(b"From: a@example.com\r\n\r\nbody")}, "envelope", "no recipients"),
        ({"raw": b64(b"From: a@example.com\r\nTo: not-an-address\r\n\r\nx")}, "raw", "not an email address"),
        ({"raw": b64(b"From: a@x.com\r\nTo: b@x.org\r\nMessage-ID: junk\r\n\r\nx")}, "raw", "message id"),
        ({"raw": good, "envelope": {"to": ["bad address"]}}, "to", "not an email address"),
        ({"raw": good, "sentMailPath": "Sent\r\nX"}, "sentMailPath", "line break"),
    ]
    for body, key, words in cases:
        response = await rest(server, "POST", "/account/sender/submit", json=body)
        assert response.status_code == 400, (body, response.text)
        answer = response.json()
        assert [f["key"] for f in answer["fields"]] == [key], (body, answer)
        assert words in answer["fields"][0]["message"], (body, answer)
    assert (await server.gql(OUTBOX))["outbox"] == []


async def test_graphql_takes_the_same_raw_message(server: Server, smtp_server: SmtpServer) -> None:
    await connected_account(server, smtp_server)
    message = {"raw": b64(RAW), "envelope": {"to": ["gql@example.org"]}}
    answer = (await server.gql(SUBMIT, {"account": "sender", "input": message}))["submitMessage"]
    (received,) = await smtp_server.wait_for_messages(1, timeout=15)
    assert received.rcpt_tos == ("gql@example.org",)
    assert f"Message-ID: {answer['messageId']}".encode() in received.data


async def test_content_disposition_is_the_one_asked_for(server: Server, smtp_server: SmtpServer) -> None:
    await connected_account(server, smtp_server)
    message = {
        "to": [{"address": "to@example.org"}],
        "html": '<p><img src="cid:logo@x"></p>',
        "attachments": [
            {"filename": "shown.txt", "content": b64(b"inline text"), "contentDisposition": "inline"},
            {
                "filename": "logo.png",
                "content": b64(b"png"),
                "cid": "logo@x",
                "contentDisposition": "attachment",
            },
            {"filename": "plain.bin", "content": b64(b"bytes")},
        ],
    }
    assert (await rest(server, "POST", "/account/sender/submit", json=message)).status_code == 200
    (received,) = await smtp_server.wait_for_messages(1, timeout=15)
    parsed = email.message_from_bytes(received.data, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    dispositions = {p.get_filename(): p.get_content_disposition() for p in parsed.walk() if p.get_filename()}
    assert dispositions == {"shown.txt": "inline", "logo.png": "attachment", "plain.bin": "attachment"}
    logo = next(p for p in parsed.walk() if p.get_filename() == "logo.png")
    assert logo["Content-ID"] == "<logo@x>"


async def test_sent_mail_path_puts_this_message_s_copy_in_its_folder(
    server: Server, smtp_server: SmtpServer, imap_server: ImapServer
) -> None:
    data = account_input("copier", smtp_server, imap_server)
    data["imap"] = imap_block(imap_server)  # the account's Sent folder is "Sent"
    await register_connected(server, data)
    await imap_server.create_folder("Receipts")
    sent = {"to": [{"address": "to@example.org"}], "subject": "own folder", "text": "x"}
    async with subscribe(server, account="copier") as sub:
        rest_answer = (
            await rest(server, "POST", "/account/copier/submit", json={**sent, "sentMailPath": "Receipts"})
        ).json()
        input_ = {**sent, "sentMailPath": "Receipts"}
        gql_answer = (await server.gql(SUBMIT, {"account": "copier", "input": input_}))["submitMessage"]
        default = (await server.gql(SUBMIT, {"account": "copier", "input": sent}))["submitMessage"]
        sent_ids: set[str] = set()

        def all_sent(event: dict[str, Any]) -> bool:
            if event["event"] == "messageSent":
                sent_ids.add(event["data"]["queueId"])
            return len(sent_ids) == 3

        await sub.wait_for(all_sent)
    await server.workers.sent_copy.drain()

    for answer, folder in ((rest_answer, "Receipts"), (gql_answer, "Receipts"), (default, "Sent")):
        shown = await server.gql(COPIED, {"q": answer["queueId"]})
        assert shown["message"] == {"copyStatus": "done", "copiedTo": folder}
    trash = [m.raw for m in await imap_server.fetch_messages("Receipts")]
    in_sent = [m.raw for m in await imap_server.fetch_messages("Sent")]
    for answer in (rest_answer, gql_answer):
        assert sum(answer["messageId"].encode() in raw for raw in trash) == 1
        assert not any(answer["messageId"].encode() in raw for raw in in_sent)
    assert sum(default["messageId"].encode() in raw for raw in in_sent) == 1


async def test_a_raw_message_s_subject_is_listed_decoded(server: Server, smtp_server: SmtpServer) -> None:
    await connected_account(server, smtp_server)
    raw = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: =?utf-8?q?caf=C3=A9?= menu\r\n\r\nx\r\n"
    body = {"raw": b64(raw), "sendAt": "2099-01-01T00:00:00Z"}  # still queued when listed
    answer = (await rest(server, "POST", "/account/sender/submit", json=body)).json()
    entry = (await rest(server, "GET", f"/outbox/{answer['queueId']}")).json()
    assert entry["subject"] == "café menu"
    shown = await server.gql(
        "query Q($q: ID!) { message(queueId: $q) { subject } }", {"q": answer["queueId"]}
    )
    assert shown["message"]["subject"] == "café menu"
