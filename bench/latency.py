"""3. Idle latency: submit → the SMTP server accepts it, one message at a time on an idle server.

The clock starts before the `submitMessage` request is written and stops at the sink's own timestamp for
that Message-ID (both wall-clock on the same machine). Target: p50 < 50 ms and p99 < 250 ms.

    python bench/latency.py [--messages 200]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from common import SUBMIT, SinkProcess, bench_server, emit, log, percentile, run_loop, submit_variables


async def run(messages: int = 200) -> dict[str, Any]:
    latencies: list[float] = []
    answers: list[float] = []
    with SinkProcess() as sink:
        async with bench_server(sink) as server, sink.watch() as watch:
            client = server.client()
            log(f"latency: {messages} messages one at a time")
            for i in range(messages):
                started = time.time()
                answer = await client.gql(SUBMIT, submit_variables(i))
                answered = time.time()
                accepted = await watch.wait_for(answer["submitMessage"]["messageId"])
                answers.append(answered - started)
                latencies.append(accepted - started)
                await asyncio.sleep(0.02)  # idle between messages
            client.close()
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    return emit(
        {
            "benchmark": "latency",
            "messages": messages,
            "p50_ms": round(1000 * p50, 1),
            "p99_ms": round(1000 * p99, 1),
            "max_ms": round(1000 * max(latencies), 1),
            "submit_answer_p50_ms": round(1000 * percentile(answers, 50), 1),
            "target": "p50 < 50 ms, p99 < 250 ms",
            "met": p50 < 0.050 and p99 < 0.250,
        }
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    args = parser.parse_args()
    run_loop(run(args.messages))
