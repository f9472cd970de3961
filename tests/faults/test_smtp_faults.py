"""SMTP faults, each injected for real: through a TCP fault proxy in front of a real aiosmtpd server, or
by scripting that server. Every test checks what a user sees: the events on a live subscription, the
message as the GraphQL API reports it, and what the SMTP sink recorded."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Figures, account_input, register_connected, smtp_block
from tests.faults.helpers import copies, message, of, simple, submit
from tests.harness import Server, run_server, subscribe
from tests.servers.proxy import FaultProxy
from tests.servers.smtp import SelfSignedCert, SmtpServer

SMTP_TIMEOUT = 1.0


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    # Bounded SMTP timeouts are part of what is tested (the silent server).
    async with run_server(tmp_path, smtp_timeout_seconds=SMTP_TIMEOUT) as s:
        yield s


def via(account: str, smtp: SmtpServer, proxy: FaultProxy, **smtp_overrides: Any) -> dict[str, Any]:
    data = account_input(account, smtp)
    data["smtp"] = smtp_block(smtp, host=proxy.host, port=proxy.port, **smtp_overrides)
    return data


async def recovers(server: Server, sub: Any, smtp: SmtpServer, answer: dict[str, Any], attempts: int) -> None:
    """After the fault is removed and the backoff has passed: sent once, on attempt `attempts`."""
    server.advance(3600)
    sent = await sub.wait_for(of("messageSent", answer["queueId"]))
    assert sent["data"]["response"].startswith("250 ")
    assert copies(await smtp.wait_for_messages(1), answer["messageId"]) == 1
    final = await message(server, answer["queueId"])
    assert (final["status"], final["attemptsMade"]) == ("sent", attempts)


def retried(error: dict[str, Any], code: str, attempt: int = 1) -> None:
    """A transient failure: reported with its code, and a next attempt scheduled."""
    assert error["data"]["errorCode"] == code, error
    assert error["data"]["job"]["attemptsMade"] == attempt
    assert error["data"]["job"]["nextAttempt"] is not None


@pytest.mark.fault(
    "SMTP: connection refused",
    "messageDeliveryError ECONNECTION with a next attempt; message `queued`; once the server listens again "
    "it is sent exactly once (attempt 2)",
)
async def test_connection_refused(server: Server, smtp_server: SmtpServer, smtp_proxy: FaultProxy) -> None:
    await register_connected(server, via("refused", smtp_server, smtp_proxy))
    smtp_proxy.down()
    async with subscribe(server, account="refused") as sub:
        answer = await submit(server, "refused", simple())
        retried(await sub.wait_for(of("messageDeliveryError", answer["queueId"])), "ECONNECTION")
        state = await message(server, answer["queueId"])
        assert (state["status"], state["lastError"]["code"]) == ("queued", "ECONNECTION")
        assert smtp_server.messages == []
        smtp_proxy.up()
        await recovers(server, sub, smtp_server, answer, attempts=2)


@pytest.mark.fault(
    "SMTP: connection dropped in the middle of DATA",
    "the server reads the message and hangs up before replying: messageDeliveryError ECONNECTION, retried, "
    "then sent exactly once",
)
async def test_dropped_in_data(server: Server, smtp_server: SmtpServer) -> None:
    await register_connected(server, account_input("dropped", smtp_server))
    smtp_server.close_in_data(1)
    async with subscribe(server, account="dropped") as sub:
        answer = await submit(server, "dropped", simple())
        error = await sub.wait_for(of("messageDeliveryError", answer["queueId"]))
        retried(error, "ECONNECTION")
        assert smtp_server.messages == []
        await recovers(server, sub, smtp_server, answer, attempts=2)


@pytest.mark.fault(
    "SMTP: server accepts the connection and never answers",
    f"with smtp_timeout_seconds={SMTP_TIMEOUT:g}, the attempt ends in ETIMEDOUT within the bound (no hung "
    "worker); retried and sent once the server answers",
)
async def test_silent_server(
    server: Server, smtp_server: SmtpServer, smtp_proxy: FaultProxy, figures: Figures
) -> None:
    await register_connected(server, via("silent", smtp_server, smtp_proxy))
    smtp_proxy.set_mode("blackhole")
    async with subscribe(server, account="silent") as sub:
        started = time.monotonic()
        answer = await submit(server, "silent", simple())
        error = await sub.wait_for(of("messageDeliveryError", answer["queueId"]))
        took = time.monotonic() - started
        retried(error, "ETIMEDOUT")
        figures["attempt ended after"] = f"{took:.2f} s (timeout {SMTP_TIMEOUT:g} s)"
        assert took < SMTP_TIMEOUT * 3
        smtp_proxy.set_mode("pass")
        await recovers(server, sub, smtp_server, answer, attempts=2)


@pytest.mark.fault(
    "SMTP: 421 on connect",
    "greeting `421 4.3.2`: messageDeliveryError ECONNECTION with smtpResponseCode 421, retried, "
    "then sent once",
)
async def test_421_on_connect(server: Server, smtp_server: SmtpServer, smtp_proxy: FaultProxy) -> None:
    await register_connected(server, via("busy", smtp_server, smtp_proxy))
    smtp_proxy.set_mode("greet", "421 4.3.2 Service not available, closing transmission channel")
    async with subscribe(server, account="busy") as sub:
        answer = await submit(server, "busy", simple())
        error = await sub.wait_for(of("messageDeliveryError", answer["queueId"]))
        retried(error, "ECONNECTION")
        assert error["data"]["smtpResponseCode"] == 421
        assert "421" in error["data"]["error"]
        smtp_proxy.set_mode("pass")
        await recovers(server, sub, smtp_server, answer, attempts=2)


@pytest.mark.fault(
    "SMTP: TLS handshake failure (STARTTLS, untrusted certificate)",
    "the server starts offering STARTTLS with a self-signed certificate: messageDeliveryError ETLS "
    "(certificate verification), nothing sent in clear; sent once the server is fixed",
)
async def test_starttls_untrusted_certificate(
    server: Server, smtp_server: SmtpServer, smtp_proxy: FaultProxy, self_signed_cert: SelfSignedCert
) -> None:
    await register_connected(server, via("starttls", smtp_server, smtp_proxy))
    with SmtpServer(tls_context=self_signed_cert.server_context()) as tls_server:
        smtp_proxy.retarget(tls_server.host, tls_server.port)
        async with subscribe(server, account="starttls") as sub:
            answer = await submit(server, "starttls", simple())
            error = await sub.wait_for(of("messageDeliveryError", answer["queueId"]))
            retried(error, "ETLS")
            assert "certificate" in error["data"]["error"].lower()
            assert tls_server.messages == []
            smtp_proxy.retarget(smtp_server.host, smtp_server.port)
            await recovers(server, sub, smtp_server, answer, attempts=2)


@pytest.mark.fault(
    "SMTP: TLS handshake failure (implicit TLS, server speaks plain text)",
    "an implicit-TLS account whose server stops speaking TLS: messageDeliveryError ETLS, retried, "
    "sent once TLS works again",
)
async def test_implicit_tls_handshake_fails(
    server: Server, smtp_server: SmtpServer, self_signed_cert: SelfSignedCert
) -> None:
    with (
        SmtpServer(implicit_tls_context=self_signed_cert.server_context()) as tls_server,
        FaultProxy(tls_server.host, tls_server.port) as proxy,
    ):
        data = account_input("tls", tls_server)
        data["smtp"] = smtp_block(
            tls_server, host=proxy.host, port=proxy.port, secure=True, tls={"rejectUnauthorized": False}
        )
        await register_connected(server, data)
        proxy.retarget(smtp_server.host, smtp_server.port)  # plain SMTP where TLS is expected
        async with subscribe(server, account="tls") as sub:
            answer = await submit(server, "tls", simple())
            error = await sub.wait_for(of("messageDeliveryError", answer["queueId"]))
            retried(error, "ETLS")
            assert smtp_server.messages == []
            proxy.retarget(tls_server.host, tls_server.port)
            await recovers(server, sub, tls_server, answer, attempts=2)
            assert tls_server.messages[0].tls


@pytest.mark.fault(
    "SMTP: 452 for some recipients, 250 for others",
    "messageSent lists exactly which recipients were accepted and which rejected (code and text), so does "
    "the message in the API; the sink got it for the accepted ones only; all recipients 452 is a retried "
    "failure",
)
async def test_partial_452(server: Server, smtp_server: SmtpServer) -> None:
    await register_connected(server, account_input("partial", smtp_server))
    smtp_server.reject_recipients(
        {
            "full@example.org": (452, "4.2.2 Mailbox full"),
            "busy@example.org": (452, "4.3.1 Insufficient storage"),
        }
    )
    to = [{"address": "ok1@example.org"}, {"address": "full@example.org"}, {"address": "ok2@example.org"}]
    async with subscribe(server, account="partial") as sub:
        answer = await submit(
            server, "partial", {"to": to, "cc": [{"address": "busy@example.org"}], "text": "x"}
        )
        sent = await sub.wait_for(of("messageSent", answer["queueId"]))
        expected_rejected = {
            "full@example.org": {"code": 452, "message": "4.2.2 Mailbox full"},
            "busy@example.org": {"code": 452, "message": "4.3.1 Insufficient storage"},
        }
        assert sent["data"]["accepted"] == ["ok1@example.org", "ok2@example.org"]
        assert sent["data"]["rejected"] == expected_rejected
        state = await message(server, answer["queueId"])
        assert state["status"] == "sent"
        assert state["accepted"] == ["ok1@example.org", "ok2@example.org"]
        assert state["rejected"] == expected_rejected
        (received,) = await smtp_server.wait_for_messages(1)
        assert received.rcpt_tos == ("ok1@example.org", "ok2@example.org")

        # Every recipient 452: nothing was delivered, so it is a failed attempt, retried later.
        only = await submit(server, "partial", simple("full@example.org"))
        error = await sub.wait_for(of("messageDeliveryError", only["queueId"]))
        retried(error, "EENVELOPE")
        assert error["data"]["smtpResponseCode"] == 452
        assert (await message(server, only["queueId"]))["status"] == "queued"


@pytest.mark.fault(
    "SMTP: 554 after DATA",
    "permanent: one messageDeliveryError (EMESSAGE, 554, no next attempt) then messageFailed; message "
    "`failed`; never retried, nothing recorded by the sink",
)
async def test_554_after_data(server: Server, smtp_server: SmtpServer) -> None:
    await register_connected(server, account_input("spam", smtp_server))
    smtp_server.fail_next(1, code=554, message="5.7.1 Message rejected as spam")
    async with subscribe(server, account="spam") as sub:
        answer = await submit(server, "spam", simple())
        error = await sub.wait_for(of("messageDeliveryError", answer["queueId"]))
        failed = await sub.wait_for(of("messageFailed", answer["queueId"]))
        assert error["data"]["errorCode"] == "EMESSAGE" and error["data"]["smtpResponseCode"] == 554
        assert error["data"]["job"] == {"attemptsMade": 1, "attempts": 10, "nextAttempt": None}
        assert "spam" in failed["data"]["error"] and failed["data"]["messageId"] == answer["messageId"]
        server.advance(3600)
        await server.drain()
        assert [e["event"] for e in sub.events if e["data"].get("queueId") == answer["queueId"]] == [
            "messageDeliveryError",
            "messageFailed",
        ]
    state = await message(server, answer["queueId"])
    assert (state["status"], state["attemptsMade"], state["lastError"]["code"]) == ("failed", 1, "EMESSAGE")
    assert smtp_server.messages == []
