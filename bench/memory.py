"""5. Memory: peak RSS of the server while 1,000,000 messages are queued and 1,000 delivered (twice), and its
growth over the same server's peak before the queue was filled. Target: peak <= 250 MB, and it does not
grow with the queue (reported: growth in MB; "met" allows 10 MB of noise).

The runs are those of queue_scaling.py (run_all.py runs them once for both benchmarks).

Big messages (`--big-only` runs just these, `--no-big` skips them), on a server of their own: its idle RSS;
one message with a 10 MB attachment submitted over GraphQL (`submitMessage`, base64 `content`) and once
more over REST (`POST /v1/account/{id}/submit`), each until the sink has it and its row is `sent`: the
growth of the peak RSS (VmHWM, reset before the phase by writing "5" to /proc/PID/clear_refs) over the RSS
before the submission, against 4 x S (S the attachment's size), and the RSS after delivery against idle +
10 %; then 40 messages with a 2 MB attachment submitted one after the other: the peak RSS, target
< 200 MB.

    python bench/memory.py [--waiting 1000000] [--due 1000] [--database sqlite|postgresql] [--big-mb 10]
        [--no-big | --big-only]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import time
from pathlib import Path
from typing import Any

import orjson
from common import (
    ACCOUNT,
    SUBMIT,
    HttpConnection,
    ServerProcess,
    SinkProcess,
    bench_server,
    count_status,
    emit,
    log,
    post_request,
    run_loop,
    submit_variables,
    wait_until,
)
from queue_scaling import WAITING, scenario

MB = 1024 * 1024


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


def reset_peak(server: ServerProcess) -> None:
    """Set the server's VmHWM back to its current RSS (Linux >= 4.0: "5" to clear_refs)."""
    Path(f"/proc/{server.pid}/clear_refs").write_text("5")


def big_variables(content: str, n: int) -> dict[str, Any]:
    variables = submit_variables(n)
    variables["input"]["attachments"] = [{"filename": f"big-{n}.bin", "content": content}]
    return variables


def rest_request(server: ServerProcess, content: str, n: int) -> bytes:
    message = submit_variables(n)["input"]
    message["attachments"] = [{"filename": f"big-{n}.bin", "content": content}]
    body = orjson.dumps(message)
    return (
        b"POST /v1/account/%s/submit HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n"
        % (ACCOUNT.encode(), server.port, server.token.encode(), len(body))
    ) + body


async def settled_rss(server: ServerProcess) -> int:
    """The server's RSS once it has stopped moving (the delivery's last frees, the group commit's timers, and
    the allocator's trim a second after a big message: gql_mail/malloc_tuning.py)."""
    await asyncio.sleep(1.5)
    previous = server.rss_kib()[0]
    for _ in range(10):
        await asyncio.sleep(0.3)
        now = server.rss_kib()[0]
        if abs(now - previous) < 256:
            return now
        previous = now
    return previous


async def one_big(
    sink: SinkProcess, server: ServerProcess, request: bytes, idle_kib: int, size: int
) -> dict[str, Any]:
    """One big submission until delivered and recorded: the peak's growth over the RSS before it, and the
    RSS after it."""
    sent_before = count_status(server.db_path, "sent")
    delivered_before = await sink.count()
    before_kib = await settled_rss(server)
    reset_peak(server)
    conn = await HttpConnection("127.0.0.1", server.port).open()
    started = time.monotonic()
    status, body = await conn.request(request)
    answered = time.monotonic() - started
    conn.close()
    if status != 200 or b'"errors"' in body[:200]:
        raise RuntimeError(f"HTTP {status}: {body[:300]!r}")
    await sink.wait_count(delivered_before + 1, 120)
    await wait_until(lambda: count_status(server.db_path, "sent") > sent_before, 60, "sent row", step=0.05)
    peak_kib = server.rss_kib()[1]
    after_kib = await settled_rss(server)
    growth_mb = (peak_kib - before_kib) / 1024
    return {
        "answer_s": round(answered, 2),
        "rss_before_mb": round(before_kib / 1024, 1),
        "peak_growth_mb": round(growth_mb, 1),
        "peak_growth_over_size": round(growth_mb * MB / size, 2),
        "rss_after_mb": round(after_kib / 1024, 1),
        "rss_after_over_idle": round(after_kib / idle_kib, 3),
    }


async def big_messages(big_mb: int = 10, small_mb: int = 2, count: int = 40) -> dict[str, Any]:
    """The big-message phases on one server (see the module docstring)."""
    size = big_mb * MB
    content = base64.b64encode(os.urandom(size)).decode("ascii")
    with SinkProcess() as sink:
        async with bench_server(sink) as server:
            idle_kib = await settled_rss(server)
            log(f"memory: idle {idle_kib / 1024:.1f} MB; one {big_mb} MB attachment over GraphQL")
            request = post_request(server.port, server.token, SUBMIT, big_variables(content, 0))
            gql = await one_big(sink, server, request, idle_kib, size)
            del request
            log(f"memory: graphql {gql}; over REST")
            request = rest_request(server, content, 1)
            rest = await one_big(sink, server, request, idle_kib, size)
            del request
            log(f"memory: rest {rest}; {count} x {small_mb} MB")
            del content
            small = base64.b64encode(os.urandom(small_mb * MB)).decode("ascii")
            delivered_before = await sink.count()
            await settled_rss(server)
            reset_peak(server)
            client = server.client()
            for n in range(count):
                await client.gql(SUBMIT, big_variables(small, 100 + n))
            client.close()
            await sink.wait_count(delivered_before + count, 300)
            series_peak_kib = server.rss_kib()[1]
            series_after_kib = await settled_rss(server)
    four_s_mb = 4 * size / MB
    worst_after = max(gql["rss_after_over_idle"], rest["rss_after_over_idle"])
    return {
        "benchmark": "memory_big",
        "attachment_mb": big_mb,
        "idle_rss_mb": round(idle_kib / 1024, 1),
        "graphql": gql,
        "rest": rest,
        "peak_growth_limit_mb": four_s_mb,
        "series": f"{count} x {small_mb} MB",
        "series_peak_rss_mb": round(series_peak_kib / 1024, 1),
        "series_rss_after_mb": round(series_after_kib / 1024, 1),
        "target": "peak growth <= 4 x S, RSS after delivery <= idle + 10 %, series peak < 200 MB",
        "met": max(gql["peak_growth_mb"], rest["peak_growth_mb"]) <= four_s_mb
        and worst_after <= 1.10
        and series_peak_kib / 1024 < 200,
    }


async def run(
    waiting: int = WAITING,
    due: int = 1000,
    database: str = "sqlite",
    big_mb: int = 10,
    queue: bool = True,
    big: bool = True,
) -> list[dict[str, Any]]:
    results = []
    if queue:
        results.append(emit(memory_result(await scenario(waiting, due, database))))
    if big:
        results.append(emit(await big_messages(big_mb)))
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waiting", type=int, default=WAITING)
    parser.add_argument("--due", type=int, default=1000)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--big-mb", type=int, default=10)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--no-big", action="store_true", help="only the queue phase")
    group.add_argument("--big-only", action="store_true", help="only the big-message phases")
    args = parser.parse_args()
    run_loop(
        run(args.waiting, args.due, args.database, args.big_mb, queue=not args.big_only, big=not args.no_big)
    )
