"""Every query that claims or releases work, in one place.

A claim is one statement: `UPDATE … WHERE id IN (SELECT … LIMIT n) RETURNING …`. SQLite runs it under its
single writer lock; PostgreSQL adds `FOR UPDATE SKIP LOCKED` to the inner select, so workers in many
processes never take the same row. Both read the due rows through the (status, next_attempt_at) index and
never scan the queue. A crashed worker's rows come back when their lease expires.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple, cast

from sqlalchemy import ColumnElement, CursorResult, Result, and_, bindparam, exists, select, update

from gql_mail.models import (
    Account,
    AccountState,
    CopyStatus,
    MessageStatus,
    OutboxMessage,
    WebhookDelivery,
    table,
)
from gql_mail.runtime import Runtime

OUTBOX = table(OutboxMessage)
ACCOUNT = table(Account)
DELIVERY = table(WebhookDelivery)


class ClaimedMessage(NamedTuple):
    """A tuple, not a dataclass: a claim makes hundreds of them per second, straight from its rows."""

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


def still(status_column: ColumnElement[str], status: str) -> ColumnElement[bool]:
    """`status_column = status`, for a statement that also picks rows by primary key (`id IN (…)`).

    Written as `status || '' = …` so that SQLite's planner, which has no statistics, cannot use the
    (status, …) index for it: given both, it chose that index and read every row in the status to find
    the few named ids (2 ms for 5 ids among 3,000 messages being sent, per batch of outcomes). PostgreSQL
    plans by its statistics and finds the ids by primary key either way."""
    return (status_column + "") == status


def _rowcount(result: Result[Any]) -> int:
    return int(cast(CursorResult[Any], result).rowcount or 0)


def _lease(rt: Runtime, now: datetime) -> datetime:
    return now + timedelta(seconds=rt.settings.lease_seconds)


def _claim_statement(*, skip_locked: bool) -> Any:
    due = (
        select(OUTBOX.c.id)
        .join(ACCOUNT, ACCOUNT.c.id == OUTBOX.c.account_id)
        .where(
            OUTBOX.c.status == MessageStatus.QUEUED,
            OUTBOX.c.next_attempt_at <= bindparam("now"),
            ACCOUNT.c.state == AccountState.CONNECTED,
        )
        .order_by(OUTBOX.c.next_attempt_at)
        .limit(bindparam("limit"))
    )
    if skip_locked:
        due = due.with_for_update(skip_locked=True, of=OUTBOX)
    return (
        update(OUTBOX)
        .where(OUTBOX.c.id.in_(due.scalar_subquery()))
        .values(
            status=MessageStatus.SENDING, lease_until=bindparam("lease_until"), updated_at=bindparam("now")
        )
        # In ClaimedMessage's field order.
        .returning(
            OUTBOX.c.id,
            OUTBOX.c.account_id,
            OUTBOX.c.message_id,
            OUTBOX.c.envelope_from,
            OUTBOX.c.envelope_to,
            OUTBOX.c.raw,
            OUTBOX.c.attempts_made,
            OUTBOX.c.attempts,
            OUTBOX.c.copy_to_sent,
        )
        .execution_options(synchronize_session=False)
    )


# Built once: building it cost more than a small claim's SQL.
_CLAIM_SQLITE = _claim_statement(skip_locked=False)
_CLAIM_SKIP_LOCKED = _claim_statement(skip_locked=True)  # PostgreSQL: workers in other processes claim too


async def claim_messages(rt: Runtime, limit: int, *, bulk: bool = False) -> list[ClaimedMessage]:
    """Due, queued messages of CONNECTED accounts, oldest due first, now leased to this worker.
    `bulk`: many rows are expected (see `Database.write`)."""
    now = rt.clock.now()
    params = {"now": now, "limit": limit, "lease_until": _lease(rt, now)}
    async with rt.db.write(bulk=bulk) as session:
        rows = (await session.execute(_CLAIM_SQLITE if rt.db.is_sqlite else _CLAIM_SKIP_LOCKED, params)).all()
    claimed = [ClaimedMessage(r[0], r[1], r[2], r[3], tuple(r[4]), *r[5:]) for r in rows]
    claimed.sort(key=lambda m: m.id)
    return claimed


async def release_messages(rt: Runtime, ids: list[str]) -> None:
    """Give claimed messages back untried (their account stopped being usable); no attempt is counted."""
    if not ids:
        return
    async with rt.db.write() as session:
        await session.execute(
            update(OUTBOX)
            .where(OUTBOX.c.id.in_(ids), still(OUTBOX.c.status, MessageStatus.SENDING))
            .values(status=MessageStatus.QUEUED, lease_until=None)
            .execution_options(synchronize_session=False)
        )


async def renew_message_leases(rt: Runtime, ids: list[str]) -> None:
    """Extend the leases of messages a live worker still holds (claimed, not yet recorded)."""
    now = rt.clock.now()
    async with rt.db.write() as session:
        await session.execute(
            update(OUTBOX)
            .where(OUTBOX.c.id.in_(ids), still(OUTBOX.c.status, MessageStatus.SENDING))
            .values(lease_until=_lease(rt, now))
            .execution_options(synchronize_session=False)
        )


async def reclaim_expired_leases(rt: Runtime) -> int:
    """Rows whose worker died mid-flight go back to the queue (at-least-once delivery)."""
    now = rt.clock.now()
    async with rt.db.write() as session:
        messages = await session.execute(
            update(OUTBOX)
            .where(OUTBOX.c.status == MessageStatus.SENDING, OUTBOX.c.lease_until < now)
            .values(status=MessageStatus.QUEUED, lease_until=None)
            .execution_options(synchronize_session=False)
        )
        deliveries = await session.execute(
            update(DELIVERY)
            .where(DELIVERY.c.status == "sending", DELIVERY.c.lease_until < now)
            .values(status="pending", lease_until=None)
            .execution_options(synchronize_session=False)
        )
    return _rowcount(messages) + _rowcount(deliveries)


async def claim_webhook_deliveries(rt: Runtime, limit: int) -> list[ClaimedDelivery]:
    """Due deliveries that are first in line for their (webhook, order key): a receiver sees each
    message's events in order, even when an earlier one needed retries."""
    now = rt.clock.now()
    earlier = DELIVERY.alias("earlier")
    blocked = exists().where(
        earlier.c.webhook_id == DELIVERY.c.webhook_id,
        earlier.c.order_key == DELIVERY.c.order_key,
        earlier.c.seq < DELIVERY.c.seq,
        earlier.c.status.in_(("pending", "sending")),
    )
    due = (
        select(DELIVERY.c.seq)
        .where(DELIVERY.c.status == "pending", DELIVERY.c.next_attempt_at <= now, ~blocked)
        .order_by(DELIVERY.c.seq)
        .limit(limit)
    )
    if not rt.db.is_sqlite:
        due = due.with_for_update(skip_locked=True, of=DELIVERY)
    stmt = (
        update(DELIVERY)
        .where(DELIVERY.c.seq.in_(due.scalar_subquery()))
        .values(status="sending", lease_until=_lease(rt, now))
        .returning(
            DELIVERY.c.seq,
            DELIVERY.c.id,
            DELIVERY.c.webhook_id,
            DELIVERY.c.event,
            DELIVERY.c.body,
            DELIVERY.c.attempts_made,
        )
        .execution_options(synchronize_session=False)
    )
    async with rt.db.write() as session:
        rows = (await session.execute(stmt)).all()
    out = [ClaimedDelivery(r.seq, r.id, r.webhook_id, r.event, r.body, r.attempts_made) for r in rows]
    out.sort(key=lambda d: d.seq)
    return out


