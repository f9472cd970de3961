"""One account's backlog does not hold up another account's mail (issue 17, fair share).

Account "bulk" has 10,000 messages due before "small" submits one: small's message goes out while the
backlog has barely started. A hundred accounts each holding a thousand due messages are served round robin:
every account's first message goes out in the first round, however old the others' backlogs are. And a
connection slot held open for an account with nothing to send is given up to an account below its cap."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import String, cast, insert, literal, null, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from gql_mail.queue import OUTBOX
from gql_mail.workers import delivery
from tests.conftest import REGISTER, account_input, register_connected
from tests.faults.helpers import simple, submit
from tests.harness import Server, run_server, subscribe
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


ACCOUNTS = 100
EACH = 1_000


async def clone_for(session: AsyncSession, queue_id: str, account: str, count: int, *, due: datetime) -> None:
    """`count` copies of a message for `account`, to `account@example.org`, due at `due`: one
    INSERT … SELECT over a row of numbers (100,000 rows through the driver took 20 s)."""
    numbers = select(literal(0).label("n")).cte("numbers", recursive=True)
    numbers = numbers.union_all(select(numbers.c.n + 1).where(numbers.c.n < count - 1))
    source = OUTBOX.alias("source")
    given = {
        "id": literal(f"{account}-") + cast(numbers.c.n, String),
        "account_id": literal(account),
        "envelope_to": literal([f"{account}@example.org"], OUTBOX.c.envelope_to.type),
        "send_at": null(),
        "next_attempt_at": literal(due, OUTBOX.c.next_attempt_at.type),
    }
    rows = select(*(given.get(c.name, source.c[c.name]) for c in OUTBOX.c)).where(source.c.id == queue_id)
    await session.execute(insert(OUTBOX).from_select(list(OUTBOX.c), rows.join_from(source, numbers, true())))


async def register_many(server: Server, smtp_server: SmtpServer, names: list[str]) -> None:
    async with subscribe(server, events=["accountConnected"]) as sub:
        for name in names:
            await server.gql(REGISTER, {"input": account_input(name, smtp_server)})
        await sub.wait_count(lambda e: e["event"] == "accountConnected", len(names), timeout=60)


async def test_every_account_gets_its_turn_within_one_round(
    tmp_path: Path, smtp_server: SmtpServer, figures: Any
) -> None:
    """100 accounts × 1,000 due messages, account 0's all older than account 1's and so on (oldest-due-first
    would send account 0's thousand before anyone else's): each account's first message is among the
    first claim's hundred plus what the pipeline holds, and the first 1,000 arrivals share out evenly.
    No scheduled drain: one that had walked the accounts before the backlog was committed and claimed
    after it (PostgreSQL's statements each see the latest commit) would see account 0 alone and take a
    claim's worth of it."""
    async with run_server(tmp_path, poll_interval_seconds=3600) as server:
        names = [f"acct{i:03d}" for i in range(ACCOUNTS)]
        await register_many(server, smtp_server, names)
        later = (server.clock.now() + timedelta(days=1)).isoformat()
        template = await submit(server, names[0], simple("x@example.org", sendAt=later))
        await server.drain()  # the drain the submission woke has finished
        oldest = server.clock.now() - timedelta(days=1)
        async with server.runtime.db.write(bulk=True) as session:  # all at once: no claim sees a part of it
            for i, name in enumerate(names):
                await clone_for(session, template["queueId"], name, EACH, due=oldest + timedelta(minutes=i))
        server.runtime.wake.delivery()
        arrivals = [
            m.rcpt_tos[0].split("@")[0] for m in await smtp_server.wait_for_messages(1_000, timeout=120)
        ]

        first_turn = {name: arrivals.index(name) for name in names if name in arrivals}
        assert len(first_turn) == ACCOUNTS, (
            f"{ACCOUNTS - len(first_turn)} accounts had no turn in 1,000 messages"
        )
        figures["last first turn"] = max(first_turn.values())
        # One round: the first claim takes one message of each account, the next ones their second and third
        # turns, up to the pipeline's 256 messages. 32 connections serve 100 lanes: a connection sends what
        # its lane holds (two or three) before its slot goes to a lane still waiting, so the last account's
        # first message goes out within the pipeline's length, not after the first claim's hundred.
        assert max(first_turn.values()) < 100 + 256, sorted(first_turn.values())[-5:]
        # And they go on taking turns: the first 1,000 arrivals hold about 10 of each (seen: 8 to 11).
        shares = Counter(arrivals[:1_000])
        figures["fewest and most of the first 1,000"] = (min(shares.values()), max(shares.values()))
        assert min(shares.values()) >= 5 and max(shares.values()) <= 20, shares.most_common(3)


async def test_an_idle_connection_gives_its_slot_to_an_account_below_its_cap(
    tmp_path: Any, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two connection slots. Account "quiet" sent its one message and keeps its connection open for more
    (for a minute here); account "busy" then has two messages and wants two connections. The idle
    connection closes for it: busy's second message goes over a connection of its own (three in all)
    instead of waiting behind the first one's slow DATA."""
    monkeypatch.setattr(delivery, "SMTP_IDLE_SECONDS", 60.0)
    async with run_server(tmp_path, max_concurrent_deliveries=2) as server:
        await register_connected(server, account_input("quiet", smtp_server))
        await register_connected(server, account_input("busy", smtp_server))
        smtp_server.reset()  # the accounts' checks connected too
        await submit(server, "quiet", simple("quiet@example.org"))
        await smtp_server.wait_for_messages(1)
        assert smtp_server.connection_count == 1
        smtp_server.delay_data(1.0)
        # Both due at once, so that one claim hands both to busy's lane.
        soon = (server.clock.now() + timedelta(seconds=10)).isoformat()
        for n in range(2):
            await submit(server, "busy", simple(f"busy{n}@example.org", sendAt=soon))
        server.advance(10)
        received = await smtp_server.wait_for_messages(3, timeout=30)
        assert smtp_server.connection_count == 3
        assert len({m.connection_id for m in received[1:]}) == 2, "busy's messages went one after the other"
