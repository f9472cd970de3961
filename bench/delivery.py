"""1. Delivery throughput: a pre-filled queue of small messages to the sink, against a bare aiosmtplib loop.

The queue (default 5,000) is inserted straight into outbox_message of a running server (one transaction),
then one `submitMessage` wakes the worker; the clock runs from that commit until the sink has every
message, every row is `sent` in the database and a websocket subscriber has every `messageSent` event.
The reference sends the same bytes to the same sink over as many reused connections as gql-mail uses for
one account (GQL_MAIL_MAX_CONCURRENT_PER_ACCOUNT, default 4). Target: ratio >= 0.6.

    python bench/delivery.py [--messages 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from common import (
    ACCOUNT,
    SUBMIT,
    SinkProcess,
    bench_server,
    composed_message,
    count_status,
    cpu_seconds,
    emit,
    log,
    prefill,
    run_loop,
    submit_variables,
    subscription,
    wait_until,
)

CONNECTIONS = 4  # gql-mail's default max_concurrent_per_account


async def reference(sink: SinkProcess, messages: int, connections: int) -> float:
    """messages/s of a bare aiosmtplib loop: `connections` logged-in connections, each sending in turn."""
    import aiosmtplib

    raw, template_id, env_from, env_to = composed_message()
    await sink.reset()
    remaining = messages

    async def one_connection() -> None:
        nonlocal remaining
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=sink.port, start_tls=False)
        await client.connect()
        await client.login("u", "p")
        while remaining > 0:
            remaining -= 1
            await client.sendmail(env_from, env_to, raw)
        await client.quit()

    started = time.time()
    sink_cpu = cpu_seconds(sink.pid)
    await asyncio.gather(*(one_connection() for _ in range(connections)))
    elapsed = time.time() - started
    sink_ms = 1000 * (cpu_seconds(sink.pid) - sink_cpu) / messages
    log(f"reference: {messages / elapsed:.0f} msg/s, sink CPU {sink_ms:.2f} ms/msg")
    assert await sink.count() == messages
    return messages / elapsed


async def gql_mail(sink: SinkProcess, messages: int) -> dict[str, Any]:
    await sink.reset()
    async with bench_server(sink) as server:
        sent_events: set[str] = set()

        def on_event(event: dict[str, Any], _received: float) -> None:
            sent_events.add(event["data"]["queueId"])

        async with subscription(server.port, server.token, on_event, events=["messageSent"]):
            await asyncio.sleep(0.2)  # the subscription is live once its first read is parked
            prefill(server.db_path, messages - 1)
            started = time.time()
            cpu_before, sink_cpu_before = server.cpu_seconds(), cpu_seconds(sink.pid)
            client = server.client()
            await client.gql(SUBMIT, submit_variables())  # wakes the worker at once
            client.close()
            timeout = 30 + messages / 50
            sink_done = await sink.wait_count(messages, timeout)
            events_done = await wait_until(
                lambda: len(sent_events) >= messages, timeout, "messageSent events"
            )
            recorded_done = await wait_until(
                lambda: count_status(server.db_path, "sent") >= messages, timeout, "sent rows", step=0.05
            )
            cpu = server.cpu_seconds() - cpu_before
            sink_cpu = cpu_seconds(sink.pid) - sink_cpu_before
        _, peak = server.rss_kib()
    elapsed = max(sink_done, events_done, recorded_done) - started
    return {
        "rate": messages / elapsed,
        "sink_rate": messages / (sink_done - started),
        "events": len(sent_events),
        "server_cpu_per_msg_ms": round(1000 * cpu / messages, 3),
        "sink_cpu_per_msg_ms": round(1000 * sink_cpu / messages, 3),
        "peak_rss_mb": round(peak / 1024, 1),
    }


async def run(messages: int = 5000, connections: int = CONNECTIONS) -> dict[str, Any]:
    with SinkProcess() as sink:
        log(f"delivery: reference, {messages} messages over {connections} connections")
        ref = await reference(sink, messages, connections)
        log(f"delivery: gql-mail, {messages} pre-filled messages to account {ACCOUNT}")
        ours = await gql_mail(sink, messages)
    ratio = ours["rate"] / ref
    return emit(
        {
            "benchmark": "delivery",
            "messages": messages,
            "connections": connections,
            "gql_mail_msgs_per_s": round(ours["rate"], 1),
            "gql_mail_sink_msgs_per_s": round(ours["sink_rate"], 1),
            "reference_msgs_per_s": round(ref, 1),
            "ratio": round(ratio, 3),
            "target": ">= 0.6",
            "met": ratio >= 0.6,
            "message_sent_events": ours["events"],
            "server_cpu_per_msg_ms": ours["server_cpu_per_msg_ms"],
            "sink_cpu_per_msg_ms": ours["sink_cpu_per_msg_ms"],
        }
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    args = parser.parse_args()
    run_loop(run(args.messages))
