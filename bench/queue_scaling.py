"""4. Scaling with queue size: the time to deliver 1,000 due messages while 100,000 others wait (scheduled for
next week), divided by the time with none waiting. Target: <= 1.3 (the claim reads the due rows through
the (status, next_attempt_at) index and never scans the queue).

One server: 1,000 due with none waiting; then 100,000 rows due in 7 days are inserted and 1,000 due ones
delivered twice; then the waiting rows are deleted and 1,000 delivered again. The ratio is the median of
the runs with the queue over the median of those without. Due rows are inserted directly (999 in one
transaction) plus one `submitMessage` that wakes the worker; a run ends when the sink has all 1,000 and
their rows are `sent`. The same runs give benchmark 5 (memory): see memory.py.

    python bench/queue_scaling.py [--waiting 100000] [--due 1000]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import time
from datetime import timedelta
from typing import Any

from common import (
    SUBMIT,
    ServerProcess,
    SinkProcess,
    bench_server,
    count_status,
    emit,
    log,
    prefill,
    run_loop,
    submit_variables,
    wait_until,
)


async def deliver_due(sink: SinkProcess, server: ServerProcess, due: int) -> float:
    """Seconds from the commit of `due` due messages until the sink has them all and they are recorded."""
    await sink.reset()
    sent_before = count_status(server.db_path, "sent")
    prefill(server.db_path, due - 1)
    started = time.time()
    client = server.client()
    await client.gql(SUBMIT, submit_variables())
    client.close()
    sink_done = await sink.wait_count(due, 120)
    recorded = await wait_until(
        lambda: count_status(server.db_path, "sent") - sent_before >= due, 120, "sent rows", step=0.02
    )
    return max(sink_done, recorded) - started


def delete_waiting(server: ServerProcess) -> int:
    with sqlite3.connect(server.db_path, timeout=30) as conn:
        return conn.execute("DELETE FROM outbox_message WHERE status = 'queued'").rowcount


async def scenario(waiting: int = 100_000, due: int = 1000) -> dict[str, Any]:
    """Runs without and with `waiting` scheduled messages; times and the server's RSS after each phase."""
    with SinkProcess() as sink:
        async with bench_server(sink) as server:
            empty = [await deliver_due(sink, server, due)]
            rss_empty, peak_empty = server.rss_kib()
            log(f"queue: {due} due, none waiting: {empty[0]:.2f} s; inserting {waiting:,} waiting")
            prefill(server.db_path, waiting, due_in=timedelta(days=7))
            full = [await deliver_due(sink, server, due) for _ in range(2)]
            rss_full, peak_full = server.rss_kib()
            queued = count_status(server.db_path, "queued")
            log(f"queue: {due} due, {queued:,} waiting: {', '.join(f'{t:.2f}' for t in full)} s")
            delete_waiting(server)
            empty.append(await deliver_due(sink, server, due))
            log(f"queue: {due} due, none waiting again: {empty[1]:.2f} s")
    return {
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
        "due": s["due"],
        "waiting": s["waiting"],
        "seconds_without_queue": [round(t, 3) for t in s["seconds_empty"]],
        "seconds_with_queue": [round(t, 3) for t in s["seconds_full"]],
        "ratio": round(ratio, 3),
        "target": "<= 1.3",
        "met": ratio <= 1.3,
    }


async def run(waiting: int = 100_000, due: int = 1000) -> dict[str, Any]:
    return emit(scaling_result(await scenario(waiting, due)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waiting", type=int, default=100_000)
    parser.add_argument("--due", type=int, default=1000)
    args = parser.parse_args()
    run_loop(run(args.waiting, args.due))
