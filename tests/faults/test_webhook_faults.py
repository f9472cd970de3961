"""Webhook receiver faults: down for minutes, answering 500, answering slowly, hanging up, and all of it
across a restart of gql-mail. Backoff is skipped with the manual clock (server.advance), so "minutes" of
downtime cost no real time; the receiver really is down (connections refused) while the clock moves.

Every check compares what the receiver got with what a live subscription saw: every event arrives, no
delivery is POSTed again once it was answered 2xx, and the events of one message (or one account) arrive
in the order they happened."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from gql_mail.models import WebhookDelivery
from tests.conftest import Figures, account_input, register_connected
from tests.faults.helpers import HOOK, of, simple, submit
from tests.harness import Server, run_server, subscribe
from tests.servers.smtp import SmtpServer
from tests.servers.webhook_receiver import ReceivedRequest, WebhookReceiver

WEBHOOK_TIMEOUT = 1.0


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with run_server(tmp_path, webhook_timeout_seconds=WEBHOOK_TIMEOUT) as s:
        yield s


def key_of(event: str, account: str | None, data: dict[str, Any]) -> str:
    """What gql-mail orders webhook deliveries by: the message, else the account."""
    return str(data.get("queueId") or account or "")


Expected = list[tuple[str, str]]


async def produce(server: Server, smtp: SmtpServer, receiver: WebhookReceiver, account: str) -> Expected:
    """A webhook for every event, then events of several kinds: an account added and connected, one
    message that fails once before it is sent, two sent at once. Returns (event, order key) of every event
    in the order a live subscription saw them."""
    await server.gql(HOOK, {"input": {"url": receiver.url, "secret": "k"}})
    smtp.fail_next(1, code=451, message="4.3.0 Try again later")
    await register_connected(server, account_input(account, smtp))
    async with subscribe(server, account=account) as sub:
        answers = [await submit(server, account, simple(f"w{i}@example.org")) for i in range(3)]
        await sub.wait_for(of("messageDeliveryError"))
        server.advance(3600)
        for answer in answers:
            await sub.wait_for(of("messageSent", answer["queueId"]))
    # The subscription opened after registration; the account's two events happened before it.
    seen = [(e["event"], key_of(e["event"], e["account"], e["data"])) for e in sub.events]
    return [("accountAdded", account), ("accountConnected", account), *seen]


async def wait_delivered(
    receiver: WebhookReceiver,
    count: int,
    server: Server,
    timeout: float = 15.0,  # noqa: ASYNC109 - a deadline for asyncio.timeout
) -> None:
    """Wait until `count` deliveries were answered 2xx (advancing the clock past any backoff meanwhile)."""
    async with asyncio.timeout(timeout):
        while (
            len({r.header("X-GqlMail-Delivery") for r in receiver.received if 200 <= r.status < 300}) < count
        ):
            server.advance(3600)
            try:
                await receiver.wait_for(len(receiver.received) + 1, timeout=1.0)
            except TimeoutError:
                pass


def check_log(
    received: list[ReceivedRequest], expected: Expected, *, timed_out: AbstractSet[str] = frozenset()
) -> dict[str, int]:
    """Every expected event arrived with a 2xx; none was POSTed again after a 2xx gql-mail saw; per key, the
    2xx'd events arrived in the order they happened. Returns counts for the report."""
    by_delivery: dict[str, list[ReceivedRequest]] = defaultdict(list)
    for r in received:
        by_delivery[r.header("X-GqlMail-Delivery") or ""].append(r)
    ok_first: list[ReceivedRequest] = []
    for delivery_id, requests in by_delivery.items():
        oks = [i for i, r in enumerate(requests) if 200 <= r.status < 300]
        assert oks, f"delivery {delivery_id} never answered 2xx"
        # After the 2xx gql-mail saw, nothing more. A 2xx it never saw (it timed out first) may repeat.
        seen_ok = oks[0] if delivery_id not in timed_out else oks[-1]
        assert seen_ok == len(requests) - 1, (
            f"delivery {delivery_id} POSTed again after a 2xx: {[r.status for r in requests]}"
        )
        assert len({r.body for r in requests}) == 1, "a retry carries the same body"
        ok_first.append(requests[oks[0]])
    ok_first.sort(key=lambda r: r.received_at)
    got: dict[str, list[str]] = defaultdict(list)
    for r in ok_first:
        body = r.json()
        assert r.header("X-GqlMail-Event") == body["event"]
        got[key_of(body["event"], body["account"], body["data"])].append(body["event"])
    want: dict[str, list[str]] = defaultdict(list)
    for event, key in expected:
        want[key].append(event)
    assert dict(got) == dict(want), "every event arrived, in its message's (account's) order"
    return {"requests": len(received), "events": len(ok_first)}


async def attempts_made(server: Server) -> int:
    async with server.runtime.db.read() as session:
        return int((await session.execute(select(func.max(WebhookDelivery.attempts_made)))).scalar() or 0)


