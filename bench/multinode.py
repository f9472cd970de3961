"""Delivery throughput with 1, 2 and 3 `gql-mail serve` processes on PostgreSQL, and 1 on SQLite.

    python bench/multinode.py [--messages 4000] [--repeat 1] [--pg postgresql://postgres@127.0.0.1:5432/postgres]

Each configuration gets a fresh database, N real server processes, one send-only account and one
in-process aiosmtpd sink. All messages are submitted with the same `sendAt` a little in the future, so
the queue is full before delivery starts; throughput is messages / (last arrival - first arrival) at the
sink. Prints one JSON line per run, then a table of medians.

Caveat: the sink, the client and every server share this machine's cores, so adding processes beyond
the number of cores measures contention, not scale-out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import databases  # noqa: E402
from tests.multinode import Cluster, cluster  # noqa: E402
from tests.servers.smtp import SmtpServer  # noqa: E402


async def _submit_scheduled(c: Cluster, count: int, send_at: datetime) -> float:
    """Submit `count` messages due at `send_at`; returns the submission rate (msg/s)."""
    started = time.perf_counter()
    ids = [f"<bench-{i}@bench.test>" for i in range(count)]
    chunks = [ids[i : i + 25] for i in range(0, count, 25)]
    limit = asyncio.Semaphore(6)

    async def one(n: int, chunk: list[str]) -> None:
        fields: list[str] = []
        variables: dict[str, Any] = {"a": "bench"}
        for k, mid in enumerate(chunk):
            fields.append(f"m{k}: submitMessage(account: $a, input: $i{k}) {{ queueId }}")
            variables[f"i{k}"] = {
                "to": [{"address": "sink@example.org"}],
                "subject": "bench",
                "text": "x" * 1500,
                "messageId": mid,
                "sendAt": send_at.isoformat(),
            }
        params = ", ".join(f"$i{k}: SubmitMessageInput!" for k in range(len(chunk)))
        nodes = c.alive()
        async with limit:
            await c.gql(
                nodes[n % len(nodes)], f"mutation($a: ID!, {params}) {{ {' '.join(fields)} }}", variables
            )

    await asyncio.gather(*(one(n, ch) for n, ch in enumerate(chunks)))
    return count / (time.perf_counter() - started)


async def run_one(backend: str, processes: int, count: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp_dir, SmtpServer() as sink:
        tmp = Path(tmp_dir)
        if backend == "postgresql":
            db_cm: Any = databases.fresh_postgresql()
        else:
            db_cm = databases.fresh_database(tmp, "bench.db")
            os.environ.pop(databases.ENV, None)
        async with db_cm as url, cluster(url, tmp, processes, lease_seconds=300) as c:
            await c.register_send_only(c.nodes[0], "bench", sink.host, sink.port)
            # Enough time to submit everything before the first message is due.
            send_at = datetime.now(UTC) + timedelta(seconds=5 + count / 250)
            submit_rate = await _submit_scheduled(c, count, send_at)
            messages = await sink.received.wait_for(count, timeout=600, what="messages")
            stamps = sorted(m.received_at for m in messages)
            elapsed = stamps[-1] - stamps[0]
            return {
                "backend": backend,
                "processes": processes,
                "messages": count,
                "seconds": round(elapsed, 3),
                "msg_per_s": round(count / elapsed, 1),
                "submit_msg_per_s": round(submit_rate, 1),
                "duplicates": len(messages) - count,
            }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--pg", default=None, help="admin DSN of the PostgreSQL to use")
    args = parser.parse_args()
    if args.pg:
        databases.ADMIN_URL = args.pg
    configs = [("postgresql", 1), ("postgresql", 2), ("postgresql", 3), ("sqlite", 1)]
    if not await databases.pg_reachable():
        print("PostgreSQL not reachable: SQLite only", file=sys.stderr)
        configs = [("sqlite", 1)]
    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for _ in range(args.repeat):
        for backend, processes in configs:
            result = await run_one(backend, processes, args.messages)
            print(json.dumps(result), flush=True)
            results.setdefault((backend, processes), []).append(result)
    print()
    print(f"{'backend':<12}{'processes':>10}{'msg/s (median)':>16}{'submit msg/s':>14}{'runs':>6}")
    for (backend, processes), runs in results.items():
        rate = statistics.median(r["msg_per_s"] for r in runs)
        submit = statistics.median(r["submit_msg_per_s"] for r in runs)
        print(f"{backend:<12}{processes:>10}{rate:>16.0f}{submit:>14.0f}{len(runs):>6}")


if __name__ == "__main__":
    asyncio.run(main())
