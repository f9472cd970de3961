"""IMAP faults around the Sent-folder copy, and an account whose password changes after it connected.

The copy is an obligation recorded with `sent`, retried with backoff and given up (messageCopyError, once)
when its attempts are spent or retrying cannot help; no IMAP failure, nor a kill -9 before the copy, may cause
a second send. The password tests check that an account which cannot log in holds its queue instead of
burning attempts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Figures, account_input, imap_block, register_connected, smtp_block
from tests.faults.helpers import HOOK, SUBMIT, copies, message, of, simple, submit
from tests.faults.process import ServerProcess
from tests.harness import Server, run_server, subscribe, wait_webhook, webhook_event
from tests.servers.imap import ImapServer
from tests.servers.proxy import FaultProxy
from tests.servers.smtp import SmtpServer
from tests.servers.webhook_receiver import WebhookReceiver

IMAP_TIMEOUT = 2.0  # short, for the silent server; pymap's first login can take a second
UPDATE = (
    "\nmutation Upd($account: ID!, $input: UpdateAccountInput!) "
    "{ updateAccount(account: $account, input: $input) { state } }"
)
ACCOUNT = '{ account(account: "%s") { state lastError { code message } } }'
COPY_STATUS = "query Copy($q: ID!) { message(queueId: $q) { copyStatus } }"


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
    server: Server, smtp: SmtpServer, account: str, attempts: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Submit; expect messageSent, then messageCopyError once the copy's `attempts`-th try failed (each try
    due after its backoff, not one before); then prove nothing is sent again."""
    async with subscribe(server, account=account) as sub:
        answer = await submit(server, account, simple())
        await sub.wait_for(of("messageSent", answer["queueId"]))
        for tried in range(1, attempts + 1):
            await server.workers.sent_copy.drain()
            if tried < attempts:
                assert await copy_status(server, answer["queueId"]) == "pending", f"after try {tried}"
                assert not [e for e in sub.events if e["event"] == "messageCopyError"]
            server.advance(24 * 3600)  # every retry time there could be has passed
        copy_error = await sub.wait_for(of("messageCopyError", answer["queueId"]))
        await server.drain()
        await server.workers.sent_copy.drain()
        events = [e["event"] for e in sub.events if e["data"].get("queueId") == answer["queueId"]]
    assert events == ["messageSent", "messageCopyError"]
    assert copies(await smtp.wait_for_messages(1), answer["messageId"]) == 1
    state = await message(server, answer["queueId"])
    assert (state["status"], state["attemptsMade"], state["copiedTo"]) == ("sent", 1, None)
    assert state["copyError"]
    assert await copy_status(server, answer["queueId"]) == "failed"
    return copy_error, state


async def copy_status(server: Server, queue_id: str) -> str | None:
    status: str | None = (await server.gql(COPY_STATUS, {"q": queue_id}))["message"]["copyStatus"]
    return status


@pytest.mark.fault(
    "IMAP: Sent-folder APPEND fails",
    "APPEND refused (folder does not exist): no retry (permanent), message stays `sent` (sent once), "
    "messageCopyError reported once, copyError on the message, never sent again",
)
async def test_append_refused(server: Server, smtp_server: SmtpServer, imap_server: ImapServer) -> None:
    await register_connected(
        server, with_imap("noappend", smtp_server, imap_server, sentMailPath="No Such Folder")
    )
    copy_error, state = await sent_once_copy_failed(server, smtp_server, "noappend", attempts=1)
    assert "No Such Folder" in copy_error["data"]["error"]
    assert "No Such Folder" in state["copyError"]


@pytest.mark.fault(
    "IMAP: server disappears before the copy",
    "IMAP connection refused throughout: the copy is retried with backoff, silently, until its "
    "sent_copy_attempts are spent; then messageCopyError ECONNECTION once; message `sent` once, nothing sent "
    "twice",
)
async def test_imap_gone(
    server: Server, smtp_server: SmtpServer, imap_server: ImapServer, imap_proxy: FaultProxy
) -> None:
    await register_connected(server, with_imap("imapgone", smtp_server, imap_server, imap_proxy))
    imap_proxy.down()
    attempts = server.settings.sent_copy_attempts
    copy_error, _ = await sent_once_copy_failed(server, smtp_server, "imapgone", attempts)
    assert copy_error["data"]["errorCode"] == "ECONNECTION"


