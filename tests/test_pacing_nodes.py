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
