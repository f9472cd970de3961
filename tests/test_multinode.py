"""Three real `gql-mail serve` processes on one PostgreSQL database deliver to one SMTP sink.

Runs in the PostgreSQL pass of the suite (GQL_MAIL_TEST_DATABASE=postgresql, as `.ci/run` does), not in
the default SQLite pass even when a PostgreSQL is reachable: the two tests take about a minute each on two
cores, and running them in both passes would double that for no new information.
- shared queue: 3,000 messages, each Message-ID arrives exactly once;
- shared event stream: one websocket subscriber on one process sees all 3,000 `messageSent` events,
  most of them produced by deliveries in the other two;
- crash: one process is killed with SIGKILL halfway; the others take its claimed messages over once its
  heartbeat is a lease old, and every message arrives at least once and ends `sent`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.databases import fresh_postgresql, pg_reachable, use_postgresql
from tests.multinode import cluster, message_id_of
from tests.servers.smtp import SmtpServer

COUNT = 3000
LATER = datetime.now(UTC) + timedelta(days=1)


@pytest.fixture
async def cluster_pg_url() -> AsyncIterator[str]:
    if not use_postgresql():
        pytest.skip("multi-node tests run with GQL_MAIL_TEST_DATABASE=postgresql")
    if not await pg_reachable():
        pytest.skip("no PostgreSQL reachable at GQL_MAIL_TEST_PG_URL")
    async with fresh_postgresql() as url:
        yield url


@pytest.fixture
def sink() -> Iterator[SmtpServer]:
    """A sink of its own: the session SMTP server's records are shared with other tests."""
    with SmtpServer() as server:
        yield server


def _ids(tag: str) -> list[str]:
    return [f"<{tag}-{i}@multinode.test>" for i in range(COUNT)]


@pytest.mark.timeout(300)
async def test_three_processes_deliver_each_message_once_and_share_events(
    cluster_pg_url: str, tmp_path: Path, sink: SmtpServer
) -> None:
    ids = _ids("once")
    # Heartbeats: no claim of a live worker lapses, however long its messages wait.
    async with cluster(cluster_pg_url, tmp_path, 3) as c:
        first = c.nodes[0]
        await c.register_send_only(first, "bulk", sink.host, sink.port)
        async with c.subscribe(first, ["messageSent"]) as sub:
            await c.submit_many("bulk", ids, send_at=LATER)
            assert await c.make_due() == COUNT  # all at once: the three claim from one full queue
            await sink.received.wait_for(COUNT, timeout=240, what="messages")
            events = await sub.wait_count(COUNT, timeout=30)
        got = Counter(message_id_of(m.data) for m in sink.received.snapshot())
        assert set(got) == set(ids)
        assert [mid for mid, n in got.items() if n > 1] == []
        assert len(events) == COUNT
        assert {e["data"]["messageId"] for e in events} == set(ids)
        assert await c.outbox_statuses(first, "bulk") == {"sent": COUNT}
        assert all(node.process.poll() is None for node in c.nodes), "no process crashed"


@pytest.mark.timeout(300)
async def test_a_killed_process_claimed_work_is_finished_by_the_others(
    cluster_pg_url: str, tmp_path: Path, sink: SmtpServer
) -> None:
    ids = _ids("kill")
    # The default settings: the victim's claims come back once its heartbeat is a lease (15 s) old.
    async with cluster(cluster_pg_url, tmp_path, 3, lease_seconds=None) as c:
        first, _, victim = c.nodes
        await c.register_send_only(first, "bulk", sink.host, sink.port)
        await c.submit_many("bulk", ids, send_at=LATER)
        assert await c.make_due() == COUNT
        await sink.received.wait_for(COUNT // 2, timeout=240, what="messages")
        # Each worker holds up to a few hundred claimed messages, so the victim dies with work in hand.
        victim.kill()
        async with asyncio.timeout(240):
            while True:
                seen = sink.received.snapshot()
                got = Counter(message_id_of(m.data) for m in seen)
                if set(got) >= set(ids):
                    break
                # One more than what was just looked at (not than the log's length now: the last message
                # may have arrived in between, and then we would wait for one that never comes).
                await sink.received.wait_for(len(seen) + 1, timeout=240, what="messages")
        assert set(got) == set(ids)  # every message at least once
        async with asyncio.timeout(30):
            # The last outcomes are recorded just after the last message reaches the sink.
            while (statuses := await c.outbox_statuses(first, "bulk")) != {"sent": COUNT}:  # noqa: ASYNC110
                await asyncio.sleep(0.5)
        assert statuses == {"sent": COUNT}