@pytest.mark.fault(
    "IMAP: server accepts and never answers",
    f"with imap_timeout_seconds={IMAP_TIMEOUT:g} and one copy attempt: the copy ends in ETIMEDOUT within the "
    "bound, message `sent` once, messageCopyError reported",
)
async def test_imap_silent(
    tmp_path: Path, smtp_server: SmtpServer, imap_server: ImapServer, imap_proxy: FaultProxy, figures: Figures
) -> None:
    async with run_server(tmp_path, imap_timeout_seconds=IMAP_TIMEOUT, sent_copy_attempts=1) as server:
        await register_connected(server, with_imap("imapsilent", smtp_server, imap_server, imap_proxy))
        imap_proxy.set_mode("blackhole")
        started = time.monotonic()
        copy_error, _ = await sent_once_copy_failed(server, smtp_server, "imapsilent", attempts=1)
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


REGISTER = "mutation R($input: RegisterAccountInput!) { registerAccount(input: $input) { state } }"
COPY_STATE = "query Copy($q: ID!) { message(queueId: $q) { status copyStatus copiedTo copyError } }"
KILL_BASE = 5.0  # retry_base_seconds of both processes: the first retry is due >= 3.75 s after the failure


async def copy_state_reaches(
    proc: ServerProcess, http: httpx.AsyncClient, queue_id: str, done: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The message's copy state, once `done` holds: a bounded poll of the API, since a copy that is
    retried or made publishes no event (a deadline against a hang, not a timing)."""
    async with asyncio.timeout(30):
        while True:
            state: dict[str, Any] = (await proc.gql(http, COPY_STATE, {"q": queue_id}))["message"]
            if done(state):
                return state
            await asyncio.sleep(0.05)


@pytest.mark.fault(
    "kill -9 between `sent` and the Sent copy",
    "IMAP unreachable while the message is sent: the copy's first try fails and the obligation waits "
    f"`pending` with its backoff ({KILL_BASE:g} s base); SIGKILL; the database holds the message `sent` with "
    "its copy `pending` and its body; IMAP back, restart on the same database: the copy is made (Sent folder "
    "holds it once, body dropped), the SMTP sink has the message once, one messageSent, no messageCopyError",
)
async def test_kill_between_sent_and_copy(
    tmp_path: Path,
    smtp_server: SmtpServer,
    imap_server: ImapServer,
    imap_proxy: FaultProxy,
    webhook_receiver: WebhookReceiver,
    figures: Figures,
) -> None:
    proc = ServerProcess(tmp_path, GQL_MAIL_RETRY_BASE_SECONDS=str(KILL_BASE)).start()
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            hook = {
                "url": webhook_receiver.url,
                "events": ["accountConnected", "messageSent", "messageCopyError"],
            }
            await proc.gql(http, HOOK, {"input": hook})
            await proc.gql(
                http, REGISTER, {"input": with_imap("killcopy", smtp_server, imap_server, imap_proxy)}
            )
            await wait_webhook(webhook_receiver, webhook_event("accountConnected"), timeout=15)
            imap_proxy.down()
            answer = (await proc.gql(http, SUBMIT, {"account": "killcopy", "input": simple()}))[
                "submitMessage"
            ]
            queue_id = answer["queueId"]
            await wait_webhook(webhook_receiver, webhook_event("messageSent", queue_id), timeout=15)
            # Killed once the first try is recorded: the copy is then `pending` (not held by the process).
            # Kills while a copy is held ('copying') need the heartbeat reclaim of dead workers' claims.
            await copy_state_reaches(
                proc, http, queue_id, lambda m: m["copyStatus"] == "pending" and m["copyError"] is not None
            )
            proc.kill()
            (at_kill,) = proc.rows(
                "SELECT status, attempts_made, copy_status, copy_attempts, length(raw) > 0"
                " FROM outbox_message WHERE id = ?",
                queue_id,
            )
            assert at_kill == ("sent", 1, "pending", 1, 1), "the obligation and the body survived the kill"

            imap_proxy.up()
            proc.start()
            state = await copy_state_reaches(
                proc, http, queue_id, lambda m: m["copyStatus"] in ("done", "failed")
            )
    finally:
        proc.stop()
    assert state == {"status": "sent", "copyStatus": "done", "copiedTo": "Sent", "copyError": None}
    assert proc.rows("SELECT length(raw), copy_attempts FROM outbox_message WHERE id = ?", queue_id) == [
        (0, 2)
    ]
    stored = [m for m in await imap_server.fetch_messages("Sent") if answer["messageId"].encode() in m.raw]
    assert len(stored) == 1 and "\\Seen" in stored[0].flags
    assert copies(smtp_server.messages, answer["messageId"]) == 1, "the kill never caused a second send"
    events = [
        r.header("X-GqlMail-Event")
        for r in webhook_receiver.received
        if r.header("X-GqlMail-Event") != "accountConnected" and r.json()["data"].get("queueId") == queue_id
    ]
    assert events == ["messageSent"]
    figures["SMTP deliveries of the message"] = 1
    figures["copies in the Sent folder"] = 1
