"""gql-mail's HTTP requests against Strawberry's own ceiling, with wrk as the load generator.

The reference is a bare Strawberry app (bench/reference_app.py: `query { hello }`, parse and validation
caches on) in a uvicorn process with the options `gql-mail serve` uses; gql-mail is `python -m gql_mail
serve` on a fresh SQLite file with the bench sink's account. Each round runs wrk (`-t2 -c32`, keep-alive,
a Lua script setting the POST body and the Authorization header) for `--seconds` against the reference,
then against gql-mail for each case:

- `query`: the authenticated trivial query `{ accounts { account } }`;
- `scheduled`: `submitMessage` due next week (the HTTP path and the commit, no delivery);
- `due_now`: `submitMessage` due at once, delivered to the sink meanwhile; after the phase the server
  must have delivered every message it accepted (the sink's count and the rows' status `sent`).

A case's ratio is its rate over the reference's rate of the same round; the median over the rounds is
reported (rounds alternate, so drifts of the machine's speed hit both sides alike). The server's CPU per
request comes from /proc/PID/stat before and after the phase (for `due_now`, until the last message is
delivered: a submission's cost includes its delivery). A response counts as an error when its status is
not 200 or its body has `"errors"`.

    python bench/http_ceiling.py [--seconds 10] [--rounds 3] [--cases query,scheduled,due_now]

Needs `wrk` (apt-get install wrk); without it the benchmark says so and is skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from common import (
    ROOT,
    SUBMIT,
    ServerProcess,
    SinkProcess,
    bench_server,
    cpu_seconds,
    emit,
    free_port,
    log,
    profile,
    run_loop,
    submit_variables,
)

TRIVIAL = "{ accounts { account } }"
HELLO = "query { hello }"
TARGETS = {"query": 0.7, "scheduled": 0.4, "due_now": 0.35}
THREADS = 2
CONNECTIONS = 32

# Counts responses that are not a 200 without "errors" in each wrk thread; `done` prints the sum on a line
# of its own, which `wrk_run` reads.
LUA = """
wrk.method = "POST"
wrk.body = %(body)s
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = %(authorization)s
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0; good = 0; first = nil end
function response(status, headers, body)
  if status ~= 200 or string.find(body, '"errors"', 1, true) then
    bad = bad + 1
    if first == nil then first = status .. " " .. string.sub(body, 1, 300) end
  else
    good = good + 1
  end
end
function done(summary, latency, requests)
  local b, g = 0, 0
  for _, t in ipairs(threads) do
    b = b + t:get("bad"); g = g + t:get("good")
    local f = t:get("first")
    if f ~= nil then io.write("first error: ", f, "\\n") end
  end
  io.write(string.format("gqlm: good=%%d bad=%%d p50_us=%%d p99_us=%%d\\n", g, b,
    latency:percentile(50), latency:percentile(99)))
