"""One account's backlog does not hold up another account's mail.

Account "bulk" has 10,000 messages due before "small" submits one. Oldest-due-first alone would send
small's message after the whole backlog; with per-account shares in the claim, it goes out while the
backlog has barely started."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import insert, select

from gql_mail.queue import OUTBOX
from tests.conftest import account_input, register_connected
from tests.faults.helpers import simple, submit
from tests.harness import Server, subscribe
from tests.servers.smtp import SmtpServer

BACKLOG = 10_000


async def clone_backlog(server: Server, queue_id: str, count: int) -> None:
    """`count` copies of a scheduled message, due now (inserted directly: submitting 10,000 through the API
    would only measure submission)."""
    async with server.runtime.db.read() as session:
        row = (await session.execute(select(OUTBOX).where(OUTBOX.c.id == queue_id))).mappings().one()
    template: dict[str, Any] = {**row, "send_at": None, "next_attempt_at": server.clock.now()}
    rows = [{**template, "id": uuid.uuid4().hex[:24]} for _ in range(count)]
    async with server.runtime.db.write(bulk=True) as session:
        await session.execute(insert(OUTBOX), rows)


async def test_a_backlog_of_one_account_does_not_delay_another(
    server: Server, smtp_server: SmtpServer
) -> None:
    await register_connected(server, account_input("bulk", smtp_server))
    await register_connected(server, account_input("small", smtp_server))
    smtp_server.delay_data(0.05)  # the backlog takes minutes to send: ~80 messages/s over 4 connections
    later = (server.clock.now() + timedelta(days=1)).isoformat()
    first = await submit(server, "bulk", simple("bulk@example.org", sendAt=later))
    await clone_backlog(server, first["queueId"], BACKLOG)
    server.runtime.wake.delivery()
    await smtp_server.wait_for_messages(1, timeout=30)  # the backlog is streaming

    async with subscribe(server, account="small", events=["messageSent"]) as sub:
        answer = await submit(server, "small", simple("small@example.org"))
        await sub.wait_for(lambda e: e["data"]["queueId"] == answer["queueId"], timeout=60)
    backlog_sent = sum(1 for m in smtp_server.messages if "bulk@example.org" in m.rcpt_tos)
    assert backlog_sent < BACKLOG // 10, f"small's message waited for {backlog_sent} of the backlog"
    async with server.runtime.db.read() as session:
        queued = select(OUTBOX.c.id).where(OUTBOX.c.status == "queued", OUTBOX.c.send_at.is_(None))
        waiting = len((await session.execute(queued)).all())
    assert waiting > BACKLOG // 2, "the backlog was still there"
