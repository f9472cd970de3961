"""Sanity checks for the test peers themselves, using clients independent of gql_mail."""

from __future__ import annotations

import asyncio
import base64
import socket

import aiosmtplib
import httpx
import pytest

from tests.servers.imap import ImapServer
from tests.servers.smtp import SmtpServer
from tests.servers.webhook_receiver import WebhookReceiver

RAW = b"Subject: sanity\r\nMessage-ID: <sanity@test>\r\n\r\nbody\r\n"


async def smtp_send(server: SmtpServer, recipients: list[str]) -> None:
    await aiosmtplib.send(
        RAW,
        sender="a@example.com",
        recipients=recipients,
        hostname=server.host,
        port=server.port,
        username=server.user,
        password=server.password,
        local_hostname="client.test",
        timeout=5,
    )


async def test_smtp_records_and_wakes_waiter(smtp_server: SmtpServer) -> None:
    waiter = asyncio.create_task(smtp_server.wait_for_messages(1, timeout=5))
    await smtp_send(smtp_server, ["b@example.net"])
    (received,) = await waiter
    assert (received.mail_from, received.rcpt_tos, received.data) == (
        "a@example.com",
        ("b@example.net",),
        RAW,
    )
    assert received.auth_user == smtp_server.user


async def test_smtp_scripting_and_reset(smtp_server: SmtpServer) -> None:
    smtp_server.fail_next(1, code=451, message="4.3.0 later")
    with pytest.raises(aiosmtplib.SMTPDataError):
        await smtp_send(smtp_server, ["b@example.net"])
    smtp_server.reject_recipients({"x@example.net": (550, "5.1.1 no")})
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await smtp_send(smtp_server, ["x@example.net"])
    smtp_server.set_password("other")
    with pytest.raises(aiosmtplib.SMTPAuthenticationError):
        await aiosmtplib.send(
            RAW,
            sender="a@example.com",
            recipients=["b@example.net"],
            hostname=smtp_server.host,
            port=smtp_server.port,
            username=smtp_server.user,
            password="smtppass",
            timeout=5,
        )
    smtp_server.reset()
    await smtp_send(smtp_server, ["x@example.net"])
    assert len(await smtp_server.wait_for_messages(1)) == 1


async def test_smtp_replies_go_out_as_the_scripted_bytes(smtp_server: SmtpServer) -> None:
    """A server answering in Latin-1: what reaches the socket is exactly the scripted bytes."""
    smtp_server.set_greeting(b"220 smtp.test ESMTP pr\xeat")
    smtp_server.set_auth_refusal(b"535 5.7.8 Identifiants refus\xe9s")
    smtp_server.reject_recipients({"x@example.net": (550, b"5.1.1 Destinataire inconnu \xe0 ce domaine")})
    smtp_server.set_accept_reply(b"250 2.0.0 Message accept\xe9 \xe0 la livraison")
    reader, writer = await asyncio.open_connection(smtp_server.host, smtp_server.port)

    async def reply(command: bytes | None = None) -> bytes:
        """The reply's last line (EHLO's is several)."""
        if command is not None:
            writer.write(command + b"\r\n")
        while True:
            line = await asyncio.wait_for(reader.readline(), 5)
            if line[3:4] != b"-":
                return line.rstrip(b"\r\n")

    def plain(password: str) -> bytes:
        return b"AUTH PLAIN " + base64.b64encode(f"\0{smtp_server.user}\0{password}".encode())

    try:
        assert await reply() == b"220 smtp.test ESMTP pr\xeat"
        await reply(b"EHLO client.test")
        assert await reply(plain("wrong")) == b"535 5.7.8 Identifiants refus\xe9s"
        assert (await reply(plain(smtp_server.password))).startswith(b"235 ")
        await reply(b"MAIL FROM:<a@example.com>")
        assert await reply(b"RCPT TO:<x@example.net>") == b"550 5.1.1 Destinataire inconnu \xe0 ce domaine"
        await reply(b"RCPT TO:<b@example.net>")
        assert (await reply(b"DATA")).startswith(b"354 ")
        assert await reply(RAW + b".") == b"250 2.0.0 Message accept\xe9 \xe0 la livraison"
        await reply(b"QUIT")
    finally:
        writer.close()
    assert [m.rcpt_tos for m in await smtp_server.wait_for_messages(1)] == [("b@example.net",)]


async def test_smtp_wait_times_out(smtp_server: SmtpServer) -> None:
    with pytest.raises(TimeoutError):
        await smtp_server.wait_for_messages(1, timeout=0.05)


async def test_imap_reads_demo_data(imap_server: ImapServer) -> None:
    messages = await imap_server.fetch_all("Sent")
    assert len(messages) >= 2  # pymap's demo data; other tests may have appended more


def test_closed_port_refuses(closed_port: int) -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", closed_port), timeout=1)


async def test_silent_port_accepts_and_stays_quiet(silent_port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", silent_port)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(1), 0.05)
    writer.close()


async def test_webhook_receiver_records_and_scripts(webhook_receiver: WebhookReceiver) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        webhook_receiver.fail_next(1, status=500)
        first = await client.post(webhook_receiver.url, json={"n": 1}, headers={"X-Test": "yes"})
        second = await client.post(webhook_receiver.url, json={"n": 2})
    assert (first.status_code, second.status_code) == (500, 200)
    requests = await webhook_receiver.wait_for(2)
    assert [r.json() for r in requests] == [{"n": 1}, {"n": 2}]
    assert [r.status for r in requests] == [500, 200]
    assert requests[0].header("x-test") == "yes"
    assert requests[0].header("content-type") == "application/json"


async def test_webhook_receiver_down_and_up_on_same_port(webhook_receiver: WebhookReceiver) -> None:
    port = webhook_receiver.port
    async with httpx.AsyncClient(timeout=5) as client:
        assert (await client.post(webhook_receiver.url, content=b"x")).status_code == 200
        webhook_receiver.down()  # also drops the keep-alive connection the client holds
        with pytest.raises(httpx.ConnectError):
            await client.post(webhook_receiver.url, content=b"y")
        webhook_receiver.up()
        assert webhook_receiver.port == port
        assert (await client.post(webhook_receiver.url, content=b"z")).status_code == 200
    assert [r.body for r in await webhook_receiver.wait_for(2)] == [b"x", b"z"]


async def test_webhook_receiver_slow_answers(webhook_receiver: WebhookReceiver) -> None:
    webhook_receiver.delay_responses(1.0)
    async with httpx.AsyncClient(timeout=0.1) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(webhook_receiver.url, content=b"slow")
    assert len(await webhook_receiver.wait_for(1)) == 1  # recorded even though the answer was late
