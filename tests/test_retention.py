"""Retention: what finished more than `retention_days` ago is deleted, in batches; nothing else is.

Messages go through the real flow (a real SMTP server, the real delivery worker) and the clock is moved a
month on; webhook deliveries and event payloads, which have no user-driven flow of their own to finish
deterministically, are written as rows with the states under test."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select, update
from sqlmodel import col

from gql_mail.models import (
    Account,
    AccountState,
    DeliveryAttempt,
    EventPayload,
    MessageStatus,
    OutboxMessage,
    Webhook,
    WebhookDelivery,
)
from gql_mail.services.retention import PruneCounts, prune
from tests.conftest import account_input, register_connected
from tests.faults.helpers import message, of, simple, submit
from tests.harness import Server, subscribe
from tests.servers.smtp import SmtpServer

DAY = 24 * 3600.0
CANCEL = "mutation($q: ID!) { cancelMessage(queueId: $q) }"


async def message_ids(server: Server) -> set[str]:
    async with server.runtime.db.read() as session:
        return set((await session.execute(select(col(OutboxMessage.id)))).scalars())


async def attempt_owners(server: Server) -> set[str]:
    async with server.runtime.db.read() as session:
        return set((await session.execute(select(col(DeliveryAttempt.outbox_id)))).scalars())


async def delivery_ids(server: Server) -> set[str]:
    async with server.runtime.db.read() as session:
        return set((await session.execute(select(col(WebhookDelivery.id)))).scalars())


async def payload_count(server: Server) -> int:
    async with server.runtime.db.read() as session:
        return int((await session.execute(select(func.count()).select_from(EventPayload))).scalar_one())


async def add_webhook(server: Server) -> str:
    """A disabled webhook: events write no deliveries for it, so the only ones are those a test adds."""
    hook_id = uuid.uuid4().hex
    async with server.runtime.db.write() as session:
        session.add(
            Webhook(
                id=hook_id,
                url="http://127.0.0.1:9/hook",
                events=["*"],
                enabled=False,
                created_at=server.clock.now(),
            )
        )
    return hook_id


async def add_delivery(
    server: Server, hook_id: str, status: str, due: datetime, delivered_at: datetime | None = None
) -> str:
    delivery_id = uuid.uuid4().hex
    async with server.runtime.db.write() as session:
        session.add(
            WebhookDelivery(
                id=delivery_id,
                webhook_id=hook_id,
                event="messageSent",
                order_key=delivery_id,
                body=b"{}",
                status=status,
                attempts_made=0 if status == "pending" else 1,
                next_attempt_at=due,
                created_at=min(due, server.clock.now()),
                delivered_at=delivered_at,
            )
        )
    return delivery_id


async def add_payloads(server: Server, n: int) -> None:
    async with server.runtime.db.write() as session:
        session.add_all(EventPayload(body=b"{}", created_at=server.clock.now()) for _ in range(n))


async def test_prune_deletes_only_what_finished_before_the_cutoff(
    server: Server, smtp_server: SmtpServer
) -> None:
    await register_connected(server, account_input("old", smtp_server))
    far = (server.clock.now() + timedelta(days=365)).isoformat()
    async with subscribe(server, account="old") as sub:
        sent = await submit(server, "old", simple())
        await sub.wait_for(of("messageSent", sent["queueId"]))
        owed = await submit(server, "old", simple())
        await sub.wait_for(of("messageSent", owed["queueId"]))
        smtp_server.reject_recipients({"nobody@example.org": (550, "5.1.1 User unknown")})
        failed = await submit(server, "old", simple("nobody@example.org"))
        await sub.wait_for(of("messageFailed", failed["queueId"]))
    queued = await submit(server, "old", simple(sendAt=far))
    cancelled = await submit(server, "old", simple(sendAt=far))
    assert (await server.gql(CANCEL, {"q": cancelled["queueId"]}))["cancelMessage"] is True
    await server.drain()
    # Its copy to the Sent folder is still to be made (the copy worker's state, set here by hand).
    async with server.runtime.db.write() as session:
        await session.execute(
            update(OutboxMessage)
            .where(col(OutboxMessage.id) == owed["queueId"])
            .values(copy_status="pending")
        )
    assert {sent["queueId"], owed["queueId"], failed["queueId"]} <= await attempt_owners(server)

    hook = await add_webhook(server)
    now = server.clock.now()
    old_delivered = await add_delivery(server, hook, "delivered", now, delivered_at=now)
    old_failed = await add_delivery(server, hook, "failed", now)
    still_pending = await add_delivery(server, hook, "pending", now + timedelta(days=365))

    # Nothing is old enough yet.
    assert await prune(server.runtime) == PruneCounts()

    server.clock.advance(31 * DAY)
    smtp_server.reset()
    async with subscribe(server, account="old") as sub:
        recent = await submit(server, "old", simple())
        await sub.wait_for(of("messageSent", recent["queueId"]))
    await server.drain()
    now = server.clock.now()
    recent_delivered = await add_delivery(server, hook, "delivered", now, delivered_at=now)
    # Old payloads are the batch test's: here, on PostgreSQL, the relay's own clean-up (which the events
    # just sent set off) would race with prune for them.
    await add_payloads(server, 1)

    counts = await prune(server.runtime)

    assert counts == PruneCounts(messages=3, webhook_deliveries=2)
    assert await message_ids(server) == {queued["queueId"], owed["queueId"], recent["queueId"]}
    assert await attempt_owners(server) == {owed["queueId"], recent["queueId"]}, (
        "attempts go with their message"
    )
    assert await delivery_ids(server) == {still_pending, recent_delivered}
    assert old_delivered not in await delivery_ids(server) and old_failed not in await delivery_ids(server)
    assert await payload_count(server) == 1
    waiting = await message(server, queued["queueId"])
    assert waiting["status"] == "queued" and waiting["attemptsMade"] == 0

    assert await prune(server.runtime) == PruneCounts(), "a second run finds nothing"


async def test_prune_works_in_batches_and_keeps_what_is_owed(server: Server) -> None:
    """More rows than a batch of each kind: all of them go, one short transaction after another; the rows
    that only look old (finished recently after waiting long, or a Sent copy still to make) stay."""
    start = server.clock.now()
    async with server.runtime.db.write() as session:
        session.add(
            Account(
                id="bulk",
                name="Bulk",
                email="bulk@example.com",
                state=AccountState.DISCONNECTED,
                smtp_host="127.0.0.1",
                smtp_port=25,
                smtp_user="bulk",
                created_at=start,
                updated_at=start,
            )
        )

    def row(copy_status: str | None = None, finished: datetime = start) -> OutboxMessage:
        return OutboxMessage(
            id=uuid.uuid4().hex,
            account_id="bulk",
            message_id=f"<{uuid.uuid4().hex}@example.com>",
            raw=b"",
            envelope_from="bulk@example.com",
            envelope_to=["to@example.org"],
            status=MessageStatus.SENT,
            attempts_made=1,
            next_attempt_at=start,
            copy_status=copy_status,
            created_at=start,
            updated_at=finished,
            sent_at=finished,
        )

    old = [row() for _ in range(23)] + [row("done"), row("failed")]
    copying = row("copying")
    async with server.runtime.db.write() as session:
        session.add_all([*old, copying])
        await session.flush()  # the messages before their attempts (no ORM relationship orders them)
        session.add_all(
            DeliveryAttempt(outbox_id=m.id, attempt=n, at=start, ok=n == 2) for m in old for n in (1, 2)
        )
    hook = await add_webhook(server)
    for _ in range(25):
        await add_delivery(server, hook, "delivered", start, delivered_at=start)
    await add_payloads(server, 25)

    server.clock.advance(31 * DAY)
    # Due a month ago, finished just now (it waited for its account): kept for a month from now.
    late = row(finished=server.clock.now())
    async with server.runtime.db.write() as session:
        session.add(late)

    counts = await prune(server.runtime, batch_size=10)

    assert counts == PruneCounts(messages=25, webhook_deliveries=25, event_payloads=25)
    assert await message_ids(server) == {copying.id, late.id}
    assert await attempt_owners(server) == set()
    assert await delivery_ids(server) == set()
    assert await payload_count(server) == 0


async def test_the_scheduled_job_logs_what_it_pruned(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    await add_payloads(server, 3)
    server.clock.advance(server.settings.retention_days * DAY + 1)
    with caplog.at_level(logging.INFO, logger="gql_mail.app"):
        await server.workers.prune_finished()  # the scheduler's prune_finished job
        await server.workers.prune_finished()  # nothing left: nothing logged
    assert [r.getMessage() for r in caplog.records if r.name == "gql_mail.app"] == [
        "pruned 0 finished messages, 0 webhook deliveries, 3 event payloads (retention 30 days)"
    ]
    assert await payload_count(server) == 0
