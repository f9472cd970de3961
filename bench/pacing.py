"""6. Pacing: 20 accounts with different per-minute limits and one unlimited account, 10,000 messages.

Reports each limited account's achieved rate against its limit (target: within 5 %, never above, over any
sliding minute) and the unlimited account's throughput against the same run without the limited accounts
(target: >= 0.9).

Time: the server runs in this process on the injectable clock, scaled (`--speed` times real time). At 1 (the
default, about 2 minutes a run) the limited accounts' sends take the share of the CPU they would in
production; faster clocks squeeze the same sends into less wall time, so the unlimited account's ratio is only
meaningful at 1 (at 10 it measured 0.81: the limited accounts' whole load in a tenth of the time). Everything
the server decides (windows, due times) reads that clock; the sink's wall-clock acceptance times are converted
to it. The limited accounts hold `--minutes` minutes of their limit each (account i: 10·(i+1) a minute, 2,100
a minute together); the unlimited account holds the rest of the 10,000. Rates are counted over the `--minutes`
minutes from the first send, both from the server's send log (what it admitted) and from the sink's arrivals
(what a provider would see). The unlimited account's throughput is its messages over the wall time from the
start until its last one arrived.

    python bench/pacing.py [--messages 10000] [--minutes 2] [--speed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common import SECRET, SinkProcess, composed_message, emit, log, queued_copy, run_loop

LIMITED = 20
UNLIMITED = "unlimited"


def limit_of(i: int) -> int:
    return 10 * (i + 1)


class ScaledClock:
    """The server's clock running `speed` times faster than the wall clock, from the wall clock's now."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.wall0 = time.time()
        self.start = datetime.now(UTC)

    def now(self) -> datetime:
        return self.at(time.time())

    def at(self, wall: float) -> datetime:
        return self.start + timedelta(seconds=(wall - self.wall0) * self.speed)


def most_in_a_minute(times: list[datetime]) -> int:
    times = sorted(times)
    most, first = 0, 0
    for last, t in enumerate(times):
        while times[first] <= t - timedelta(minutes=1):
            first += 1
        most = max(most, last - first + 1)
    return most


async def run(sink: SinkProcess, plan: dict[str, tuple[int, int | None]], speed: float) -> dict[str, Any]:
    """One run: `plan` maps account -> (messages, per-minute limit or None). Returns what was measured."""
    from sqlalchemy import insert, select

    from gql_mail.app import create_app
    from gql_mail.config import Settings
    from gql_mail.models import AccountState, SendLog
    from gql_mail.queue import OUTBOX
    from gql_mail.services import accounts, pacing

    await sink.reset()
    workdir = Path(tempfile.mkdtemp(prefix="gql-mail-pacing-"))
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{workdir / 'bench.db'}",
        secret=SECRET,
        data_dir=workdir / "data",
        poll_interval_seconds=0.05,  # 0.25 s of the server's time at speed 5: < 0.5 % of a window
        log_level="warning",
        account_check_interval_seconds=3600,
    )
    clock = ScaledClock(speed)
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        rt = app.state.runtime
        smtp = accounts.SmtpSpec(host="127.0.0.1", port=sink.port, auth=accounts.AuthSpec("u", "p"))
        for account, (_, limit) in plan.items():
            spec = accounts.AccountSpec(
                account=account, name=account, email=f"{account}@bench.example", smtp=smtp
            )
            await accounts.register_account(rt, spec)
            if limit is not None:
                await pacing.set_limits(rt, account, pacing.validated_limits(per_minute=limit))
        deadline = time.monotonic() + 30
        for account in plan:
            while (await accounts.get_account(rt, account)).state != AccountState.CONNECTED:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{account} is not CONNECTED")
                await asyncio.sleep(0.05)

        raw, template_id, env_from, env_to = composed_message()
        owner: dict[str, str] = {}
        rows = []
        now = clock.now()
        for account, (count, _) in plan.items():
            for _ in range(count):
                row = queued_copy(account, raw, template_id, env_from, env_to, due=now, now=now)
                owner[row["message_id"]] = account
                rows.append(row)
        total = len(rows)
        async with rt.db.write(bulk=True) as session:
            for i in range(0, total, 5000):
                await session.execute(insert(OUTBOX), rows[i : i + 5000])
        started = time.time()
        rt.wake.delivery()
        log(f"{total} messages queued for {len(plan)} accounts")
        await sink.wait_count(total, timeout=3600)
        finished = time.time()
        async with rt.db.read() as session:
            logged = (await session.execute(select(SendLog.account_id, SendLog.at))).all()  # type: ignore[call-overload]
        records = await sink.records()

    admitted: dict[str, list[datetime]] = {a: [] for a in plan}
    for account, at in logged:
        admitted[account].append(at.replace(tzinfo=UTC) if at.tzinfo is None else at)
    arrived: dict[str, list[float]] = {a: [] for a in plan}
    for message_id, at in records:
        if message_id in owner:
            arrived[owner[message_id]].append(at)
    return {
        "started": started,
        "finished": finished,
        "admitted": admitted,
        "arrived": arrived,
        "clock": clock,
    }


