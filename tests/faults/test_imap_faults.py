"""IMAP faults around the Sent-folder copy, and an account whose password changes after it connected.

The copy happens after the message is recorded `sent`, so no IMAP failure may cause a second send; the
password tests check that an account which cannot log in holds its queue instead of burning attempts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import account_input, imap_block, register_connected, smtp_block
from tests.faults.conftest import Figures
from tests.faults.helpers import copies, message, of, simple, submit
from tests.harness import Server, run_server, subscribe
from tests.servers.imap import ImapServer
from tests.servers.proxy import FaultProxy
from tests.servers.smtp import SmtpServer

IMAP_TIMEOUT = 2.0  # short, for the silent server; pymap's first login can take a second
UPDATE = (
    "\nmutation Upd($account: ID!, $input: UpdateAccountInput!) "
    "{ updateAccount(account: $account, input: $input) { state } }"
)
ACCOUNT = '{ account(account: "%s") { state lastError { code message } } }'


@pytest.fixture
def imap_proxy(imap_server: ImapServer) -> Iterator[FaultProxy]:
    with FaultProxy(imap_server.host, imap_server.port) as proxy:
        yield proxy


def with_imap(
    account: str, smtp: SmtpServer, imap: ImapServer, proxy: FaultProxy | None = None, **imap_overrides: Any
) -> dict[str, Any]:
    data = account_input(account, smtp, imap)
    if proxy is not None:
        imap_overrides.update(host=proxy.host, port=proxy.port)
    data["imap"] = imap_block(imap, **imap_overrides)
    return data


async def sent_once_copy_failed(
    server: Server, smtp: SmtpServer, account: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Submit; expect messageSent then messageCopyError; then prove nothing is sent again."""
    async with subscribe(server, account=account) as sub:
        answer = await submit(server, account, simple())
        await sub.wait_for(of("messageSent", answer["queueId"]))
        copy_error = await sub.wait_for(of("messageCopyError", answer["queueId"]))
        server.advance(24 * 3600)  # every retry time there could be has passed
        await server.drain()
        events = [e["event"] for e in sub.events if e["data"].get("queueId") == answer["queueId"]]
    assert events == ["messageSent", "messageCopyError"]
    assert copies(await smtp.wait_for_messages(1), answer["messageId"]) == 1
    state = await message(server, answer["queueId"])
    assert (state["status"], state["attemptsMade"], state["copiedTo"]) == ("sent", 1, None)
    assert state["copyError"]
    return copy_error, state


@pytest.mark.fault(
    "IMAP: Sent-folder APPEND fails",
    "APPEND refused (folder does not exist): message stays `sent` (sent once), messageCopyError reported, "
    "copyError on the message, never sent again",
)
async def test_append_refused(server: Server, smtp_server: SmtpServer, imap_server: ImapServer) -> None:
    await register_connected(
        server, with_imap("noappend", smtp_server, imap_server, sentMailPath="No Such Folder")
    )
    copy_error, state = await sent_once_copy_failed(server, smtp_server, "noappend")
    assert "No Such Folder" in copy_error["data"]["error"]
    assert "No Such Folder" in state["copyError"]


@pytest.mark.fault(
    "IMAP: server disappears before the copy",
    "IMAP connection refused: message `sent` once, messageCopyError ECONNECTION, nothing sent twice",
)
async def test_imap_gone(
    server: Server, smtp_server: SmtpServer, imap_server: ImapServer, imap_proxy: FaultProxy
) -> None:
    await register_connected(server, with_imap("imapgone", smtp_server, imap_server, imap_proxy))
    imap_proxy.down()
    copy_error, _ = await sent_once_copy_failed(server, smtp_server, "imapgone")
    assert copy_error["data"]["errorCode"] == "ECONNECTION"


@pytest.mark.fault(
    "IMAP: server accepts and never answers",
    f"with imap_timeout_seconds={IMAP_TIMEOUT:g}: copy ends in ETIMEDOUT within the bound, message `sent` "
    "once, messageCopyError reported",
)
async def test_imap_silent(
    tmp_path: Path, smtp_server: SmtpServer, imap_server: ImapServer, imap_proxy: FaultProxy, figures: Figures
) -> None:
    async with run_server(tmp_path, imap_timeout_seconds=IMAP_TIMEOUT) as server:
        await register_connected(server, with_imap("imapsilent", smtp_server, imap_server, imap_proxy))
        imap_proxy.set_mode("blackhole")
        started = time.monotonic()
        copy_error, _ = await sent_once_copy_failed(server, smtp_server, "imapsilent")
        took = time.monotonic() - started
    assert copy_error["data"]["errorCode"] == "ETIMEDOUT"
    figures["copy gave up after"] = f"< {took:.2f} s (timeout {IMAP_TIMEOUT:g} s)"
    assert took < IMAP_TIMEOUT * 3


async def state_of(server: Server, account: str) -> dict[str, Any]:
    result: dict[str, Any] = (await server.gql(ACCOUNT % account))["account"]
    return result


