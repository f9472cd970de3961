"""2. Submission throughput: `submitMessage` over HTTP from 32 concurrent keep-alive clients, against the same
server answering an authenticated trivial query (`{ accounts { account } }`, one account) in the same run.

Each phase runs `--seconds` (default 20) after a 1 s warm-up. Submitted messages are due at once, so the
server delivers them to the sink while it accepts more (that is the work a submission causes); the
target's ratio is that rate over the query's. A third, shorter phase submits messages scheduled for next
week (`scheduled_*`: the HTTP path alone, no delivery). Reports rates, p50/p99 latency and the server's
CPU time per request. Target: submit rate >= 0.5 of the trivial query's.

    python bench/submit.py [--seconds 20] [--clients 32]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from common import (
    SUBMIT,
    HttpConnection,
    ServerProcess,
    SinkProcess,
    bench_server,
    emit,
    log,
    percentile,
    post_request,
    run_loop,
    submit_variables,
)

TRIVIAL = "{ accounts { account } }"


async def load(server: ServerProcess, request: bytes, clients: int, seconds: float) -> dict[str, Any]:
    """`clients` connections each sending `request` back to back for `seconds` (after a 1 s warm-up)."""
    latencies: list[float] = []
    errors = 0
    warm_until = time.perf_counter() + 1.0
    stop_at = warm_until + seconds
    cpu_at_start: list[float] = []

    async def measure_cpu() -> None:
        await asyncio.sleep(warm_until - time.perf_counter())
        cpu_at_start.append(server.cpu_seconds())

    async def client() -> None:
        nonlocal errors
        conn = await HttpConnection("127.0.0.1", server.port).open()
        try:
            while (now := time.perf_counter()) < stop_at:
                status, body = await conn.request(request)
                done = time.perf_counter()
                if status != 200 or b'"errors"' in body:
                    errors += 1
                    if errors == 1:
                        log(f"first error: HTTP {status} {body[:300]!r}")
                elif now >= warm_until:
                    latencies.append(done - now)
        finally:
            conn.close()

    await asyncio.gather(measure_cpu(), *(client() for _ in range(clients)))
    cpu = server.cpu_seconds() - cpu_at_start[0]
    return {
        "server_cpu_ms": round(1000 * cpu / max(1, len(latencies)), 3),
        "rate": len(latencies) / seconds,
        "p50_ms": round(1000 * percentile(latencies, 50), 2),
        "p99_ms": round(1000 * percentile(latencies, 99), 2),
        "errors": errors,
    }


async def run(seconds: float = 20.0, clients: int = 32) -> dict[str, Any]:
    with SinkProcess() as sink:
        async with bench_server(sink) as server:
            trivial = post_request(server.port, server.token, TRIVIAL)
            probe = await HttpConnection("127.0.0.1", server.port).open()
            status, body = await probe.request(trivial)
            probe.close()
            assert status == 200 and orjson.loads(body)["data"]["accounts"], body
            log(f"submit: trivial query, {clients} clients, {seconds:.0f} s")
            query = await load(server, trivial, clients, seconds)
            log(
                f"submit: trivial {query['rate']:.0f} req/s; submitMessage, {clients} clients, {seconds:.0f}s"
            )
            submit = await load(
                server, post_request(server.port, server.token, SUBMIT, submit_variables()), clients, seconds
            )
            log(f"submit: submitMessage {submit['rate']:.0f} req/s; scheduled ones, {seconds / 2:.0f}s")
            later = submit_variables(send_at=datetime.now(UTC) + timedelta(days=7))
            scheduled = await load(
                server, post_request(server.port, server.token, SUBMIT, later), clients, seconds / 2
            )
    ratio = submit["rate"] / query["rate"]
    return emit(
        {
            "benchmark": "submit",
            "clients": clients,
            "seconds": seconds,
            "submit_per_s": round(submit["rate"], 1),
            "submit_p50_ms": submit["p50_ms"],
            "submit_p99_ms": submit["p99_ms"],
            "query_per_s": round(query["rate"], 1),
            "query_p50_ms": query["p50_ms"],
            "query_p99_ms": query["p99_ms"],
            "ratio": round(ratio, 3),
            "target": ">= 0.5",
            "met": ratio >= 0.5,
            "errors": submit["errors"] + query["errors"] + scheduled["errors"],
            "submit_server_cpu_ms": submit["server_cpu_ms"],
            "scheduled_submit_per_s": round(scheduled["rate"], 1),
            "scheduled_submit_p50_ms": scheduled["p50_ms"],
            "scheduled_submit_p99_ms": scheduled["p99_ms"],
            "scheduled_ratio": round(scheduled["rate"] / query["rate"], 3),
            "scheduled_server_cpu_ms": scheduled["server_cpu_ms"],
            "query_server_cpu_ms": query["server_cpu_ms"],
        }
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=32)
    args = parser.parse_args()
    run_loop(run(args.seconds, args.clients))
