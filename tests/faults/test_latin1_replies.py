"""Peers that answer in Latin-1, through the real gql-mail server.

Many European servers word their replies in Latin-1 (`250 2.0.0 Message accept\\xe9 \\xe0 la livraison`).
aiosmtplib decoded such a byte into a lone surrogate that the database and orjson refuse: the batch of
outcomes holding it failed, its messages stayed `sending` and were sent again and again, and a Latin-1
`535` left an account CONNECTING for good. Here the SMTP peer (aiosmtpd) and an IMAP peer put raw Latin-1
bytes on the wire; each message must end as its reply says, reach the server once per accepted attempt,
and show the reply with U+FFFD where the byte was, in events and in the API."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import REGISTER, account_input, register_connected, smtp_block
from tests.faults.helpers import copies, message, of, simple, submit
from tests.harness import Server, subscribe
from tests.servers.imap_refusing import RefusingImapServer
from tests.servers.smtp import SmtpServer

GREETING = b"220 smtp.test ESMTP Bienvenue \xe0 bord"
ACCEPTED = b"250 2.0.0 Message accept\xe9 \xe0 la livraison"
ACCEPTED_SHOWN = "250 2.0.0 Message accept\ufffd \ufffd la livraison"
OUTBOX = """
query Out($account: ID) { outbox(account: $account) {
  queueId status attemptsMade response accepted rejected lastError { message code } } }"""
ACCOUNT = '{ account(account: "%s") { state lastError { message code } } }'


def no_surrogates(value: Any) -> None:
    """Everything the API said is valid text (a lone surrogate would have failed before reaching us)."""
    if isinstance(value, str):
        value.encode("utf-8")
    elif isinstance(value, dict):
        for item in value.values():
            no_surrogates(item)
    elif isinstance(value, list):
        for item in value:
            no_surrogates(item)


@pytest.mark.fault(
    "SMTP: replies in Latin-1 (250, 451, 550, RCPT refusal, greeting)",
    "raw \\xe0/\\xe9 bytes in the replies: sent once (reply shown with U+FFFD), 451 retried then sent once, "
    "550 failed and never received; events and the API carry valid text",
)
async def test_latin1_replies(server: Server, smtp_server: SmtpServer) -> None:
    smtp_server.set_greeting(GREETING)
    smtp_server.set_accept_reply(ACCEPTED)
    await register_connected(server, account_input("latin", smtp_server))
    async with subscribe(server, account="latin") as sub:
        # Each scripted failure meets the message submitted right after it (one at a time).
        smtp_server.fail_next(1, code=451, message=b"4.3.0 R\xe9essayez plus tard")
        retried = await submit(server, "latin", simple("retried@example.org"))
        error = await sub.wait_for(of("messageDeliveryError", retried["queueId"]))
        assert error["data"]["error"] == "Message failed: 451 4.3.0 R\ufffdessayez plus tard"
        assert error["data"]["smtpResponse"] == "451 4.3.0 R\ufffdessayez plus tard"
        assert error["data"]["job"]["nextAttempt"] is not None

        smtp_server.fail_next(1, code=550, message=b"5.7.1 Message refus\xe9 \xe0 cause du contenu")
        refused = await submit(server, "latin", simple("refused@example.org"))
        failed = await sub.wait_for(of("messageFailed", refused["queueId"]))
        assert (
            failed["data"]["error"] == "Message failed: 550 5.7.1 Message refus\ufffd \ufffd cause du contenu"
        )
        assert failed["data"]["smtpResponseCode"] == 550

        smtp_server.reject_recipients(
            {"inconnu@example.org": (550, b"5.1.1 Destinataire inconnu \xe0 ce domaine")}
        )
        sent = await submit(
            server,
            "latin",
            {"to": [{"address": "sent@example.org"}, {"address": "inconnu@example.org"}], "text": "x"},
        )
        accepted = await sub.wait_for(of("messageSent", sent["queueId"]))
        assert accepted["data"]["response"] == ACCEPTED_SHOWN
        assert accepted["data"]["rejected"] == {
            "inconnu@example.org": {"code": 550, "message": "5.1.1 Destinataire inconnu \ufffd ce domaine"}
        }

        server.advance(3600)
        again = await sub.wait_for(of("messageSent", retried["queueId"]))
        assert again["data"]["response"] == ACCEPTED_SHOWN
    await server.drain()

    received = await smtp_server.wait_for_messages(2)
    assert copies(received, sent["messageId"]) == 1
    assert copies(received, retried["messageId"]) == 1, "accepted once, on the attempt after the 451"
    assert copies(received, refused["messageId"]) == 0
    assert len(received) == 2

    states = {m["queueId"]: m for m in (await server.gql(OUTBOX, {"account": "latin"}))["outbox"]}
    no_surrogates(states)
    assert (states[sent["queueId"]]["status"], states[sent["queueId"]]["response"]) == (
        "sent",
        ACCEPTED_SHOWN,
    )
    assert (states[retried["queueId"]]["status"], states[retried["queueId"]]["attemptsMade"]) == ("sent", 2)
    gone = await message(server, refused["queueId"])
    assert (gone["status"], gone["attemptsMade"], gone["lastError"]["code"]) == ("failed", 1, "EMESSAGE")
    assert gone["lastError"]["message"] == failed["data"]["error"]
    assert not any(m["status"] in ("queued", "sending") for m in states.values())


@pytest.mark.fault(
    "SMTP: 535 in Latin-1, at the account check",
    "a wrong password refused with `535 5.7.8 Identifiants refus\\xe9s`: the account reaches "
    "AUTHENTICATION_ERROR (not stuck CONNECTING), the error shown with U+FFFD",
)
async def test_latin1_535_at_the_account_check(server: Server, smtp_server: SmtpServer) -> None:
    smtp_server.set_greeting(GREETING)
    smtp_server.set_auth_refusal(b"535 5.7.8 Identifiants refus\xe9s")
    data = account_input("refused", smtp_server)
    data["smtp"] = smtp_block(smtp_server, auth={"user": smtp_server.user, "pass": "wrong"})
    async with subscribe(server, account="refused") as sub:
        await server.gql(REGISTER, {"input": data})
        event = await sub.wait_for(of("authenticationError"))
    assert event["data"]["response"] == "535 5.7.8 Identifiants refus\ufffds"
    assert event["data"]["errorCode"] == "EAUTH"
    account = (await server.gql(ACCOUNT % "refused"))["account"]
    assert account["state"] == "AUTHENTICATION_ERROR"
    assert account["lastError"] == {
        "message": "Invalid login: 535 5.7.8 Identifiants refus\ufffds",
        "code": "EAUTH",
    }


@pytest.mark.fault(
    "SMTP: 535 in Latin-1, at send time",
    "the password changes at the provider, whose 535 is in Latin-1: the message fails once with the reply "
    "shown with U+FFFD, the account reaches AUTHENTICATION_ERROR, nothing is sent",
)
async def test_latin1_535_at_send_time(server: Server, smtp_server: SmtpServer) -> None:
    await register_connected(server, account_input("changed", smtp_server))
    smtp_server.set_password("changed-at-the-provider")
    smtp_server.set_auth_refusal(b"535 5.7.8 Identifiants refus\xe9s")
    async with subscribe(server, account="changed") as sub:
        answer = await submit(server, "changed", simple())
        failed = await sub.wait_for(of("messageFailed", answer["queueId"]))
        await sub.wait_for(of("authenticationError"))
    assert failed["data"]["error"] == "Invalid login: 535 5.7.8 Identifiants refus\ufffds"
    assert failed["data"]["smtpResponseCode"] == 535
    account = (await server.gql(ACCOUNT % "changed"))["account"]
    assert (account["state"], account["lastError"]["code"]) == ("AUTHENTICATION_ERROR", "EAUTH")
    assert smtp_server.messages == []


@pytest.mark.fault(
    "SMTP: refusing greeting in Latin-1",
    "`421 4.3.2 Service indisponible, r\\xe9essayez`: messageDeliveryError ECONNECTION with the text "
    "shown with U+FFFD, retried, then sent once",
)
async def test_latin1_refusing_greeting(server: Server, smtp_server: SmtpServer) -> None:
    await register_connected(server, account_input("busy", smtp_server))
    smtp_server.set_greeting(b"421 4.3.2 Service indisponible, r\xe9essayez")
    async with subscribe(server, account="busy") as sub:
        answer = await submit(server, "busy", simple())
        error = await sub.wait_for(of("messageDeliveryError", answer["queueId"]))
        assert error["data"]["errorCode"] == "ECONNECTION"
        assert error["data"]["smtpResponse"] == "421 4.3.2 Service indisponible, r\ufffdessayez"
        smtp_server.set_greeting(GREETING)
        server.advance(3600)
        await sub.wait_for(of("messageSent", answer["queueId"]))
    assert copies(await smtp_server.wait_for_messages(1), answer["messageId"]) == 1
    assert (await message(server, answer["queueId"]))["attemptsMade"] == 2


@pytest.mark.fault(
    "IMAP: LOGIN refused in Latin-1",
    "`a1 NO [AUTHENTICATIONFAILED] Identifiants invalides \\xe9`: the account reaches AUTHENTICATION_ERROR, "
    "the answer shown with U+FFFD",
)
async def test_latin1_imap_login_refusal(server: Server, smtp_server: SmtpServer) -> None:
    with RefusingImapServer(b"NO [AUTHENTICATIONFAILED] Identifiants invalides \xe9") as imap:
        data = account_input("imap", smtp_server)
        data["imap"] = {
            "host": imap.host,
            "port": imap.port,
            "secure": False,
            "auth": {"user": "u", "pass": "p"},
        }
        async with subscribe(server, account="imap") as sub:
            await server.gql(REGISTER, {"input": data})
            event = await sub.wait_for(of("authenticationError"))
        assert imap.logins >= 1
    assert event["data"]["response"] == "NO [AUTHENTICATIONFAILED] Identifiants invalides \ufffd"
    account = (await server.gql(ACCOUNT % "imap"))["account"]
    assert account["state"] == "AUTHENTICATION_ERROR"
    assert (
        account["lastError"]["message"]
        == "Invalid login: NO [AUTHENTICATIONFAILED] Identifiants invalides \ufffd"
    )