@pytest.mark.fault(
    "Password changed at the provider, noticed by the periodic check",
    "next `check_accounts` run: AUTHENTICATION_ERROR (authenticationError event, lastError EAUTH); its "
    "queued messages wait with 0 attempts used through a day of due time; after updateAccount with the "
    "new password they are all sent, once each, on their first attempt",
)
async def test_password_change_check_first(server: Server, smtp_server: SmtpServer, figures: Figures) -> None:
    await register_connected(server, account_input("rotated", smtp_server))
    send_at = (server.clock.now() + timedelta(minutes=10)).isoformat()
    async with subscribe(server, account="rotated") as sub:
        answers = [
            await submit(server, "rotated", simple(f"r{i}@example.org", sendAt=send_at)) for i in range(3)
        ]
        smtp_server.set_password("rotated-at-the-provider")
        await server.workers.accounts.check_all()  # the scheduler's check_accounts job
        auth = await sub.wait_for(of("authenticationError"))
        assert auth["data"]["errorCode"] == "EAUTH"
        state = await state_of(server, "rotated")
        assert state["state"] == "AUTHENTICATION_ERROR" and state["lastError"]["code"] == "EAUTH"

        for _ in range(4):  # a day passes in steps; the messages are due all along
            server.advance(6 * 3600)
            await server.drain()
        for answer in answers:
            waiting = await message(server, answer["queueId"])
            assert (waiting["status"], waiting["attemptsMade"]) == ("queued", 0)
        assert smtp_server.messages == []
        assert not [e for e in sub.events if e["event"].startswith("message")]

        data = account_input("rotated", smtp_server)  # the user enters the new password
        await server.gql(UPDATE, {"account": "rotated", "input": {"smtp": smtp_block(smtp_server)}})
        await sub.wait_for(of("accountConnected"))
        sent = await sub.wait_count(of("messageSent"), 3)
    assert data["smtp"]["auth"]["pass"] == "rotated-at-the-provider"
    assert {e["data"]["queueId"] for e in sent} == {a["queueId"] for a in answers}
    received = await smtp_server.wait_for_messages(3)
    for answer in answers:
        assert copies(received, answer["messageId"]) == 1
        assert (await message(server, answer["queueId"]))["attemptsMade"] == 1
    figures["attempts used while broken"] = 0


@pytest.mark.fault(
    "Password changed at the provider, met first by a delivery",
    "the first connection to meet the 535 fails the one message it carried (messageDeliveryError EAUTH 535, "
    "then messageFailed with the 535 text, as the send-time contract says) and marks the account "
    "AUTHENTICATION_ERROR; the lane's other connections give their messages back untried; every other "
    "queued message waits with no attempt through a day of due time, and all are sent once each after "
    "reconnectAccount",
)
async def test_password_change_met_by_delivery(
    server: Server, smtp_server: SmtpServer, figures: Figures
) -> None:
    await register_connected(server, account_input("rotated2", smtp_server))
    send_at = (server.clock.now() + timedelta(minutes=10)).isoformat()
    count = 8
    async with subscribe(server, account="rotated2") as sub:
        answers = [
            await submit(server, "rotated2", simple(f"s{i}@example.org", sendAt=send_at))
            for i in range(count)
        ]
        smtp_server.set_password("rotated-again")
        server.advance(600)
        await sub.wait_for(of("authenticationError"))
        failed = await sub.wait_for(of("messageFailed"))
        await server.drain()
        for _ in range(4):
            server.advance(6 * 3600)
            await server.drain()
        errors = [e for e in sub.events if e["event"] == "messageDeliveryError"]
        assert len(errors) == 1, "only the message that met the 535 first has an attempt"
        assert errors[0]["data"]["errorCode"] == "EAUTH" and errors[0]["data"]["smtpResponseCode"] == 535
        assert errors[0]["data"]["job"]["nextAttempt"] is None
        assert failed["data"]["queueId"] == errors[0]["data"]["queueId"] and "535" in failed["data"]["error"]
        assert len([e for e in sub.events if e["event"] == "messageFailed"]) == 1
        waiting = [a for a in answers if a["queueId"] != failed["data"]["queueId"]]
        for answer in waiting:
            state = await message(server, answer["queueId"])
            assert state["status"] == "queued" and state["attemptsMade"] == 0
        assert smtp_server.messages == []
        assert (await state_of(server, "rotated2"))["state"] == "AUTHENTICATION_ERROR"

        smtp_server.set_password("smtppass")  # fixed at the provider; the user asks to reconnect
        await server.gql('mutation { reconnectAccount(account: "rotated2") { state } }')
        await sub.wait_for(of("accountConnected"))
        sent = await sub.wait_count(of("messageSent"), count - 1)
    assert {e["data"]["queueId"] for e in sent} == {a["queueId"] for a in waiting}
    received = await smtp_server.wait_for_messages(count - 1)
    for answer in waiting:
        assert copies(received, answer["messageId"]) == 1
    figures["messages with an attempt used by the 535"] = f"1 of {count}"
    figures["messages failed"] = "1 (the one that met the 535)"
