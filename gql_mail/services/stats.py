"""What the deployment holds now, counted: accounts by state, messages by status, webhook deliveries by
status (EmailEngine's `GET /v1/stats` shows these as its connections and queues). One grouped count per
table, so the answer costs three indexed scans however many rows there are. `queue_snapshot` adds the ages
and live workers that /metrics exports (gql_mail/metrics.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlmodel import col

from gql_mail.clock import utc
from gql_mail.metrics import QueueSnapshot
from gql_mail.models import Account, AccountState, MessageStatus, OutboxMessage, WebhookDelivery, Worker
from gql_mail.queue import alive_since
from gql_mail.runtime import Runtime


@dataclass(frozen=True)
class Counts:
    accounts: Mapping[str, int]  # by AccountState
    messages: Mapping[str, int]  # by MessageStatus; "queued" only those due now
    scheduled: int  # queued messages not due yet
    deliveries: Mapping[str, int]  # webhook deliveries by status; "pending" only those due now
    deliveries_delayed: int  # pending deliveries waiting for a retry


async def counts(rt: Runtime) -> Counts:
    now = rt.clock.now()
    later = col(OutboxMessage.next_attempt_at) > now
    async with rt.db.read() as session:
        accounts = (
            await session.execute(select(col(Account.state), func.count()).group_by(col(Account.state)))
        ).all()
        messages = (
            await session.execute(
                select(col(OutboxMessage.status), later, func.count()).group_by(
                    col(OutboxMessage.status), later
                )
            )
        ).all()
        retry = col(WebhookDelivery.next_attempt_at) > now
        deliveries = (
            await session.execute(
                select(col(WebhookDelivery.status), retry, func.count()).group_by(
                    col(WebhookDelivery.status), retry
                )
            )
        ).all()
    by_status: dict[str, int] = {}
    scheduled = 0
    for status, not_due, count in messages:
        if status == MessageStatus.QUEUED and not_due:
            scheduled += int(count)
        else:
            by_status[str(status)] = by_status.get(str(status), 0) + int(count)
    by_delivery: dict[str, int] = {}
    delayed = 0
    for status, not_due, count in deliveries:
        if status == "pending" and not_due:
            delayed += int(count)
        else:
            by_delivery[str(status)] = by_delivery.get(str(status), 0) + int(count)
    return Counts(
        accounts={str(state): int(count) for state, count in accounts},
        messages=by_status,
        scheduled=scheduled,
        deliveries=by_delivery,
        deliveries_delayed=delayed,
    )


async def queue_snapshot(rt: Runtime) -> QueueSnapshot:
    """`counts`, plus how long the oldest due message and the oldest undelivered webhook deliveries have
    waited, and how many workers are alive: what a scrape of /metrics reads from the database. Each age is
    a MIN over an indexed status, so this stays a handful of index reads however large the tables are."""
    now = rt.clock.now()
    found = await counts(rt)
    outbox_due = (col(OutboxMessage.status) == MessageStatus.QUEUED) & (
        col(OutboxMessage.next_attempt_at) <= now
    )
    async with rt.db.read() as session:
        oldest_due = (
            await session.execute(select(func.min(col(OutboxMessage.next_attempt_at))).where(outbox_due))
        ).scalar_one()
        waiting = (
            await session.execute(
                select(col(WebhookDelivery.status), func.min(col(WebhookDelivery.created_at)))
                .where(col(WebhookDelivery.status).in_(("pending", "failed")))
                .group_by(col(WebhookDelivery.status))
            )
        ).all()
        workers = (
            await session.execute(
                select(func.count())
                .select_from(Worker)
                .where(col(Worker.heartbeat_at) >= alive_since(rt, now))
            )
        ).scalar_one()

    def age(since: datetime | None) -> float | None:
        return None if since is None else max((now - utc(since)).total_seconds(), 0.0)

    deliveries = dict(found.deliveries)
    deliveries["delayed"] = found.deliveries_delayed
    messages = dict(found.messages)
    messages["scheduled"] = found.scheduled
    return QueueSnapshot(
        messages={str(status): 0 for status in (*MessageStatus, "scheduled")} | messages,
        oldest_due_seconds=age(oldest_due),
        webhook_deliveries=deliveries,
        webhook_oldest_seconds={
            str(status): seconds for status, since in waiting if (seconds := age(since)) is not None
        },
        accounts={str(state): 0 for state in AccountState} | dict(found.accounts),
        workers=int(workers),
    )
