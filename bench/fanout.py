"""6. Fan-out: 500 websocket subscribers (graphql-transport-ws, in client processes of their own) on one
server while 100 messages/s are submitted and delivered; every subscriber must get every `messageSent` event.
Reports the delay from publish (the event's `date`, ms precision, taken when the outcome is recorded) to
receipt (the client's clock when the frame is read), p50/p99 over every (subscriber, event), and how many
events arrived. Target: p99 <= 200 ms.

Before the measured load, probe messages (Message-ID <probe-…>) are sent until every subscriber has seen
one, so every subscription is live; probes are not counted. Clients offer no permessage-deflate.

The subscribers are spread over 4 client processes. A subscriber's receipt time is taken when its
process's Python code reads the frame, so a client process's own backlog counts as delay: with 2
processes (250 subscribers each, 25,000 frames/s each, on the 2 cores the server shares) that backlog
alone moved p99 between ~120 and ~330 ms from run to run; real subscribers are separate clients.
`--processes 2` still measures the old way.

    python bench/fanout.py [--subscribers 500] [--rate 100] [--seconds 5] [--processes 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from common import (
    EVENTS,
    SUBMIT,
    HttpConnection,
    SinkProcess,
    bench_server,
    emit,
    event_time,
    log,
    percentile,
    post_request,
    run_loop,
    submit_variables,
)

# -- the client process --------------------------------------------------------------------------------


async def client_main(port: int, token: str, subscribers: int) -> None:
    import websockets

    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    primed = [False] * subscribers
    counts = [0] * subscribers
    delays: list[int] = []
    changed = asyncio.Event()
    sockets: list[Any] = []

    async def one(index: int, gate: asyncio.Semaphore) -> None:
        async with gate:
            ws = await websockets.connect(
                f"ws://127.0.0.1:{port}/graphql",
                subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
                compression=None,
                max_queue=None,
                open_timeout=60,
            )
            sockets.append(ws)
            await ws.send(
                json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
            )
            ack = json.loads(await asyncio.wait_for(ws.recv(), 60))
            assert ack["type"] == "connection_ack", ack
            await ws.send(
                json.dumps(
                    {
                        "id": "1",
                        "type": "subscribe",
                        "payload": {"query": EVENTS, "variables": {"events": ["messageSent"]}},
                    }
                )
            )
        async for raw in ws:
            received = time.time()
            message = orjson.loads(raw)
            if message.get("type") != "next":
                raise RuntimeError(f"subscription {index} got {message}")
            event = message["payload"]["data"]["events"]
            if event["data"]["messageId"].startswith("<probe-"):
                primed[index] = True
            else:
                counts[index] += 1
                delays.append(round(1000 * (received - event_time(event))))
            changed.set()

    gate = asyncio.Semaphore(25)
    tasks = [asyncio.create_task(one(i, gate)) for i in range(subscribers)]
    while len(sockets) < subscribers:
        await asyncio.sleep(0.05)
        for t in tasks:
            if t.done() and t.exception():
                raise t.exception()  # type: ignore[misc]
    print("ready", flush=True)
    while not all(primed):
        changed.clear()
        await changed.wait()
    print("primed", flush=True)
    line = (await stdin.readline()).decode().split()  # "expect N TIMEOUT"
    expected, timeout = int(line[1]), float(line[2])
    deadline = time.monotonic() + timeout
    while min(counts) < expected and time.monotonic() < deadline:
        changed.clear()
        try:
            await asyncio.wait_for(changed.wait(), max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            break
    print(
        json.dumps(
            {"received": sum(counts), "complete": sum(c >= expected for c in counts), "delays": delays}
        )
    )
    sys.stdout.flush()
    for t in tasks:
        t.cancel()
    for ws in sockets:
        ws.transport.abort()


# -- the benchmark --------------------------------------------------------------------------------------


async def submit_paced(port: int, token: str, rate: float, seconds: float) -> int:
    """Submit `rate` messages per second for `seconds`, on schedule, over a few keep-alive connections."""
    total = int(rate * seconds)
    queue: asyncio.Queue[int | None] = asyncio.Queue()

    async def worker() -> None:
        conn = await HttpConnection("127.0.0.1", port).open()
        try:
            while (n := await queue.get()) is not None:
                status, body = await conn.request(post_request(port, token, SUBMIT, submit_variables(n)))
                if status != 200 or b'"errors"' in body:
                    raise RuntimeError(f"submit failed: {status} {body[:300]!r}")
        finally:
            conn.close()

    workers = [asyncio.create_task(worker()) for _ in range(16)]
    started = time.monotonic()
    for n in range(total):
        await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
        queue.put_nowait(n)
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return total


async def run(
    subscribers: int = 500, rate: float = 100, seconds: float = 5, processes: int = 4
) -> dict[str, Any]:
    with SinkProcess() as sink:
        async with bench_server(sink) as server:
            shares = [subscribers // processes + (i < subscribers % processes) for i in range(processes)]
            log(f"fanout: connecting {subscribers} subscribers from {processes} processes")
            clients = [
                subprocess.Popen(  # noqa: ASYNC220 - started once, before anything is measured
                    [sys.executable, str(Path(__file__)), "--client", str(server.port), server.token, str(n)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                )
                for n in shares
            ]

            async def line(proc: subprocess.Popen[bytes]) -> bytes:
                assert proc.stdout is not None
                return await asyncio.to_thread(proc.stdout.readline)

            for proc in clients:
                if (await asyncio.wait_for(line(proc), 120)).strip() != b"ready":
                    raise RuntimeError("a fan-out client failed to connect")
            probe = server.client()
            primed = [asyncio.create_task(line(p)) for p in clients]
            n = 0
            while not all(t.done() for t in primed):
                variables = submit_variables(n)
                variables["input"]["messageId"] = f"<probe-{n}@bench.example>"
                await probe.gql(SUBMIT, variables)
                n += 1
                await asyncio.wait(primed, timeout=1.0)
            probe.close()
            log(f"fanout: all subscribed; {rate:.0f} messages/s for {seconds:.0f} s")
            sent = await submit_paced(server.port, server.token, rate, seconds)
            timeout = 60.0
            for proc in clients:
                assert proc.stdin is not None
                proc.stdin.write(f"expect {sent} {timeout}\n".encode())
                proc.stdin.flush()
            results = [json.loads(await asyncio.wait_for(line(p), timeout + 30)) for p in clients]
            for proc in clients:
                proc.wait(10)
    delays = [d for r in results for d in r["delays"]]
    expected = sent * subscribers
    received = sum(r["received"] for r in results)
    p99 = percentile(delays, 99)
    return emit(
        {
            "benchmark": "fanout",
            "subscribers": subscribers,
            "client_processes": processes,
            "messages": sent,
            "rate_per_s": rate,
            "deliveries_expected": expected,
            "deliveries_received": received,
            "subscribers_complete": sum(r["complete"] for r in results),
            "p50_ms": percentile(delays, 50),
            "p99_ms": p99,
            "max_ms": max(delays) if delays else None,
            "target": "p99 <= 200 ms, every subscriber gets every event",
            "met": received == expected and p99 <= 200,
        }
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        run_loop(client_main(int(sys.argv[2]), sys.argv[3], int(sys.argv[4])))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--processes", type=int, default=4)
    args = parser.parse_args()
    run_loop(run(args.subscribers, args.rate, args.seconds, args.processes))
