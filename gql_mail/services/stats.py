"""What the deployment holds now, counted: accounts by state, messages by status, webhook deliveries by
status (EmailEngine's `GET /v1/stats` shows these as its connections and queues). One grouped count per
table, so the answer costs three indexed scans however many rows there are."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlmodel import col

from gql_mail.models import Account, MessageStatus, OutboxMessage, WebhookDelivery
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
