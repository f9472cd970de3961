"""`kill -9` of a real gql-mail process mid-work, then a restart on the same database.

The promise: every accepted message ends `sent`, exactly as the SMTP sink recorded it, and every event
reaches the webhook. At-least-once delivery allows duplicates, but only among the rows that were claimed
(`sending`) when the process died; the tests read that set from the database the dead process left
behind, and report how many duplicates there were."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Figures, account_input
from tests.faults.helpers import HOOK, SUBMIT, message_id_of, simple
from tests.faults.process import ServerProcess
from tests.harness import wait_webhook, webhook_event
from tests.servers.smtp import SmtpServer
from tests.servers.webhook_receiver import ReceivedRequest, WebhookReceiver

REGISTER = "mutation R($input: RegisterAccountInput!) { registerAccount(input: $input) { state } }"
OUTBOX = 'query { outbox(account: "%s", limit: 10000) { queueId status } }'


async def setup_account(
    proc: ServerProcess,
    http: httpx.AsyncClient,
    receiver: WebhookReceiver,
    smtp: SmtpServer,
    account: str,
    events: list[str] | None = None,
) -> None:
    await proc.gql(http, HOOK, {"input": {"url": receiver.url, **({"events": events} if events else {})}})
    await proc.gql(http, REGISTER, {"input": account_input(account, smtp)})
    await wait_webhook(receiver, webhook_event("accountConnected"), timeout=15)


async def submit_many(
    proc: ServerProcess, http: httpx.AsyncClient, account: str, count: int, **extra: Any
) -> list[dict[str, Any]]:
    limit = asyncio.Semaphore(16)

    async def one(i: int) -> dict[str, Any]:
        async with limit:
            data = await proc.gql(
                http, SUBMIT, {"account": account, "input": simple(f"k{i}@example.org", **extra)}
            )
            return dict(data["submitMessage"])

    return list(await asyncio.gather(*(one(i) for i in range(count))))


def sent_events(received: list[ReceivedRequest]) -> dict[str, set[str]]:
    """queueId -> the delivery ids of the 2xx-answered messageSent events for it."""
    out: dict[str, set[str]] = defaultdict(set)
    for r in received:
        if r.header("X-GqlMail-Event") == "messageSent" and 200 <= r.status < 300:
            out[r.json()["data"]["queueId"]].add(r.header("X-GqlMail-Delivery") or "")
    return out


async def wait_all_sent(receiver: WebhookReceiver, queue_ids: set[str], timeout: float) -> None:  # noqa: ASYNC109 - a deadline for asyncio.timeout
    async with asyncio.timeout(timeout):
        while not queue_ids <= set(sent_events(seen := receiver.received)):
            try:
                # One more than what was just looked at, never than the length now (it may have grown since).
                await receiver.wait_for(len(seen) + 1, timeout=timeout)
            except TimeoutError:
                pass


def repeated_deliveries(received: list[ReceivedRequest]) -> set[str]:
    ids = Counter(r.header("X-GqlMail-Delivery") or "" for r in received if 200 <= r.status < 300)
    return {i for i, n in ids.items() if n > 1}


COUNT = 200


@pytest.mark.fault(
    "kill -9 while delivering to a slow SMTP sink",
    f"{COUNT} messages, sink answers DATA after 20 ms (1 s while they are submitted), SIGKILL once a third "
    "more were recorded, restart on the same database with the default settings: within 30 s every message "
    "ends `sent` (GraphQL) and its messageSent webhook is POSTed, the sink has "
    "every one, duplicates only among the rows `sending` at the kill, one messageSent event per message at "
    "the webhook (re-POSTs only of in-flight deliveries)",
)
async def test_kill_during_delivery(
    tmp_path: Path, smtp_server: SmtpServer, webhook_receiver: WebhookReceiver, figures: Figures
) -> None:
    proc = ServerProcess(tmp_path).start()
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            await setup_account(
                proc, http, webhook_receiver, smtp_server, "killed", ["accountConnected", "messageSent"]
            )
            # Slow while the messages are submitted (so most are still queued), then a steady slow sink.
            smtp_server.delay_data(1.0)
            answers = await submit_many(proc, http, "killed", COUNT)
            smtp_server.delay_data(0.02)
            await smtp_server.wait_for_messages(len(smtp_server.messages) + COUNT // 3, timeout=120)
            proc.kill()
            at_kill = len(smtp_server.messages)
            in_flight = {
                r[0] for r in proc.rows("SELECT message_id FROM outbox_message WHERE status = 'sending'")
            }
            hooks_in_flight = {
                r[0] for r in proc.rows("SELECT id FROM webhook_delivery WHERE status = 'sending'")
            }
            assert at_kill < COUNT, "the kill came too late to test anything"

            smtp_server.delay_data(0)
            restarted = time.monotonic()
            proc.start()
            # The promise with the default settings (a 15 s lease): what the dead process held is picked up
            # within 30 s of the restart -- BullMQ's stalled-job check takes about as long.
            await wait_all_sent(webhook_receiver, {a["queueId"] for a in answers}, timeout=30)
            recovered = time.monotonic() - restarted
            outbox = (await proc.gql(http, OUTBOX % "killed"))["outbox"]
    finally:
        proc.stop()
    assert Counter(m["status"] for m in outbox) == {"sent": COUNT}

    received = Counter(message_id_of(m) for m in smtp_server.messages)
    assert set(received) == {a["messageId"] for a in answers}, (
        "every message reached the sink, nothing else did"
    )
    duplicates = {mid for mid, n in received.items() if n > 1}
    assert duplicates <= in_flight, f"duplicates outside the in-flight set: {duplicates - in_flight}"
    assert max(received.values()) <= 2

    per_message = sent_events(webhook_receiver.received)
    assert all(len(ids) == 1 for ids in per_message.values()), "one messageSent event per message"
    assert repeated_deliveries(webhook_receiver.received) <= hooks_in_flight

    figures["recorded by the sink at the kill"] = f"{at_kill} of {COUNT}"
    figures["`sending` at the kill"] = len(in_flight)
    figures["duplicates"] = f"{len(duplicates)} (all among the `sending` rows)"
    figures["lost"] = 0
    figures["restart to every message sent and POSTed"] = f"{recovered:.1f} s (lease 15 s)"


EVENTS_COUNT = 100


@pytest.mark.fault(
    "kill -9 while webhooks are being POSTed",
    f"{EVENTS_COUNT} messages (30 fail once first, so those have 2 events), receiver answers after 100 ms, "
    "SIGKILL once it got 50 POSTs, restart: every webhook_delivery row reached the receiver with a 2xx, "
    "re-POSTs only of deliveries `sending` at the kill, per-message (and per-account) order kept",
)
async def test_kill_during_webhooks(
    tmp_path: Path, smtp_server: SmtpServer, webhook_receiver: WebhookReceiver, figures: Figures
) -> None:
    proc = ServerProcess(tmp_path, GQL_MAIL_RETRY_BASE_SECONDS="0.3", GQL_MAIL_RETRY_MAX_SECONDS="1").start()
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            webhook_receiver.delay_responses(0.1)
            await setup_account(proc, http, webhook_receiver, smtp_server, "hookkill")
            smtp_server.fail_next(30, code=451, message="4.3.0 Try again later")
            answers = await submit_many(proc, http, "hookkill", EVENTS_COUNT)
            await webhook_receiver.wait_for(50, timeout=30)
            proc.kill()
            at_kill = len(webhook_receiver.received)
            hooks_in_flight = {
                r[0] for r in proc.rows("SELECT id FROM webhook_delivery WHERE status = 'sending'")
            }
            pending = proc.rows("SELECT count(*) FROM webhook_delivery WHERE status = 'pending'")[0][0]
            # Undelivered work at the kill: rows still waiting, or claimed and in flight (on a fast machine
            # the dispatcher has claimed everything left by the time the receiver has 50).
            assert pending or hooks_in_flight, "the kill came too late to test anything"

            proc.start()
            # timeout=180 is a bound, not a timing: a loaded 2-core CI box is slow
            await wait_all_sent(webhook_receiver, {a["queueId"] for a in answers}, timeout=180)
    finally:
        proc.stop()
    rows = proc.rows("SELECT id, order_key, status, seq FROM webhook_delivery ORDER BY seq")
    received = webhook_receiver.received
    got_ok = {r.header("X-GqlMail-Delivery") for r in received if 200 <= r.status < 300}
    assert got_ok == {r[0] for r in rows}, "every event reached the webhook, and nothing else"
    # The graceful stop may come while the last batch's 2xx answers are not yet written down: those rows are
    # still `sending` (received, see above) and would be POSTed once more after another restart.
    unrecorded = [r for r in rows if r[2] != "delivered"]
    assert {r[2] for r in unrecorded} <= {"sending"}
    repeated = repeated_deliveries(received)
    assert repeated <= hooks_in_flight, f"re-POSTed outside the in-flight set: {repeated - hooks_in_flight}"

    # Per order key, the receiver saw the events (first 2xx of each) in the order they were staged.
    seq = {r[0]: (r[1], r[3]) for r in rows}
    first_ok: dict[str, float] = {}
    for r in received:
        delivery = r.header("X-GqlMail-Delivery") or ""
        if 200 <= r.status < 300 and delivery not in first_ok:
            first_ok[delivery] = r.received_at
    by_key: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for delivery, at in first_ok.items():
        key, n = seq[delivery]
        by_key[key].append((at, n))
    for key, items in by_key.items():
        assert [n for _, n in sorted(items)] == sorted(n for _, n in items), f"order broken for {key}"

    figures["POSTs received at the kill"] = f"{at_kill} of {len(rows)} events"
    figures["deliveries `sending` at the kill"] = len(hooks_in_flight)
    figures["re-POSTed after the restart"] = f"{len(repeated)} (all among them)"
    figures["lost"] = 0
    figures["2xx'd, not yet recorded at the final graceful stop"] = len(unrecorded)
