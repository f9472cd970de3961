"""4. Scaling with queue size: the time to deliver 1,000 due messages while 1,000,000 others wait (scheduled
for next week), divided by the time with none waiting. Target: <= 1.3 (nothing the server does while it
delivers may read the waiting rows: the claim reads the due ones through an index, and so must every
periodic job, gauge and lookup).

One server: 1,000 due with none waiting (after a first run that is not counted); then 1,000,000 rows due in 7
days are inserted and 1,000 due ones delivered twice; then the waiting rows are deleted and 1,000 delivered
again. The ratio is the median of the runs with the queue over the median of those without. Due rows are
inserted directly (999 in one transaction) plus one `submitMessage` that wakes the worker; a run ends when the
sink has all 1,000 and their rows are `sent`. The waiting rows are one inserted row copied by the database
itself (`BenchDatabase.fill_waiting`: about half a minute for 1,000,000). `--database postgresql` runs the
server on a fresh PostgreSQL database (dropped afterwards). The same runs give benchmark 5 (memory): see
memory.py.

    python bench/queue_scaling.py [--waiting 1000000] [--due 1000] [--database sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from datetime import timedelta
from typing import Any

from common import (
    SUBMIT,
    ServerProcess,
    SinkProcess,
    bench_server,
    emit,
    log,
    run_loop,
    submit_variables,
)

WAITING = 1_000_000
# Runs with the queue; as many without it, split around them (the machine's speed drifts over minutes).
ROUNDS = 3


def seconds(runs: list[float]) -> str:
    return ", ".join(f"{t:.2f}" for t in runs) + " s"


async def deliver_due(sink: SinkProcess, server: ServerProcess, due: int) -> float:
    """Seconds from the commit of `due` due messages until the sink has them all and they are recorded."""
    db = server.database
    assert db is not None
    await sink.reset()
    sent_before = await db.count_status("sent")
    await db.insert_due(due - 1)
    started = time.time()
    client = server.client()
    await client.gql(SUBMIT, submit_variables())
    client.close()
    sink_done = await sink.wait_count(due, 120)
    deadline = time.monotonic() + 120
    while await db.count_status("sent") - sent_before < due:
        if time.monotonic() > deadline:
            raise TimeoutError("the delivered messages were not all recorded as sent")
        await asyncio.sleep(0.02)
    return max(sink_done, time.time()) - started


async def scenario(waiting: int = WAITING, due: int = 1000, database: str = "sqlite") -> dict[str, Any]:
    """Runs without and with `waiting` scheduled messages; times and the server's RSS after each phase."""
    with SinkProcess() as sink:
        async with bench_server(sink, database=database) as server:
            db = server.database
            assert db is not None
            # A first run warms the server up (imports, statement caches, SMTP connections); not counted.
            await deliver_due(sink, server, due)
            empty = [await deliver_due(sink, server, due) for _ in range(ROUNDS - 1)]
            rss_empty, peak_empty = server.rss_kib()
            log(f"queue ({database}): {due} due, none waiting: {seconds(empty)}; adding {waiting:,} waiting")
            filled = time.monotonic()
            await db.fill_waiting(waiting, due_in=timedelta(days=7))
            log(f"queue: inserted in {time.monotonic() - filled:.1f} s")
            full = [await deliver_due(sink, server, due) for _ in range(ROUNDS)]
            rss_full, peak_full = server.rss_kib()
            queued = await db.count_status("queued")
            log(f"queue: {due} due, {queued:,} waiting: {seconds(full)}")
            await db.delete_queued()
            after = [await deliver_due(sink, server, due) for _ in range(ROUNDS - 1)]
            empty += after
            log(f"queue: {due} due, none waiting again: {seconds(after)}")
    return {
        "database": database,
        "waiting": waiting,
        "due": due,
        "queued_during_full": queued,
        "seconds_empty": empty,
        "seconds_full": full,
        "rss_empty_kib": rss_empty,
        "peak_empty_kib": peak_empty,
        "rss_full_kib": rss_full,
        "peak_full_kib": peak_full,
    }


def scaling_result(s: dict[str, Any]) -> dict[str, Any]:
    ratio = statistics.median(s["seconds_full"]) / statistics.median(s["seconds_empty"])
    return {
        "benchmark": "queue_scaling",
        "database": s["database"],
        "due": s["due"],
        "waiting": s["waiting"],
        "seconds_without_queue": [round(t, 3) for t in s["seconds_empty"]],
        "seconds_with_queue": [round(t, 3) for t in s["seconds_full"]],
        "ratio": round(ratio, 3),
        "target": "<= 1.3",
        "met": ratio <= 1.3,
    }


async def run(waiting: int = WAITING, due: int = 1000, database: str = "sqlite") -> dict[str, Any]:
    """Benchmark 4; its runs also give benchmark 5's figures, printed after it."""
    from memory import memory_result

    s = await scenario(waiting, due, database)
    emit(memory_result(s))
    return emit(scaling_result(s))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waiting", type=int, default=WAITING)
    parser.add_argument("--due", type=int, default=1000)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    run_loop(run(args.waiting, args.due, args.database))
