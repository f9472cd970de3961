"""6. Fan-out: 2,000 websocket subscribers (graphql-transport-ws, in client processes of their own) on one
server while 100 messages/s are submitted and delivered; every subscriber must get every `messageSent`
event. Reports the delay from publish (the event's `date`, ms precision, taken when the outcome is
recorded) to receipt (the client's clock when the read that brought the frame returned), p50/p99 over
every (subscriber, event), how many events arrived, and the CPU the server and each client process used
over the measured load (as a share of one core: a client near 100 % would be the bottleneck). Target:
p99 <= 250 ms.

Before the measured load, probe messages (Message-ID <probe-…>) are sent until every subscriber has seen
one, so every subscription is live; probes are not counted. Clients offer no permessage-deflate. The one
bench token is allowed as many connections as there are subscribers.

The subscribers are spread over 4 client processes, each a bare asyncio client (see "the client process"
below): at 200,000 frames/s, the `websockets` client with a JSON parse per frame cost more CPU than the
server, so the clients' own backlog was most of the delay.

    python bench/fanout.py [--subscribers 2000] [--rate 100] [--seconds 5] [--processes 4]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from common import (
    EVENTS,
    SUBMIT,
    HttpConnection,
    SinkProcess,
    bench_server,
    cpu_seconds,
    emit,
    event_time,
    log,
    post_request,
    run_loop,
    submit_variables,
)

SUBSCRIBERS = 2000
PROCESSES = 4

# -- the client process --------------------------------------------------------------------------------
# A subscriber here is a bare graphql-transport-ws client on an asyncio Protocol: the handshake and the
# frame format written out (RFC 6455; the server sends unmasked, unfragmented text frames, a client masks
# with the all-zero key, which leaves its bytes as they are). With 2,000 subscribers at 100 events/s the
# clients read 200,000 frames a second on the cores the server uses: through the `websockets` client and a
# JSON parse of every frame that cost more CPU than the server's fan-out itself, so the load generator,
# not the server, set the delays. Here a `next` frame costs a few byte searches: its `date` (cached: a
# batch of outcomes shares one) and whether it is a probe; every other message is parsed in full. A
# frame's receipt time is that of the read that brought it.


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (mask key 0000) with `opcode`, unfragmented."""
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