end
"""


def lua_string(text: str) -> str:
    """A Lua long string holding `text` verbatim (no escapes are interpreted in one)."""
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


def wrk_script(directory: Path, name: str, query: str, variables: dict[str, Any], token: str) -> Path:
    body = orjson.dumps({"query": query, "variables": variables}).decode()
    path = directory / f"{name}.lua"
    path.write_text(LUA % {"body": lua_string(body), "authorization": lua_string(f"Bearer {token}")})
    return path


def wrk_run(url: str, script: Path, seconds: float, pid: int) -> dict[str, Any]:
    """One wrk phase; the rate of good answers, their latency, and the server's CPU over the phase."""
    cpu_before = cpu_seconds(pid)
    started = time.monotonic()
    done = subprocess.run(
        [
            "wrk",
            f"-t{THREADS}",
            f"-c{CONNECTIONS}",
            f"-d{seconds:g}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(pid) - cpu_before
    found = re.search(r"gqlm: good=(\d+) bad=(\d+) p50_us=(\d+) p99_us=(\d+)", done.stdout)
    if found is None:
        raise RuntimeError(f"wrk printed no summary:\n{done.stdout}\n{done.stderr}")
    good, bad, p50, p99 = (int(x) for x in found.groups())
    for line in done.stdout.splitlines():
        if line.startswith("first error:"):
            log(line[:300])
    return {
        "good": good,
        "errors": bad,
        "rate": good / seconds,
        "p50_ms": round(p50 / 1000, 2),
        "p99_ms": round(p99 / 1000, 2),
        "cpu_s": cpu,
        "elapsed_s": elapsed,
    }


class ReferenceProcess:
    """bench/reference_app.py in a process of its own."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> ReferenceProcess:
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "reference_app.py"), str(self.port)]
        )
        deadline = time.monotonic() + timeout
        body = orjson.dumps({"query": HELLO})
        request = (
            b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
        ) + body
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"reference app exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(request)
                    if b" 200 " in s.recv(4096):
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError("the reference app did not answer")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None


def outbox_counts(db_path: Path) -> dict[str, int]:
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30) as conn:
        return dict(conn.execute("SELECT status, count(*) FROM outbox_message GROUP BY status").fetchall())


async def drain(server: ServerProcess, sink: SinkProcess, accepted: int, timeout: float = 120.0) -> int:  # noqa: ASYNC109
    """Wait until nothing due is left queued or sending and the sink has at least `accepted` messages;
    the sink's count. (The server may have committed a few more than wrk saw answered: the ones in flight
    when wrk stopped.)"""
    deadline = time.monotonic() + timeout
    while True:
        counts = outbox_counts(server.db_path)
        delivered = await sink.count()
        # Scheduled ones stay queued for a week: only `sending` and the due-now total matter.
        due_open = counts.get("sending", 0) + counts.get("queued", 0) - scheduled_total(server.db_path)
        if due_open == 0 and delivered >= accepted:
            return delivered
        if time.monotonic() > deadline:
            raise TimeoutError(f"{due_open} due messages still open, sink has {delivered} of {accepted}")
        await asyncio.sleep(0.1)


def scheduled_total(db_path: Path) -> int:
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat(sep=" ")
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30) as conn:
        return int(
            conn.execute(
                "SELECT count(*) FROM outbox_message WHERE status = 'queued' AND next_attempt_at > ?",
                (later,),
            ).fetchone()[0]
        )


def per_request_ms(cpu_s: float, requests: int) -> float:
    return round(1000 * cpu_s / max(1, requests), 3)


async def run(
    seconds: float = 10.0, rounds: int = 3, cases: tuple[str, ...] = tuple(TARGETS)
) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        log("wrk is not installed (apt-get install wrk): http_ceiling skipped")
        return emit(
            {
                "benchmark": "http_ceiling",
                "skipped": "wrk is not installed (apt-get install wrk)",
                "met": False,
            }
        )
    targets = {case: TARGETS[case] for case in cases}
    phases: dict[str, list[dict[str, Any]]] = {"reference": [], **{case: [] for case in targets}}
    ratios: dict[str, list[float]] = {case: [] for case in targets}
    delivered_ok = True
    with tempfile.TemporaryDirectory(prefix="gql-mail-wrk-") as tmp, SinkProcess() as sink:
        directory = Path(tmp)
        reference = ReferenceProcess().start()
        spy = profile(reference.pid, "reference")
        try:
            async with bench_server(sink) as server:
                url = f"{server.url}/graphql"
                later = (datetime.now(UTC) + timedelta(days=7)).replace(microsecond=0)
                scripts = {
                    "reference": wrk_script(directory, "reference", HELLO, {}, server.token),
                    "query": wrk_script(directory, "query", TRIVIAL, {}, server.token),
                    "scheduled": wrk_script(
                        directory, "scheduled", SUBMIT, submit_variables(send_at=later), server.token
                    ),
                    "due_now": wrk_script(directory, "due_now", SUBMIT, submit_variables(), server.token),
                }
                ref_url = f"http://127.0.0.1:{reference.port}/graphql"
                # A short warm-up of each (imports, caches, the connection pools).
                for name in ("reference", "query", "scheduled"):
                    target, pid = (ref_url, reference.pid) if name == "reference" else (url, server.pid)
                    wrk_run(target, scripts[name], 1, pid)
                for number in range(1, rounds + 1):
                    ref = wrk_run(ref_url, scripts["reference"], seconds, reference.pid)
                    phases["reference"].append(ref)
                    for case in targets:
                        if case == "due_now":
                            await sink.reset()
                            sent_before = outbox_counts(server.db_path).get("sent", 0)
                        result = wrk_run(url, scripts[case], seconds, server.pid)
                        if case == "due_now":
                            cpu_at = cpu_seconds(server.pid)
                            delivered = await drain(server, sink, result["good"])
                            result["cpu_s"] += cpu_seconds(server.pid) - cpu_at
                            sent = outbox_counts(server.db_path).get("sent", 0) - sent_before
                            result["delivered"] = delivered
                            result["sent_rows"] = sent
                            delivered_ok &= delivered == sent and delivered >= result["good"]
                        phases[case].append(result)
                        ratios[case].append(result["rate"] / ref["rate"])
                    summary = ", ".join(f"{c} {ratios[c][-1]:.2f}" for c in targets)
                    log(f"http_ceiling round {number}: reference {ref['rate']:.0f} req/s; {summary}")
        finally:
            reference.stop()
            if spy is not None:
                spy.wait(30)

    def med(case: str, key: str) -> float:
        return statistics.median(p[key] for p in phases[case])

    result: dict[str, Any] = {
        "benchmark": "http_ceiling",
        "seconds": seconds,
        "rounds": rounds,
        "threads": THREADS,
        "connections": CONNECTIONS,
        "reference_per_s": round(med("reference", "rate"), 1),
        "reference_cpu_ms": round(
            statistics.median(per_request_ms(p["cpu_s"], p["good"]) for p in phases["reference"]), 3
        ),
    }
    met = delivered_ok
    for case, target in targets.items():
        ratio = statistics.median(ratios[case])
        met &= ratio >= target
        result[f"{case}_per_s"] = round(med(case, "rate"), 1)
        result[f"{case}_ratio"] = round(ratio, 3)
        result[f"{case}_ratios"] = [round(r, 3) for r in ratios[case]]
        result[f"{case}_p50_ms"] = med(case, "p50_ms")
        result[f"{case}_p99_ms"] = med(case, "p99_ms")
        result[f"{case}_cpu_ms"] = round(
            statistics.median(per_request_ms(p["cpu_s"], p["good"]) for p in phases[case]), 3
        )
        result[f"{case}_target"] = target
    result["errors"] = sum(p["errors"] for case in phases for p in phases[case])
    if "due_now" in targets:
        result["due_now_delivered"] = sum(p["delivered"] for p in phases["due_now"])
        result["due_now_accepted"] = sum(p["good"] for p in phases["due_now"])
    result["every_accepted_delivered"] = delivered_ok
    result["target"] = ", ".join(f"{case} >= {t}" for case, t in targets.items())
    result["met"] = met and result["errors"] == 0
    return emit(result)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--cases", default=",".join(TARGETS), help=f"a comma-separated subset of {', '.join(TARGETS)}"
    )
    args = parser.parse_args()
    run_loop(run(args.seconds, args.rounds, tuple(args.cases.split(","))))