async def main(messages: int, minutes: int, speed: float) -> dict[str, Any]:
    limited = {f"paced{i:02d}": (limit_of(i) * minutes, limit_of(i)) for i in range(LIMITED)}
    rest = messages - sum(count for count, _ in limited.values())
    if rest <= 0:
        raise SystemExit("--messages too small for --minutes")
    plan: dict[str, tuple[int, int | None]] = {**limited, UNLIMITED: (rest, None)}
    with SinkProcess() as sink:
        mixed = await run(sink, plan, speed)
        alone = await run(sink, {UNLIMITED: (rest, None)}, speed)

    clock: ScaledClock = mixed["clock"]
    accounts: list[dict[str, Any]] = []
    worst = 0.0
    above = False
    for account, (count, limit) in limited.items():
        assert limit is not None
        admitted = sorted(mixed["admitted"][account])
        arrived = sorted(clock.at(t) for t in mixed["arrived"][account])
        first = arrived[0]
        in_span = sum(1 for t in arrived if t < first + timedelta(minutes=minutes))
        rate = in_span / minutes
        most_admitted = most_in_a_minute(admitted)
        most_arrived = most_in_a_minute(arrived)
        above = above or most_admitted > limit
        worst = max(worst, abs(rate - limit) / limit)
        accounts.append(
            {
                "account": account,
                "limit_per_minute": limit,
                "achieved_per_minute": round(rate, 2),
                "most_admitted_in_a_minute": most_admitted,
                "most_arrived_in_a_minute": most_arrived,
                "messages": count,
            }
        )
    mixed_arrivals = mixed["arrived"][UNLIMITED]
    alone_arrivals = alone["arrived"][UNLIMITED]
    mixed_rate = len(mixed_arrivals) / (max(mixed_arrivals) - mixed["started"])
    alone_rate = len(alone_arrivals) / (max(alone_arrivals) - alone["started"])
    return {
        "bench": "pacing",
        "messages": messages,
        "speed": speed,
        "minutes": minutes,
        "limited_accounts": accounts,
        "worst_rate_error": round(worst, 4),
        "any_minute_above_limit": above,
        "unlimited_messages": rest,
        "unlimited_msgs_per_s_mixed": round(mixed_rate, 1),
        "unlimited_msgs_per_s_alone": round(alone_rate, 1),
        "unlimited_ratio": round(mixed_rate / alone_rate, 3),
        "mixed_wall_seconds": round(mixed["finished"] - mixed["started"], 2),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--minutes", type=int, default=2)
    parser.add_argument("--speed", type=float, default=1.0)
    args = parser.parse_args()
    emit(run_loop(main(args.messages, args.minutes, args.speed)))