# -- Sent-folder copies ------------------------------------------------------------------------------------
# A sent message that asked for a Sent copy is recorded with copy_status 'pending' in the transaction that
# records `sent`; the copier claims it here ('copying', claimed_by this worker), like a message. The claim
# counts the attempt (a claim is an attempt), so copies cut off by crashes still spend their budget.


class ClaimedCopy(NamedTuple):
    id: str
    account_id: str
    message_id: str
    raw: bytes
    copy_attempts: int  # including this one


def _claim_copies_statement(*, skip_locked: bool) -> Any:
    due = (
        select(OUTBOX.c.id)
        .where(OUTBOX.c.copy_status == CopyStatus.PENDING, OUTBOX.c.copy_next_attempt_at <= bindparam("now"))
        .order_by(OUTBOX.c.copy_next_attempt_at)
        .limit(bindparam("limit"))
    )
    if skip_locked:
        due = due.with_for_update(skip_locked=True, of=OUTBOX)
    return (
        update(OUTBOX)
        .where(OUTBOX.c.id.in_(due.scalar_subquery()))
        .values(
            copy_status=CopyStatus.COPYING,
            claimed_by=bindparam("worker"),
            copy_attempts=OUTBOX.c.copy_attempts + 1,
        )
        # In ClaimedCopy's field order.
        .returning(
            OUTBOX.c.id, OUTBOX.c.account_id, OUTBOX.c.message_id, OUTBOX.c.raw, OUTBOX.c.copy_attempts
        )
        .execution_options(synchronize_session=False)
    )


_CLAIM_COPIES_SQLITE = _claim_copies_statement(skip_locked=False)
_CLAIM_COPIES_SKIP_LOCKED = _claim_copies_statement(skip_locked=True)


async def claim_copies(rt: Runtime, limit: int) -> list[ClaimedCopy]:
    """Due Sent-folder copies, oldest due first, now held by this worker with one more attempt counted."""
    params = {"now": rt.clock.now(), "limit": limit, "worker": rt.worker_id}
    statement = _CLAIM_COPIES_SQLITE if rt.db.is_sqlite else _CLAIM_COPIES_SKIP_LOCKED
    async with rt.db.write() as session:
        rows = (await session.execute(statement, params)).all()
    return sorted((ClaimedCopy(*r) for r in rows), key=lambda c: c.id)


def held_copies(rt: Runtime, ids: list[str]) -> ColumnElement[bool]:
    """These copies, if this worker still holds them: a copy whose worker was taken for dead and which was
    claimed again belongs to its new holder, and nothing the old one does may change it."""
    return and_(
        OUTBOX.c.id.in_(ids),
        still(OUTBOX.c.copy_status, CopyStatus.COPYING),
        OUTBOX.c.claimed_by == rt.worker_id,
    )


async def release_copies(rt: Runtime, ids: list[str], *, tried: bool = False) -> None:
    """Give held copies back, due at once (a graceful stop). An untried copy gets its attempt back; a tried
    one (cut off mid-APPEND) keeps it, and may end up in the Sent folder twice -- never sent twice."""
    if not ids:
        return
    attempts = OUTBOX.c.copy_attempts if tried else OUTBOX.c.copy_attempts - 1
    async with rt.db.write() as session:
        await session.execute(
            update(OUTBOX)
            .where(held_copies(rt, ids))
            .values(copy_status=CopyStatus.PENDING, claimed_by=None, copy_attempts=attempts)
            .execution_options(synchronize_session=False)
        )
