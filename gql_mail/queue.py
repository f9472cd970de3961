"""Every query that claims or releases work, in one place.

A claim is one statement: `UPDATE … WHERE id IN (SELECT … LIMIT n) RETURNING …`. SQLite runs it under its
single writer lock; PostgreSQL adds `FOR UPDATE SKIP LOCKED` to the inner select, so workers in many
processes never take the same row. Both read the due rows through the (status, next_attempt_at) index and
never scan the queue. A crashed worker's rows come back when their lease expires.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import exists, select, update
from sqlalchemy.orm import aliased

from gql_mail.models import Account, AccountState, MessageStatus, OutboxMessage, WebhookDelivery
from gql_mail.runtime import Runtime


@dataclass(frozen=True)
class ClaimedMessage:
    id: str
    account_id: str
    message_id: str
    envelope_from: str
    envelope_to: tuple[str, ...]
    raw: bytes
    attempts_made: int
    attempts: int
    copy_to_sent: bool


@dataclass(frozen=True)
class ClaimedDelivery:
    seq: int
    id: str
    webhook_id: str
    event: str
    body: bytes
    attempts_made: int


def _lease(rt: Runtime, now: datetime) -> datetime:
    return now + timedelta(seconds=rt.settings.lease_seconds)


async def claim_messages(rt: Runtime, limit: int) -> list[ClaimedMessage]:
    """Due, queued messages of CONNECTED accounts, oldest due first, now leased to this worker."""
    now = rt.clock.now()
    due = (
        select(OutboxMessage.id)
        .join(Account, Account.id == OutboxMessage.account_id)
        .where(
            OutboxMessage.status == MessageStatus.QUEUED,
            OutboxMessage.next_attempt_at <= now,
            Account.state == AccountState.CONNECTED,
        )
        .order_by(OutboxMessage.next_attempt_at)
        .limit(limit)
    )
    if not rt.db.is_sqlite:
        due = due.with_for_update(skip_locked=True, of=OutboxMessage)  # type: ignore[arg-type]
    stmt = (
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(due.scalar_subquery()))  # type: ignore[attr-defined]
        .values(status=MessageStatus.SENDING, lease_until=_lease(rt, now), updated_at=now)
        .returning(
            OutboxMessage.id,
            OutboxMessage.account_id,
            OutboxMessage.message_id,
            OutboxMessage.envelope_from,
            OutboxMessage.envelope_to,
            OutboxMessage.raw,
            OutboxMessage.attempts_made,
            OutboxMessage.attempts,
            OutboxMessage.copy_to_sent,
        )
        .execution_options(synchronize_session=False)
    )
    async with rt.db.write() as session:
        rows = (await session.execute(stmt)).all()
    claimed = [
        ClaimedMessage(
            id=r.id,
            account_id=r.account_id,
            message_id=r.message_id,
            envelope_from=r.envelope_from,
            envelope_to=tuple(r.envelope_to),
            raw=r.raw,
            attempts_made=r.attempts_made,
            attempts=r.attempts,
            copy_to_sent=r.copy_to_sent,
        )
        for r in rows
    ]
    claimed.sort(key=lambda m: m.id)
    return claimed


async def release_messages(rt: Runtime, ids: list[str]) -> None:
    """Give claimed messages back untried (their account stopped being usable); no attempt is counted."""
    if not ids:
        return
    async with rt.db.write() as session:
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(ids), OutboxMessage.status == MessageStatus.SENDING)  # type: ignore[attr-defined]
            .values(status=MessageStatus.QUEUED, lease_until=None)
            .execution_options(synchronize_session=False)
        )


async def renew_message_leases(rt: Runtime, ids: list[str]) -> None:
    """Extend the leases of messages a live worker still holds (claimed, not yet recorded)."""
    now = rt.clock.now()
    async with rt.db.write() as session:
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(ids), OutboxMessage.status == MessageStatus.SENDING)  # type: ignore[attr-defined]
            .values(lease_until=_lease(rt, now))
            .execution_options(synchronize_session=False)
        )


async def reclaim_expired_leases(rt: Runtime) -> int:
    """Rows whose worker died mid-flight go back to the queue (at-least-once delivery)."""
    now = rt.clock.now()
    async with rt.db.write() as session:
        messages = await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.status == MessageStatus.SENDING, OutboxMessage.lease_until < now)  # type: ignore[operator]
            .values(status=MessageStatus.QUEUED, lease_until=None)
            .execution_options(synchronize_session=False)
        )
        deliveries = await session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.status == "sending", WebhookDelivery.lease_until < now)  # type: ignore[operator]
            .values(status="pending", lease_until=None)
            .execution_options(synchronize_session=False)
        )
    return int(messages.rowcount or 0) + int(deliveries.rowcount or 0)  # type: ignore[attr-defined]


async def claim_webhook_deliveries(rt: Runtime, limit: int) -> list[ClaimedDelivery]:
    """Due deliveries that are first in line for their (webhook, order key): a receiver sees each
    message's events in order, even when an earlier one needed retries."""
    now = rt.clock.now()
    earlier = aliased(WebhookDelivery)
    blocked = exists().where(
        earlier.webhook_id == WebhookDelivery.webhook_id,
        earlier.order_key == WebhookDelivery.order_key,
        earlier.seq < WebhookDelivery.seq,  # type: ignore[operator]
        earlier.status.in_(("pending", "sending")),  # type: ignore[attr-defined]
    )
    due = (
        select(WebhookDelivery.seq)
        .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now, ~blocked)
        .order_by(WebhookDelivery.seq)  # type: ignore[arg-type]
        .limit(limit)
    )
    if not rt.db.is_sqlite:
        due = due.with_for_update(skip_locked=True, of=WebhookDelivery)  # type: ignore[arg-type]
    stmt = (
        update(WebhookDelivery)
        .where(WebhookDelivery.seq.in_(due.scalar_subquery()))  # type: ignore[union-attr]
        .values(status="sending", lease_until=_lease(rt, now))
        .returning(
            WebhookDelivery.seq,
            WebhookDelivery.id,
            WebhookDelivery.webhook_id,
            WebhookDelivery.event,
            WebhookDelivery.body,
            WebhookDelivery.attempts_made,
        )
        .execution_options(synchronize_session=False)
    )
    async with rt.db.write() as session:
        rows = (await session.execute(stmt)).all()
    out = [ClaimedDelivery(r.seq, r.id, r.webhook_id, r.event, r.body, r.attempts_made) for r in rows]
    out.sort(key=lambda d: d.seq)
    return out
