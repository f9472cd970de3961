"""5. Memory: peak RSS of the server while 1,000,000 messages are queued and 1,000 delivered (twice), and its
growth over the same server's peak before the queue was filled. Target: peak <= 250 MB, and it does not
grow with the queue (reported: growth in MB; "met" allows 10 MB of noise).

The runs are those of queue_scaling.py (run_all.py runs them once for both benchmarks).

    python bench/memory.py [--waiting 1000000] [--due 1000] [--database sqlite|postgresql]
"""

from __future__ import annotations

import argparse
from typing import Any

from common import emit, run_loop
from queue_scaling import WAITING, scenario


def memory_result(s: dict[str, Any]) -> dict[str, Any]:
    peak_mb = s["peak_full_kib"] / 1024
    growth_mb = (s["peak_full_kib"] - s["peak_empty_kib"]) / 1024
    return {
        "benchmark": "memory",
        "database": s["database"],
        "waiting": s["waiting"],
        "due": s["due"],
        "peak_rss_mb": round(peak_mb, 1),
        "peak_rss_without_queue_mb": round(s["peak_empty_kib"] / 1024, 1),
        "growth_mb": round(growth_mb, 1),
        "rss_after_mb": round(s["rss_full_kib"] / 1024, 1),
        "target": "<= 250 MB, no growth with the queue",
        "met": peak_mb <= 250 and growth_mb <= 10,
    }


async def run(waiting: int = WAITING, due: int = 1000, database: str = "sqlite") -> dict[str, Any]:
    return emit(memory_result(await scenario(waiting, due, database)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waiting", type=int, default=WAITING)
    parser.add_argument("--due", type=int, default=1000)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    run_loop(run(args.waiting, args.due, args.database))
