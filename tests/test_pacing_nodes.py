"""Two runtimes on one PostgreSQL database share one account's limit: together they stay within it.

Each runtime has its own worker and its own (manual) clock, set to the same time; their drains run at once,
so both claim the account's messages concurrently. The counts live in the database and each admission
locks the account's pacing row, so the sum of what both send in a minute is the limit, never more.
Only these drains deliver (no scheduled polls; the clocks move without waking the workers), so no pass
is still admitting when the clocks move on.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from tests.conftest import account_input, register_connected
from tests.faults.helpers import simple, submit
from tests.harness import run_server
from tests.servers.rate_limited_smtp import RateLimitedSmtpServer
from tests.servers.smtp import SmtpServer

LIMIT = 5
COUNT = 23


async def test_two_runtimes_share_one_accounts_limit(pg_url: str, tmp_path: Path) -> None:
    async with (
        run_server(tmp_path / "a", database_url=pg_url, poll_interval_seconds=3600) as a,
        run_server(tmp_path / "b", database_url=pg_url, poll_interval_seconds=3600) as b,
    ):
        b.clock.set(a.clock.now())
        with RateLimitedSmtpServer(a.clock) as smtp:
            await register_connected(a, account_input("shared", smtp, limits={"perMinute": LIMIT}))
            for i in range(COUNT):
                await submit(a, "shared", simple(f"r{i}@example.org"))
            sent = []
            for _ in range(COUNT // LIMIT + 1):
                await asyncio.gather(a.drain(), b.drain())
                await asyncio.gather(a.drain(), b.drain())  # settles a pass a submission's wake-up began
                sent.append(len(smtp.messages))
                a.clock.advance(60)
                b.clock.advance(60)
            assert sent == [min(LIMIT * (i + 1), COUNT) for i in range(len(sent))], sent
            assert smtp.most_in_any(timedelta(minutes=1)) <= LIMIT
            assert smtp.refusals == []


async def test_two_runtimes_share_one_accounts_connection_cap(pg_url: str, tmp_path: Path) -> None:
    """maxConnections 1 and a slow server: both runtimes claim the account's messages at once and each would
    open a connection; the lease lets one at a time, the other's messages wait (no attempt spent), and all
    are delivered."""
    count = 8
    async with (
        run_server(tmp_path / "a", database_url=pg_url, poll_interval_seconds=3600) as a,
        run_server(tmp_path / "b", database_url=pg_url, poll_interval_seconds=3600) as b,
    ):
        b.clock.set(a.clock.now())
        smtp = SmtpServer().start()
        await register_connected(a, account_input("capped", smtp, limits={"maxConnections": 1}))
        smtp.reset()  # the account's check connected too
        smtp.delay_data(0.2)
        for i in range(count):
            await submit(a, "capped", simple(f"c{i}@example.org"))
        for _ in range(count):
            await asyncio.gather(a.drain(), b.drain())
            if len(smtp.messages) == count:
                break
            a.clock.advance(5)  # past the wait of messages that found no free connection
            b.clock.advance(5)
        smtp.stop()
        assert len(smtp.messages) == count
        assert smtp.most_open_at_once == 1
