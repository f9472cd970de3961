"""Claims are kept by heartbeats and attempts are counted when claimed.

A worker that dies mid-send (here a "ghost": a runtime on the same database that claims, sends over real
SMTP and never records, and has no heartbeat row, so it is dead to everyone else) has its claims handed
back by any live worker; each hand-back is a stall. However often that happens, a message reaches the SMTP
server at most `attempts` times, and after `max_stalled` stalls it fails with ESTALLED instead of going out
again. A graceful stop gives back what it has not started, uncounted."""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from gql_mail.clock import ManualClock
from gql_mail.db import Database
from gql_mail.mail.smtp import SmtpConnection
from gql_mail.models import Account, OutboxMessage
from gql_mail.queue import STALLED_CODE, claim_messages
from gql_mail.runtime import Runtime
from gql_mail.services.accounts import smtp_settings
from gql_mail.services.delivery import recover_stalled
from gql_mail.workers.heartbeat import Heartbeat
from tests.conftest import account_input, register_connected
from tests.faults.helpers import MESSAGE, message_id_of, simple, submit
from tests.harness import Server, run_server, subscribe
from tests.servers.smtp import SmtpServer


def ghost_of(server: Server, clock: ManualClock) -> Runtime:
    """Another worker on the same database, which never beats a heartbeat."""
    return dataclasses.replace(server.runtime, clock=clock, worker_id="ghost")


async def scheduled_message(
    server: Server, smtp_server: SmtpServer, account: str, **extra: Any
) -> tuple[dict[str, Any], ManualClock]:
    """A message of a new account that the server's own worker never finds due (by its clock it is due a
    day later), and a clock at which another worker does."""
    await register_connected(server, account_input(account, smtp_server))
    send_at = server.clock.now() + timedelta(days=1)
    answer = await submit(server, account, simple(sendAt=send_at.isoformat(), **extra))
    return answer, ManualClock(send_at + timedelta(seconds=1))


async def send_without_recording(ghost: Runtime, smtp: SmtpServer) -> int:
    """Claim what is due, send it for real, then 'die' (record nothing). Returns how many were sent."""
    claimed = await claim_messages(ghost, 10)
    for message in claimed:
        async with ghost.db.read() as session:
            account = await session.get(Account, message.account_id)
        assert account is not None
        async with SmtpConnection(smtp_settings(ghost, account)) as connection:
            await connection.send(message.envelope_from, message.envelope_to, message.raw)
    return len(claimed)


async def stalled_until_done(server: Server, smtp_server: SmtpServer, attempts: int) -> dict[str, Any]:
    answer, due = await scheduled_message(server, smtp_server, "loop", deliveryAttempts=attempts)
    ghost = ghost_of(server, due)
    async with subscribe(server, account="loop", events=["messageFailed"]) as sub:
        for _ in range(attempts + server.settings.max_stalled + 5):  # far more rounds than allowed
            if not await send_without_recording(ghost, smtp_server):
                break
            await recover_stalled(server.runtime)  # a live worker finds the ghost dead
        failed = await sub.wait_for(lambda e: e["data"]["queueId"] == answer["queueId"])
    message = (await server.gql(MESSAGE, {"q": answer["queueId"]}))["message"]
    sent = Counter(message_id_of(m) for m in smtp_server.messages)[answer["messageId"]]
    return {"message": message, "event": failed, "sent": sent}


async def test_a_reclaim_loop_sends_no_more_than_the_attempt_budget(
    server: Server, smtp_server: SmtpServer
) -> None:
    seen = await stalled_until_done(server, smtp_server, attempts=2)
    assert seen["sent"] == 2, "every claim is an attempt: two attempts, two sends, never a third"
    assert seen["message"]["status"] == "failed"
    assert seen["message"]["attemptsMade"] == 2
    assert seen["message"]["lastError"]["code"] == STALLED_CODE
    assert seen["event"]["data"]["errorCode"] == STALLED_CODE


async def test_a_message_that_stalls_too_often_fails_instead_of_going_out_again(
    server: Server, smtp_server: SmtpServer
) -> None:
    seen = await stalled_until_done(server, smtp_server, attempts=10)
    # Handed back after stalls 1..max_stalled, failed at the next one.
    assert seen["sent"] == server.settings.max_stalled + 1
    assert seen["message"]["status"] == "failed"
    assert seen["message"]["lastError"]["code"] == STALLED_CODE


async def test_a_live_worker_keeps_its_claims_however_long_they_wait(
    server: Server, smtp_server: SmtpServer
) -> None:
    """Claims of a worker with a fresh heartbeat are never handed back, even far past the lease."""
    answer, clock = await scheduled_message(server, smtp_server, "held")
    live = dataclasses.replace(server.runtime, clock=clock, worker_id="live-worker")
    reaper = dataclasses.replace(server.runtime, clock=clock)
    heartbeat = Heartbeat(live)
    await heartbeat.start()
    (claimed,) = await claim_messages(live, 10)
    try:
        for _ in range(5):  # long past the lease in all, never a lease without a beat
            clock.advance(server.settings.lease_seconds * 0.9)
            await heartbeat.beat()
            assert await recover_stalled(reaper) == 0
    finally:
        await heartbeat.stop()
    async with server.runtime.db.read() as session:
        row = await session.get(OutboxMessage, answer["queueId"])
    assert row is not None and row.status == "sending" and row.claimed_by == live.worker_id
    assert claimed.attempts_made == 1
    # Its heartbeat row is gone (a graceful stop): another worker hands the claim back at once.
    assert await recover_stalled(server.runtime) == 1


async def test_a_graceful_stop_gives_back_what_it_has_not_started(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    count = 40
    async with run_server(tmp_path) as first:
        await register_connected(first, account_input("stop", smtp_server))
        url = first.settings.database_url
        smtp_server.delay_data(0.3)
        answers = [await submit(first, "stop", simple(f"s{i}@example.org")) for i in range(count)]
        await smtp_server.wait_for_messages(1)
    # The server is stopped: the transactions in progress finished, the rest went back, uncounted.
    left = Database(url)
    try:
        async with left.read() as session:
            rows = (await session.execute(select(OutboxMessage))).scalars().all()
    finally:
        await left.dispose()
    by_status = Counter(r.status for r in rows)
    assert "sending" not in by_status
    assert by_status["queued"] > 0, "the stop came too late to test anything"
    assert all(r.attempts_made == 0 for r in rows if r.status == "queued")
    async with run_server(tmp_path, database_url=url) as second:
        smtp_server.delay_data(0)
        await second.drain()
        await smtp_server.wait_for_messages(count)
    received = Counter(message_id_of(m) for m in smtp_server.messages)
    assert received == Counter({a["messageId"]: 1 for a in answers}), "nothing was sent twice"


async def test_a_message_another_worker_is_sending_cannot_be_cancelled(
    server: Server, smtp_server: SmtpServer
) -> None:
    answer, due = await scheduled_message(server, smtp_server, "busy")
    other = ghost_of(server, due)
    (claimed,) = await claim_messages(other, 10)
    cancel = "mutation C($q: ID!) { cancelMessage(queueId: $q) }"
    assert (await server.gql(cancel, {"q": answer["queueId"]}))["cancelMessage"] is False
    assert (await server.gql(MESSAGE, {"q": answer["queueId"]}))["message"]["status"] == "sending"