class Subscriber(asyncio.Protocol):
    def __init__(self, index: int, port: int, token: str, stats: ClientStats) -> None:
        self.index, self.port, self.token, self.stats = index, port, token, stats
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.upgraded = False
        self.subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            (
                f"GET /graphql HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
            ).encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(f"connection lost: {exc}")

    def fail(self, why: str) -> None:
        if not self.subscribed.done():
            self.subscribed.set_exception(RuntimeError(f"subscriber {self.index}: {why}"))
        else:
            self.stats.errors.append(f"subscriber {self.index}: {why}")

    def send_text(self, message: dict[str, Any]) -> None:
        assert self.transport is not None
        self.transport.write(client_frame(0x1, orjson.dumps(message)))

    def data_received(self, data: bytes) -> None:
        received = time.time()
        buffer = self.buffer + data if self.buffer else data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self.fail(f"no upgrade: {buffer[:200]!r}")
                return
            self.upgraded = True
            buffer = buffer[end + 4 :]
            self.send_text({"type": "connection_init", "payload": {"Authorization": f"Bearer {self.token}"}})
        pos, size = 0, len(buffer)
        while size - pos >= 2:
            opcode, n = buffer[pos] & 0x0F, buffer[pos + 1] & 0x7F
            start = pos + 2
            if n == 126:
                n, start = int.from_bytes(buffer[pos + 2 : pos + 4], "big"), pos + 4
            elif n == 127:
                n, start = int.from_bytes(buffer[pos + 2 : pos + 10], "big"), pos + 10
            if size < start + n:
                break
            payload = buffer[start : start + n]
            pos = start + n
            if opcode == 0x1 and b'"type":"next"' in payload[:40]:
                self.stats.next_frame(self.index, payload, received)
            elif opcode == 0x1:
                self.message(orjson.loads(payload))
            elif opcode == 0x9:
                assert self.transport is not None
                self.transport.write(client_frame(0xA, payload))
            elif opcode == 0x8:
                self.fail(f"closed by the server: {payload!r}")
        self.buffer = buffer[pos:]

    def message(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "connection_ack":
            query = {"query": EVENTS, "variables": {"events": ["messageSent"]}}
            self.send_text({"id": "1", "type": "subscribe", "payload": query})
            if not self.subscribed.done():
                self.subscribed.set_result(None)
        elif kind == "ping":
            self.send_text({"type": "pong"})
        elif kind != "pong":
            self.fail(f"got {message}")


class ClientStats:
    """What one client process saw: events per subscriber, and a histogram of delays in ms."""

    def __init__(self, subscribers: int) -> None:
        self.primed = [False] * subscribers
        self.counts = [0] * subscribers
        self.delays: Counter[int] = Counter()
        self.errors: list[str] = []
        self.changed = asyncio.Event()
        self._dates: dict[bytes, float] = {}

    def next_frame(self, index: int, payload: bytes, received: float) -> None:
        if b'"messageId":"<probe-' in payload:
            self.primed[index] = True
        else:
            at = payload.find(b'"date":"') + 8
            date = payload[at : at + 24]
            sent = self._dates.get(date)
            if sent is None:
                sent = self._dates[date] = event_time({"date": date.decode()})
            self.counts[index] += 1
            self.delays[round(1000 * (received - sent))] += 1
        self.changed.set()


async def client_main(port: int, token: str, subscribers: int) -> None:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    stats = ClientStats(subscribers)
    gate = asyncio.Semaphore(25)
    transports: list[asyncio.BaseTransport] = []

    async def one(index: int) -> None:
        async with gate:
            transport, protocol = await loop.create_connection(
                lambda: Subscriber(index, port, token, stats), "127.0.0.1", port
            )
            transports.append(transport)
            await asyncio.wait_for(protocol.subscribed, 60)

    await asyncio.gather(*(one(i) for i in range(subscribers)))
    print("ready", flush=True)
    while not all(stats.primed):
        stats.changed.clear()
        await stats.changed.wait()
    print("primed", flush=True)
    line = (await stdin.readline()).decode().split()  # "expect N TIMEOUT"
    expected, timeout = int(line[1]), float(line[2])
    deadline = time.monotonic() + timeout
    while min(stats.counts) < expected and time.monotonic() < deadline and not stats.errors:
        stats.changed.clear()
        try:
            await asyncio.wait_for(stats.changed.wait(), max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            break
    print(
        json.dumps(
            {
                "received": sum(stats.counts),
                "complete": sum(c >= expected for c in stats.counts),
                "delays": sorted(stats.delays.items()),
                "errors": stats.errors[:5],
            }
        )
    )
    sys.stdout.flush()
    for transport in transports:
        transport.abort()  # type: ignore[attr-defined]


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


def histogram_percentile(histogram: Counter[int], p: float) -> float:
    """The p-th percentile of the values a {value: count} histogram holds (nearest rank, as `percentile`)."""
    total = sum(histogram.values())
    if not total:
        return float("nan")
    rank = min(total - 1, max(0, round(p / 100 * (total - 1))))
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen > rank:
            return value
    raise AssertionError("unreachable")


async def run(
    subscribers: int = SUBSCRIBERS, rate: float = 100, seconds: float = 5, processes: int = PROCESSES
) -> dict[str, Any]:
    with SinkProcess() as sink:
        # One token stands for every subscriber here; its default cap (1,000 connections) would refuse half.
        async with bench_server(sink, GQL_MAIL_MAX_WS_CONNECTIONS_PER_TOKEN=str(subscribers)) as server:
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
                if (await asyncio.wait_for(line(proc), 180)).strip() != b"ready":
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
            cpu_before = [cpu_seconds(p.pid) for p in clients], server.cpu_seconds()
            started = time.monotonic()
            sent = await submit_paced(server.port, server.token, rate, seconds)
            log(f"fanout: {sent} submitted in {time.monotonic() - started:.1f} s; waiting for every event")
            timeout = 60.0
            for proc in clients:
                assert proc.stdin is not None
                proc.stdin.write(f"expect {sent} {timeout}\n".encode())
                proc.stdin.flush()
            results = [json.loads(await asyncio.wait_for(line(p), timeout + 30)) for p in clients]
            elapsed = time.monotonic() - started
            client_cpu = [cpu_seconds(p.pid) - c for p, c in zip(clients, cpu_before[0], strict=True)]
            server_cpu = server.cpu_seconds() - cpu_before[1]
            for proc in clients:
                proc.wait(10)
    delays: Counter[int] = Counter()
    for r in results:
        delays.update({value: count for value, count in r["delays"]})
    expected = sent * subscribers
    received = sum(r["received"] for r in results)
    p99 = histogram_percentile(delays, 99)
    errors = [e for r in results for e in r["errors"]]
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
            "p50_ms": histogram_percentile(delays, 50),
            "p99_ms": p99,
            "max_ms": max(delays) if delays else None,
            # CPU over the measured load and the wait for its last events, as a share of one core:
            # a client process near 100 % would be the bottleneck, not the server.
            "seconds": round(elapsed, 2),
            "server_cpu_pct": round(100 * server_cpu / elapsed),
            "client_cpu_pct": [round(100 * c / elapsed) for c in client_cpu],
            "errors": errors[:5],
            "target": "p99 <= 250 ms, every subscriber gets every event",
            "met": received == expected and p99 <= 250 and not errors,
        }
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        run_loop(client_main(int(sys.argv[2]), sys.argv[3], int(sys.argv[4])))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=SUBSCRIBERS)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--processes", type=int, default=PROCESSES)
    args = parser.parse_args()
    run_loop(run(args.subscribers, args.rate, args.seconds, args.processes))