@pytest.mark.fault(
    "Webhook receiver down for minutes",
    "connections refused for 10 minutes (clock time, with every retry that falls due attempted): once it is "
    "back, every event arrives, none twice, each message's and account's events in order",
)
async def test_receiver_down(
    server: Server, smtp_server: SmtpServer, webhook_receiver: WebhookReceiver, figures: Figures
) -> None:
    webhook_receiver.down()
    expected = await produce(server, smtp_server, webhook_receiver, "hookdown")
    for _ in range(10):
        server.advance(60)
        await server.workers.webhooks.drain()
    assert webhook_receiver.received == []
    tries = await attempts_made(server)
    webhook_receiver.up()
    await wait_delivered(webhook_receiver, len(expected), server)
    counts = check_log(webhook_receiver.received, expected)
    figures["failed attempts per delivery while down"] = tries
    figures["events delivered"] = f"{counts['events']} of {len(expected)}, {counts['requests']} requests"


@pytest.mark.fault(
    "Webhook receiver answers 500",
    "the first 5 POSTs answered 500: each is retried with backoff; every event arrives, none twice after "
    "a 2xx, per-message order kept (a later event waits for an earlier one's retry)",
)
async def test_receiver_500(
    server: Server, smtp_server: SmtpServer, webhook_receiver: WebhookReceiver, figures: Figures
) -> None:
    webhook_receiver.fail_next(5, status=500)
    expected = await produce(server, smtp_server, webhook_receiver, "hook500")
    await wait_delivered(webhook_receiver, len(expected), server)
    counts = check_log(webhook_receiver.received, expected)
    assert len([r for r in webhook_receiver.received if r.status == 500]) == 5
    figures["events delivered"] = (
        f"{counts['events']} of {len(expected)}, {counts['requests']} requests (5 answered 500)"
    )


@pytest.mark.fault(
    "Webhook receiver answers slowly (within the timeout)",
    f"every answer takes 0.3 s (timeout {WEBHOOK_TIMEOUT:g} s): every event arrives exactly once, order kept",
)
async def test_receiver_slow(
    server: Server, smtp_server: SmtpServer, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.delay_responses(0.3)
    expected = await produce(server, smtp_server, webhook_receiver, "hookslow")
    await wait_delivered(webhook_receiver, len(expected), server)
    check_log(webhook_receiver.received, expected)
    assert len(webhook_receiver.received) == len(expected), "slow but in time: no retries"


@pytest.mark.fault(
    "Webhook receiver answers slower than the timeout",
    f"answers take 1.5 s (timeout {WEBHOOK_TIMEOUT:g} s) until the first request, then are fast: only the "
    "POSTs that timed out are sent again, with the same X-GqlMail-Delivery id and body (receivers can "
    "de-duplicate); every event arrives, order kept",
)
async def test_receiver_too_slow(
    server: Server, smtp_server: SmtpServer, webhook_receiver: WebhookReceiver, figures: Figures
) -> None:
    webhook_receiver.delay_responses(1.5)
    expected = await produce(server, smtp_server, webhook_receiver, "hooktooslow")
    await webhook_receiver.wait_for(1, timeout=10)
    webhook_receiver.delay_responses(0)
    await wait_delivered(webhook_receiver, len(expected), server)
    received = webhook_receiver.received
    timed_out = {r.header("X-GqlMail-Delivery") or "" for r in received if r.delay > WEBHOOK_TIMEOUT}
    ids = [r.header("X-GqlMail-Delivery") for r in received]
    repeated = {i for i in ids if ids.count(i) > 1}
    assert timed_out and repeated == timed_out, "exactly the POSTs that timed out were sent again"
    check_log(received, expected, timed_out=timed_out)
    figures["re-POSTed after a timeout (same delivery id)"] = len(repeated)


@pytest.mark.fault(
    "Webhook receiver closes the connection without answering",
    "the first 3 requests are read and the connection dropped: retried; every event arrives, none twice "
    "after a 2xx, order kept",
)
async def test_receiver_hangs_up(
    server: Server, smtp_server: SmtpServer, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.close_next(3)
    expected = await produce(server, smtp_server, webhook_receiver, "hookclose")
    await wait_delivered(webhook_receiver, len(expected), server)
    check_log(webhook_receiver.received, expected)
    assert len([r for r in webhook_receiver.received if r.status == 0]) == 3


@pytest.mark.fault(
    "Webhook receiver down across a gql-mail restart",
    "receiver down while events are produced; gql-mail stopped and started again on the same database; "
    "receiver back: every event arrives, none twice, order kept",
)
async def test_receiver_down_across_restart(
    tmp_path: Path, smtp_server: SmtpServer, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.down()
    async with run_server(tmp_path, webhook_timeout_seconds=WEBHOOK_TIMEOUT) as first:
        expected = await produce(first, smtp_server, webhook_receiver, "hookrestart")
        first.advance(120)
        await first.workers.webhooks.drain()
    assert webhook_receiver.received == []
    webhook_receiver.up()
    async with run_server(tmp_path, webhook_timeout_seconds=WEBHOOK_TIMEOUT) as second:
        await wait_delivered(webhook_receiver, len(expected), second)
        check_log(webhook_receiver.received, expected)
