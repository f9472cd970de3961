"""Run every benchmark (about 7 minutes on a 2-core machine), print each one's JSON line, then a table.

    python bench/run_all.py [--quick] [--markdown]

--quick shrinks every load (for a smoke test; its figures are not the targets' conditions).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import delivery
import fanout
import http_ceiling
import latency
import submit
from common import emit, log, run_loop
from memory import big_messages, memory_result
from queue_scaling import WAITING, scaling_result, scenario


def figure(r: dict[str, Any]) -> str:
    name = r["benchmark"]
    if "error" in r:
        return f"error: {r['error']}"
    if name == "delivery":
        return (
            f"{r['gql_mail_msgs_per_s']:.0f} msg/s vs reference {r['reference_msgs_per_s']:.0f} msg/s "
            f"= {r['ratio']:.2f} ({r['message_sent_events']} events each round)"
        )
    if name == "submit":
        submitted = f"submit {r['submit_per_s']:.0f}/s (p50 {r['submit_p50_ms']:.0f}, "
        submitted += f"p99 {r['submit_p99_ms']:.0f} ms)"
        queried = (
            f"query {r['query_per_s']:.0f}/s (p50 {r['query_p50_ms']:.0f}, p99 {r['query_p99_ms']:.0f} ms)"
        )
        return f"{submitted} vs {queried} = {r['ratio']:.2f}"
    if name == "http_ceiling":
        if "skipped" in r:
            return f"skipped: {r['skipped']}"
        cases = ", ".join(
            f"{case} {r[case + '_per_s']:.0f}/s = {r[case + '_ratio']:.2f} ({r[case + '_cpu_ms']:.2f} ms CPU)"
            for case in http_ceiling.TARGETS
        )
        return (
            f"vs bare Strawberry {r['reference_per_s']:.0f}/s ({r['reference_cpu_ms']:.2f} ms CPU): {cases}"
        )
    if name == "latency":
        return f"p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms"
    if name == "queue_scaling":
        return f"{r['ratio']:.2f} (with {r['seconds_with_queue']} s, without {r['seconds_without_queue']} s)"
    if name == "memory":
        growth = f"{r['growth_mb']:+.0f} MB over {r['peak_rss_without_queue_mb']:.0f} MB without the queue"
        return f"peak {r['peak_rss_mb']:.0f} MB, {growth}"
    if name == "memory_big":
        g, rest = r["graphql"], r["rest"]
        return (
            f"{r['attachment_mb']} MB attachment: peak +{g['peak_growth_mb']:.0f} MB (GraphQL), "
            f"+{rest['peak_growth_mb']:.0f} MB (REST) vs {r['peak_growth_limit_mb']:.0f}; after delivery "
            f"{g['rss_after_over_idle']:.2f} / {rest['rss_after_over_idle']:.2f} x idle "
            f"{r['idle_rss_mb']:.0f} MB; {r['series']} peak {r['series_peak_rss_mb']:.0f} MB"
        )
    if name == "fanout":
        return (
            f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms; "
            f"{r['deliveries_received']:,}/{r['deliveries_expected']:,} received"
        )
    return str(r)


def table(results: list[dict[str, Any]], markdown: bool) -> str:
    rows = [
        (r["benchmark"], figure(r), str(r.get("target", "")), "yes" if r.get("met") else "NO")
        for r in results
    ]
    head = ("benchmark", "figure", "target", "met")
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "| --- | --- | --- | --- |"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(4)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(
        [fmt.format(*head), fmt.format(*("-" * w for w in widths)), *(fmt.format(*row) for row in rows)]
    )


async def emit_big(quick: bool) -> dict[str, Any]:
    return emit(await big_messages(big_mb=2 if quick else 10, count=5 if quick else 40))


async def main(quick: bool) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []

    async def step(name: str, work: Callable[[], Awaitable[Any]]) -> None:
        started = time.monotonic()
        try:
            out = await work()
            results.extend(out if isinstance(out, list) else [out])
        except Exception as exc:
            traceback.print_exc()
            results.append(emit({"benchmark": name, "error": f"{type(exc).__name__}: {exc}", "met": False}))
        log(f"{name} took {time.monotonic() - started:.0f} s")

    async def queue_and_memory() -> list[dict[str, Any]]:
        s = await scenario(waiting=10_000 if quick else WAITING, due=200 if quick else 1000)
        return [emit(scaling_result(s)), emit(memory_result(s))]

    await step(
        "delivery",
        lambda: delivery.run(messages=500 if quick else 5000, rounds=1 if quick else delivery.ROUNDS),
    )
    await step("submit", lambda: submit.run(seconds=3 if quick else 20))
    await step("http_ceiling", lambda: http_ceiling.run(seconds=3 if quick else 10, rounds=1 if quick else 3))
    await step("latency", lambda: latency.run(messages=30 if quick else 200))
    await step("queue_scaling", queue_and_memory)
    await step("memory_big", lambda: emit_big(quick))
    await step(
        "fanout",
        lambda: fanout.run(subscribers=50 if quick else fanout.SUBSCRIBERS, seconds=2 if quick else 5),
    )
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--markdown", action="store_true", help="print the table as Markdown (for the README)"
    )
    args = parser.parse_args()
    results = run_loop(main(args.quick))
    print()
    print(table(results, args.markdown))
    sys.exit(0)
