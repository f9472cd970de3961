"""The Sent-folder copy is a durable obligation: written with `sent`, retried with backoff after an IMAP
failure, given up (messageCopyError, once) when its attempts are spent or retrying cannot help, and never a
reason to send a message again. The message's body is kept exactly as long as the copy may still be made.

The copier is driven by hand (`SentCopier.drain` returns once every copy due when it was called has its
outcome recorded), time by the manual clock; events are read from the bus as they are published."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from gql_mail.clock import utc
from gql_mail.events import Event
from gql_mail.models import OutboxMessage
from gql_mail.queue import claim_copies, release_copies
from gql_mail.workers.sent_copy import NO_IMAP
from tests.conftest import account_input, imap_block, register_connected
from tests.harness import Server, run_server, subscribe
from tests.servers.imap import ImapServer
from tests.servers.proxy import FaultProxy
from tests.servers.smtp import ReceivedMessage, SmtpServer

SUBMIT = """
mutation Submit($account: ID!, $input: SubmitMessageInput!) {
  submitMessage(account: $account, input: $input) { messageId queueId }
}"""
MESSAGE = """
query Msg($q: ID!) { message(queueId: $q) { status attemptsMade copyStatus copiedTo copyError } }"""
UPDATE = """
mutation Upd($account: ID!, $input: UpdateAccountInput!) { updateAccount(account: $account, input: $input) {
  state } }"""
BASE = 5.0  # the harness's retry_base_seconds


@pytest.fixture
def imap_proxy(imap_server: ImapServer) -> Iterator[FaultProxy]:
    with FaultProxy(imap_server.host, imap_server.port) as proxy:
        yield proxy


@pytest.fixture
async def events(server: Server) -> AsyncIterator[list[Event]]:
    """Every event the server publishes, as it is published (after its commit)."""
    seen: list[Event] = []
    server.runtime.bus.add_listener(seen.append)
    yield seen


async def register(
    server: Server,
    account: str,
    smtp: SmtpServer,
    imap: ImapServer,
    proxy: FaultProxy | None = None,
    **imap_extra: Any,
) -> None:
    data = account_input(account, smtp, imap)
    if proxy is not None:
        imap_extra.update(host=proxy.host, port=proxy.port)
    data["imap"] = imap_block(imap, **imap_extra)
    await register_connected(server, data)


async def send(server: Server, account: str) -> dict[str, str]:
    """Submit one message and return once it is recorded `sent`."""
    message = {"to": [{"address": "to@example.org"}], "subject": "Sent copy", "text": "Hello"}
    async with subscribe(server, account=account) as sub:
        answer: dict[str, str] = (await server.gql(SUBMIT, {"account": account, "input": message}))[
            "submitMessage"
        ]
        await sub.wait_for(
            lambda e: e["event"] == "messageSent" and e["data"]["queueId"] == answer["queueId"]
        )
    return answer


async def row(server: Server, queue_id: str) -> OutboxMessage:
    async with server.runtime.db.read() as session:
        found = await session.get(OutboxMessage, queue_id)
    assert found is not None
    return found


async def shown(server: Server, queue_id: str) -> dict[str, Any]:
    result: dict[str, Any] = (await server.gql(MESSAGE, {"q": queue_id}))["message"]
    return result


def received(smtp: SmtpServer, message_id: str) -> int:
    """How many times the SMTP sink received the message with this Message-ID."""

    def mid(m: ReceivedMessage) -> str:
        for line in m.data.split(b"\r\n"):
            if line.lower().startswith(b"message-id:"):
                return line.split(b":", 1)[1].strip().decode()
        return ""

    return sum(mid(m) == message_id for m in smtp.messages)


async def in_sent(imap: ImapServer, message_id: str) -> int:
    wanted = message_id.encode()
    return sum(wanted in m.raw for m in await imap.fetch_messages("Sent"))


def named(events: list[Event], name: str, queue_id: str) -> list[Event]:
    return [e for e in events if e.event == name and e.data.get("queueId") == queue_id]


async def test_copy_is_made_once_and_the_body_dropped(
    server: Server, smtp_server: SmtpServer, imap_server: ImapServer, events: list[Event]
) -> None:
    await register(server, "copied", smtp_server, imap_server)
    answer = await send(server, "copied")
    await server.workers.sent_copy.drain()

    assert await in_sent(imap_server, answer["messageId"]) == 1
    stored = await row(server, answer["queueId"])
    assert (stored.status, stored.copy_status, stored.copied_to, stored.copy_error) == (
        "sent",
        "done",
        "Sent",
        None,
    )
    assert stored.raw == b"", "the body is dropped once the copy is made"
    assert (stored.copy_attempts, stored.claimed_by, stored.copy_next_attempt_at) == (1, None, None)
    assert (await shown(server, answer["queueId"]))["copyStatus"] == "done"
    assert not named(events, "messageCopyError", answer["queueId"])

    server.advance(24 * 3600)  # nothing is due any more: no second copy, no second send
    await server.drain()
    await server.workers.sent_copy.drain()
    assert await in_sent(imap_server, answer["messageId"]) == 1
    assert received(smtp_server, answer["messageId"]) == 1


async def test_a_message_some_recipients_refused_is_copied_too(
    server: Server, smtp_server: SmtpServer, imap_server: ImapServer
) -> None:
    """The partial-acceptance outcome is recorded by its own statement; it writes the obligation too."""
    await register(server, "partly", smtp_server, imap_server)
    smtp_server.reject_recipients({"bad@example.org": (550, "5.1.1 User unknown")})
    message = {"to": [{"address": "good@example.org"}, {"address": "bad@example.org"}], "text": "Hi"}
    async with subscribe(server, account="partly") as sub:
        answer = (await server.gql(SUBMIT, {"account": "partly", "input": message}))["submitMessage"]
        sent = await sub.wait_for(lambda e: e["event"] == "messageSent")
    assert sent["data"]["rejected"]
    await server.workers.sent_copy.drain()
    stored = await row(server, answer["queueId"])
    assert (stored.status, stored.copy_status, stored.copied_to, stored.raw) == ("sent", "done", "Sent", b"")
    assert await in_sent(imap_server, answer["messageId"]) == 1


async def test_a_message_without_a_copy_has_no_copy_status(server: Server, smtp_server: SmtpServer) -> None:
    await register_connected(server, account_input("nocopy", smtp_server))  # IMAP disabled
    answer = await send(server, "nocopy")
    stored = await row(server, answer["queueId"])
    assert (stored.copy_status, stored.copy_next_attempt_at, stored.raw) == (None, None, b"")


async def test_imap_outage_copy_waits_with_backoff_and_is_made_when_imap_is_back(
    server: Server,
    smtp_server: SmtpServer,
    imap_server: ImapServer,
    imap_proxy: FaultProxy,
    events: list[Event],
) -> None:
    await register(server, "outage", smtp_server, imap_server, imap_proxy)
    imap_proxy.down()
    answer = await send(server, "outage")
    queue_id = answer["queueId"]
    await server.workers.sent_copy.drain()

    first = await row(server, queue_id)
    assert (first.status, first.copy_status, first.copy_attempts, first.claimed_by) == (
        "sent",
        "pending",
        1,
        None,
    )
    assert first.copy_error and "Connection failed" in first.copy_error
    assert first.raw != b"", "the body is kept while the copy may still be made"
    assert first.copy_next_attempt_at is not None
    wait = (utc(first.copy_next_attempt_at) - server.clock.now()).total_seconds()
    assert BASE * 0.75 <= wait <= BASE, "the first retry waits the backoff's base (with jitter)"

    server.advance(wait / 2)  # not due yet: no try
    await server.workers.sent_copy.drain()
    assert (await row(server, queue_id)).copy_attempts == 1

    server.advance(wait)  # due, IMAP still down: a second try, and a longer wait
    await server.workers.sent_copy.drain()
    second = await row(server, queue_id)
    assert (second.copy_status, second.copy_attempts) == ("pending", 2)
    assert second.copy_next_attempt_at is not None
    wait = (utc(second.copy_next_attempt_at) - server.clock.now()).total_seconds()
    assert 2 * BASE * 0.75 <= wait <= 2 * BASE
    assert (await shown(server, queue_id))["copyStatus"] == "pending"
    assert not named(events, "messageCopyError", queue_id), "a copy being retried is not an error yet"

    imap_proxy.up()
    server.advance(wait)
    await server.workers.sent_copy.drain()
    done = await row(server, queue_id)
    assert (done.status, done.copy_status, done.copied_to, done.copy_error, done.raw) == (
        "sent",
        "done",
        "Sent",
        None,
        b"",
    )
    assert done.copy_attempts == 3 and done.attempts_made == 1
    assert await in_sent(imap_server, answer["messageId"]) == 1
    assert not named(events, "messageCopyError", queue_id)
    server.advance(24 * 3600)
    await server.drain()
    assert received(smtp_server, answer["messageId"]) == 1, "the outage never caused a second send"
    assert [e.event for e in events if e.data.get("queueId") == queue_id] == ["messageSent"]


async def test_copy_is_given_up_when_its_attempts_are_spent(
    tmp_path: Path, smtp_server: SmtpServer, imap_server: ImapServer, imap_proxy: FaultProxy
) -> None:
    async with run_server(tmp_path, sent_copy_attempts=3) as server:
        events: list[Event] = []
        server.runtime.bus.add_listener(events.append)
        await register(server, "spent", smtp_server, imap_server, imap_proxy)
        imap_proxy.down()
        answer = await send(server, "spent")
        queue_id = answer["queueId"]
        for _ in range(5):  # more due times than attempts
            await server.workers.sent_copy.drain()
            server.advance(3600)
        await server.drain()

        stored = await row(server, queue_id)
        assert (stored.status, stored.attempts_made) == ("sent", 1)
        assert (stored.copy_status, stored.copy_attempts, stored.copied_to) == ("failed", 3, None)
        assert stored.copy_error and "Connection failed" in stored.copy_error
        assert (stored.raw, stored.claimed_by, stored.copy_next_attempt_at) == (b"", None, None)
        (given_up,) = named(events, "messageCopyError", queue_id)
        assert given_up.data == {
            "messageId": answer["messageId"],
            "queueId": queue_id,
            "error": stored.copy_error,
            "errorCode": "ECONNECTION",
        }
        assert [e.event for e in events if e.data.get("queueId") == queue_id] == [
            "messageSent",
            "messageCopyError",
        ]
        assert (await shown(server, queue_id))["copyStatus"] == "failed"
        imap_proxy.up()  # IMAP is back, but the copy was given up: nothing happens any more
        server.advance(24 * 3600)
        await server.workers.sent_copy.drain()
        assert (await row(server, queue_id)).copy_attempts == 3
        assert await in_sent(imap_server, answer["messageId"]) == 0
    assert received(smtp_server, answer["messageId"]) == 1


async def test_a_missing_folder_gives_up_at_once(
    server: Server, smtp_server: SmtpServer, imap_server: ImapServer, events: list[Event]
) -> None:
    await register(server, "nofolder", smtp_server, imap_server, sentMailPath="No Such Folder")
    answer = await send(server, "nofolder")
    await server.workers.sent_copy.drain()
    stored = await row(server, answer["queueId"])
    assert (stored.status, stored.copy_status, stored.copy_attempts, stored.raw) == ("sent", "failed", 1, b"")
    (given_up,) = named(events, "messageCopyError", answer["queueId"])
    assert "No Such Folder" in given_up.data["error"] and given_up.data["errorCode"] == "EPROTOCOL"
    server.advance(24 * 3600)
    await server.drain()
    await server.workers.sent_copy.drain()
    assert len(named(events, "messageCopyError", answer["queueId"])) == 1
    assert received(smtp_server, answer["messageId"]) == 1


async def test_imap_turned_off_before_the_copy_ends_it_quietly(
    server: Server,
    smtp_server: SmtpServer,
    imap_server: ImapServer,
    imap_proxy: FaultProxy,
    events: list[Event],
) -> None:
    await register(server, "turnedoff", smtp_server, imap_server, imap_proxy)
    imap_proxy.down()
    answer = await send(server, "turnedoff")
    await server.workers.sent_copy.drain()
    assert (await row(server, answer["queueId"])).copy_status == "pending"

    await server.gql(UPDATE, {"account": "turnedoff", "input": {"imap": {"disabled": True}}})
    server.advance(3600)
    await server.workers.sent_copy.drain()
    stored = await row(server, answer["queueId"])
    assert (stored.copy_status, stored.copy_error, stored.raw, stored.claimed_by) == (
        "failed",
        NO_IMAP,
        b"",
        None,
    )
    assert not named(events, "messageCopyError", answer["queueId"]), "the user turned IMAP off: no error"
    assert received(smtp_server, answer["messageId"]) == 1


async def test_released_copies_are_due_at_once_with_their_attempt_given_back(
    server: Server, smtp_server: SmtpServer, imap_server: ImapServer
) -> None:
    """What the copier's graceful stop does with copies it claimed and had not started; the claim is made by
    hand here, with the scheduler paused and delivery driven by hand, so no scheduled pass takes the copy."""
    await register(server, "released", smtp_server, imap_server)
    rt = server.runtime
    server.workers.scheduler.pause()
    try:
        answer = (
            await server.gql(
                SUBMIT,
                {"account": "released", "input": {"to": [{"address": "to@example.org"}], "text": "Hi"}},
            )
        )["submitMessage"]
        await server.drain()
        (claimed,) = await claim_copies(rt, 10)
        assert (claimed.id, claimed.copy_attempts) == (answer["queueId"], 1)
        held = await row(server, answer["queueId"])
        assert (held.copy_status, held.claimed_by) == ("copying", rt.worker_id)
        await release_copies(rt, [claimed.id])
        back = await row(server, answer["queueId"])
        assert (back.copy_status, back.claimed_by, back.copy_attempts) == ("pending", None, 0)
        assert back.copy_next_attempt_at is not None and utc(back.copy_next_attempt_at) <= server.clock.now()
    finally:
        server.workers.scheduler.resume()
    await server.workers.sent_copy.drain()
    assert await in_sent(imap_server, answer["messageId"]) == 1
    assert (await row(server, answer["queueId"])).copy_attempts == 1
