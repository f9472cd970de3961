"""Per-account pacing end to end: real aiosmtpd servers that enforce a provider's limits on the test's clock.

The windows are driven by the injectable clock (`server.advance`), never by sleeping: each pass of the
delivery worker (`server.drain`) sends what the limits let through, and the rest must wait, queued, with its
attempt not spent and its `nextAttempt` saying when room opens.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from gql_mail.clock import ManualClock, utc
from gql_mail.models import MessageStatus
from gql_mail.queue import OUTBOX
from tests.conftest import account_input, register_connected
from tests.databases import fresh_database
from tests.faults.helpers import message, simple, submit
from tests.harness import GraphQLErrors, Server, run_server, subscribe
from tests.servers.rate_limited_smtp import RateLimitedSmtpServer

PACING = """
query Pacing($account: ID!) { account(account: $account) {
  limits { perMinute perHour perDay recipientsPerDay maxConnections rampUp preset }
  usage { lastMinute lastHour today recipientsToday }
  throttledUntil } }"""
UPDATE = """
mutation Up($account: ID!, $input: UpdateAccountInput!) {
  updateAccount(account: $account, input: $input) { account state } }"""


async def settle(server: Server) -> None:
    """`server.drain()`, until no message is `sending`: a pass the clock's wake-up started may still be
    admitting its claim when `drain` returns (its rows are then `sending`); draining again waits for it."""
    for _ in range(10):
        await server.drain()
        async with server.runtime.db.read() as session:
            busy = (
                await session.execute(select(func.count()).where(OUTBOX.c.status == MessageStatus.SENDING))
            ).scalar_one()
        if not busy:
            return
    raise AssertionError(f"{busy} messages still sending")


async def pacing(server: Server, account: str) -> dict[str, Any]:
    result: dict[str, Any] = (await server.gql(PACING, {"account": account}))["account"]
    return result


async def submit_many(server: Server, account: str, count: int) -> list[str]:
    return [(await submit(server, account, simple(f"r{i}@example.org")))["queueId"] for i in range(count)]


def when(value: str) -> datetime:
    return utc(datetime.fromisoformat(value.replace("Z", "+00:00")))


def near(value: str, expected: datetime) -> bool:
    """Event dates are in milliseconds (EmailEngine's format)."""
    return abs(when(value) - expected) < timedelta(milliseconds=1)


async def states(server: Server, ids: list[str]) -> list[dict[str, Any]]:
    return [await message(server, q) for q in ids]


async def test_limits_hold_over_every_window_and_spend_no_attempt(server: Server) -> None:
    with RateLimitedSmtpServer(server.clock) as smtp:
        data = account_input("paced", smtp, limits={"perMinute": 3, "perHour": 5})
        await register_connected(server, data)
        ids = await submit_many(server, "paced", 8)
        start = server.clock.now()
        await settle(server)
        assert len(smtp.messages) == 3
        waiting = [m for m in await states(server, ids) if m["status"] == "queued"]
        assert len(waiting) == 5
        # Waiting for room is no attempt, and says until when.
        assert all(m["attemptsMade"] == 0 for m in waiting)
        assert {when(m["nextAttempt"]) for m in waiting} == {start + timedelta(minutes=1)}
        assert (await pacing(server, "paced"))["usage"] == {
            "lastMinute": 3,
            "lastHour": 3,
            "today": 3,
            "recipientsToday": 3,
        }

        server.advance(59)
        await settle(server)
        assert len(smtp.messages) == 3, "a minute is not over"
        server.advance(1)
        await settle(server)
        assert len(smtp.messages) == 5, "the hour allows two more, the minute three"
        waiting = [m for m in await states(server, ids) if m["status"] == "queued"]
        assert {when(m["nextAttempt"]) for m in waiting} == {start + timedelta(hours=1)}

        server.advance(3600)
        await settle(server)
        assert len(smtp.messages) == 8
        assert smtp.most_in_any(timedelta(minutes=1)) <= 3
        assert smtp.most_in_any(timedelta(hours=1)) <= 5
        assert smtp.refusals == []
        sent = await states(server, ids)
        assert [m["status"] for m in sent] == ["sent"] * 8
        assert all(m["attemptsMade"] == 1 for m in sent)


async def test_limits_are_shown_and_changed(server: Server) -> None:
    with RateLimitedSmtpServer(server.clock) as smtp:
        await register_connected(server, account_input("shown", smtp, limits={"perDay": 100}))
        shown = await pacing(server, "shown")
        assert shown["limits"] == {
            "perMinute": None,
            "perHour": None,
            "perDay": 100,
            "recipientsPerDay": None,
            "maxConnections": None,
            "rampUp": False,
            "preset": None,
        }
        assert shown["throttledUntil"] is None
        changed = {"limits": {"perMinute": 2, "maxConnections": 1}}
        await server.gql(UPDATE, {"account": "shown", "input": changed})
        limits = (await pacing(server, "shown"))["limits"]
        assert (limits["perMinute"], limits["perDay"], limits["maxConnections"]) == (2, None, 1)
        try:
            await server.gql(UPDATE, {"account": "shown", "input": {"limits": {"perMinute": 0}}})
        except GraphQLErrors as exc:
            assert exc.codes == ["BAD_USER_INPUT"]
            assert exc.errors[0]["extensions"]["field"] == "limits.perMinute"
        else:
            raise AssertionError("a zero limit was accepted")


async def test_recipients_per_day_counts_recipients(server: Server) -> None:
    with RateLimitedSmtpServer(server.clock) as smtp:
        await register_connected(server, account_input("recip", smtp, limits={"recipientsPerDay": 5}))
        many = {"to": [{"address": f"x{i}@example.org"} for i in range(3)], "subject": "s", "text": "t"}
        first = (await submit(server, "recip", many))["queueId"]
        second = (await submit(server, "recip", many))["queueId"]
        await settle(server)
        assert len(smtp.messages) == 1
        assert (await message(server, second))["status"] == "queued"
        server.advance(86_400)
        await settle(server)
        assert [(await message(server, q))["status"] for q in (first, second)] == ["sent", "sent"]


async def test_rate_throttling_pauses_the_account_once_with_growing_backoff(server: Server) -> None:
    """No limits of its own: the server's `421 4.7.0` after 2 a minute slows the account, not the message."""
    with RateLimitedSmtpServer(server.clock, per_minute=2) as smtp:
        await register_connected(server, account_input("gmailish", smtp))
        async with subscribe(server, account="gmailish", events=["accountThrottled"]) as sub:
            ids = await submit_many(server, "gmailish", 5)
            start = server.clock.now()
            await settle(server)
            assert len(smtp.messages) == 2
            first = await sub.wait_for(lambda e: e["event"] == "accountThrottled")
            assert near(first["data"]["until"], start + timedelta(minutes=1))
            assert first["data"]["reason"].startswith("421 4.7.0")
            assert first["data"]["dailyQuota"] is False
            shown = await pacing(server, "gmailish")
            assert near(shown["throttledUntil"], start + timedelta(minutes=1))
            waiting = [m for m in await states(server, ids) if m["status"] == "queued"]
            assert len(waiting) == 3
            assert all(m["attemptsMade"] == 0 for m in waiting), "a throttled message lost an attempt"
            assert {when(m["nextAttempt"]) for m in waiting} == {start + timedelta(minutes=1)}

            server.advance(60)
            await settle(server)
            assert len(smtp.messages) == 4
            second = await sub.wait_count(lambda e: e["event"] == "accountThrottled", 2)
            # The next pause within the hour is twice as long.
            assert near(second[1]["data"]["until"], start + timedelta(minutes=1 + 2))
            server.advance(120)
            await settle(server)
        assert len(smtp.messages) == 5
        # Connections already mid-message when the first 421 came meet it too; none of them loses anything.
        assert 2 <= len(smtp.refusals) <= 2 * server.settings.max_concurrent_per_account
        assert len([e for e in sub.events if e.get("event") == "accountThrottled"]) == 2, "once per pause"
        done = await states(server, ids)
        assert [m["status"] for m in done] == ["sent"] * 5
        assert all(m["attemptsMade"] == 1 for m in done), "nothing lost, no attempt spent on the throttle"


async def test_a_retry_hint_sets_the_pause(server: Server) -> None:
    with RateLimitedSmtpServer(server.clock) as smtp:
        await register_connected(server, account_input("hinted", smtp))
        smtp.fail_next(code=450, message="4.7.0 Too many messages, try again in 5 minutes")
        async with subscribe(server, account="hinted", events=["accountThrottled"]) as sub:
            queue_id = (await submit(server, "hinted", simple()))["queueId"]
            start = server.clock.now()
            await settle(server)
            event = await sub.wait_for(lambda e: e["event"] == "accountThrottled")
        assert near(event["data"]["until"], start + timedelta(minutes=5))
        server.advance(299)
        await settle(server)
        assert smtp.messages == []
        server.advance(1)
        await settle(server)
        assert (await message(server, queue_id))["status"] == "sent"
        assert (await message(server, queue_id))["attemptsMade"] == 1


async def test_a_daily_quota_reply_pauses_until_the_window_ends_and_fails_nothing(server: Server) -> None:
    with RateLimitedSmtpServer(server.clock, daily=2) as smtp:
        await register_connected(server, account_input("quota", smtp))
        async with subscribe(server, account="quota", events=["accountThrottled", "messageFailed"]) as sub:
            ids = await submit_many(server, "quota", 4)
            start = server.clock.now()
            await settle(server)
            event = await sub.wait_for(lambda e: e["event"] == "accountThrottled")
            assert event["data"]["dailyQuota"] is True
            assert event["data"]["reason"].startswith("550 5.4.5")
            assert near(event["data"]["until"], start + timedelta(days=1))
            waiting = [m for m in await states(server, ids) if m["status"] == "queued"]
            assert len(waiting) == 2 and all(m["attemptsMade"] == 0 for m in waiting)
            server.advance(86_400 - 1)
            await settle(server)
            assert len(smtp.messages) == 2
            server.advance(1)
            await settle(server)
        assert len(smtp.messages) == 4
        assert not [e for e in sub.events if e.get("event") == "messageFailed"]
        assert [m["status"] for m in await states(server, ids)] == ["sent"] * 4


async def test_a_minutes_quota_is_spread_over_the_minute(server: Server) -> None:
    """12 a minute: 2 every 10 s (never the whole minute's worth at once), 12 in any minute."""
    with RateLimitedSmtpServer(server.clock) as smtp:
        await register_connected(server, account_input("smooth", smtp, limits={"perMinute": 12}))
        await submit_many(server, "smooth", 14)
        counts = []
        for _ in range(7):
            await settle(server)
            counts.append(len(smtp.messages))
            server.advance(10)
        assert counts == [2, 4, 6, 8, 10, 12, 14]
        assert smtp.most_in_any(timedelta(minutes=1)) <= 12
        assert smtp.most_in_any(timedelta(seconds=10)) <= 2


async def test_limits_hold_across_a_restart(tmp_path: Path) -> None:
    """The windows are counted in the database: a new process on the same database honours the minute."""
    async with fresh_database(tmp_path) as url:
        with RateLimitedSmtpServer(ManualClock()) as smtp:
            async with run_server(tmp_path / "one", database_url=url) as one:
                await register_connected(one, account_input("kept", smtp, limits={"perMinute": 3}))
                await submit_many(one, "kept", 5)
                await settle(one)
                assert len(smtp.messages) == 3
                stopped_at = one.clock.now()
            async with run_server(tmp_path / "two", database_url=url) as two:
                two.clock.set(stopped_at + timedelta(seconds=30))
                await settle(two)
                assert len(smtp.messages) == 3, "the restart forgot the minute"
                two.advance(30)
                await settle(two)
                assert len(smtp.messages) == 5
