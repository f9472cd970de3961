"""Retention: what has finished is deleted once `retention_days` have passed, so no table grows forever.

Pruned, each once it is older than the cutoff (now − retention):
- outbox messages that are `sent`, `failed` or `cancelled`, with their delivery attempts (the foreign key
  cascades, on SQLite too: `db.py` turns foreign keys on for every connection), except a sent message
  whose copy to the Sent folder is still owed (`copy_status` pending or copying): the copy needs its bytes;
- webhook deliveries that were `delivered` or `failed` for good;
- event payloads the PostgreSQL relay stored (it deletes them itself after minutes; this is the backstop
  for a relay that stopped before cleaning up).
Everything queued, being sent or still to be dispatched stays, however old.

Deleting runs in batches of `BATCH_SIZE` rows, each its own short write transaction, because on SQLite a
write holds the database's one write lock: a large delete would stop every submission and every delivery
outcome behind it. Each batch finds its rows through an index range (`ix_outbox_due`, the webhook
deliveries' `ix_webhook_delivery_due`, `event_payload.created_at`) and stops at `BATCH_SIZE`, so a run
never scans a whole table. A finished row's `next_attempt_at` is never later than the moment it finished
(it was due when it was last claimed; `cancel_message` sets it to the moment of cancelling), so
`status = s AND next_attempt_at < cutoff` is exactly the index range that can hold prunable rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Delete, bindparam, delete, or_, select

from gql_mail.models import (
    TERMINAL_STATUSES,
    CopyStatus,
    EventPayload,
    OutboxMessage,
    WebhookDelivery,
    table,
)
from gql_mail.runtime import Runtime

# Rows per write transaction: a few milliseconds of SQLite's write lock, attempts included.
BATCH_SIZE = 250

OUTBOX = table(OutboxMessage)
DELIVERY = table(WebhookDelivery)
PAYLOAD = table(EventPayload)

FINISHED_MESSAGE_STATUSES = tuple(sorted(TERMINAL_STATUSES))
FINISHED_DELIVERY_STATUSES = ("delivered", "failed")
# A Sent-folder copy still to be made needs the message's row (its bytes, its attempts to copy).
COPY_OWED = (CopyStatus.PENDING, CopyStatus.COPYING)


@dataclass(frozen=True)
class PruneCounts:
    """Rows deleted by one run (a message's attempts go with it and are not counted)."""

    messages: int = 0
    webhook_deliveries: int = 0
    event_payloads: int = 0

    @property
    def total(self) -> int:
        return self.messages + self.webhook_deliveries + self.event_payloads


def _old_messages(*, skip_locked: bool) -> Delete:
    old = (
        select(OUTBOX.c.id)
        .where(
            OUTBOX.c.status == bindparam("status"),
            OUTBOX.c.next_attempt_at < bindparam("cutoff"),
            OUTBOX.c.updated_at < bindparam("cutoff"),
            or_(OUTBOX.c.copy_status.is_(None), OUTBOX.c.copy_status.not_in(COPY_OWED)),
        )
        .limit(bindparam("limit"))
    )
    if skip_locked:  # PostgreSQL: another node pruning (or a worker updating a row) is not waited for
        old = old.with_for_update(skip_locked=True)
    return (
        delete(OUTBOX)
        .where(OUTBOX.c.id.in_(old.scalar_subquery()))
        .execution_options(synchronize_session=False)
    )


def _old_deliveries(*, skip_locked: bool) -> Delete:
    old = (
        select(DELIVERY.c.seq)
        .where(
            DELIVERY.c.status == bindparam("status"),
            DELIVERY.c.next_attempt_at < bindparam("cutoff"),
            # A failed delivery has no finishing time of its own: its last due time stands for it.
            or_(DELIVERY.c.delivered_at.is_(None), DELIVERY.c.delivered_at < bindparam("cutoff")),
        )
        .limit(bindparam("limit"))
    )
    if skip_locked:
        old = old.with_for_update(skip_locked=True)
    return (
        delete(DELIVERY)
        .where(DELIVERY.c.seq.in_(old.scalar_subquery()))
        .execution_options(synchronize_session=False)
    )


def _old_payloads(*, skip_locked: bool) -> Delete:
    old = select(PAYLOAD.c.id).where(PAYLOAD.c.created_at < bindparam("cutoff")).limit(bindparam("limit"))
    if skip_locked:
        old = old.with_for_update(skip_locked=True)
    return (
        delete(PAYLOAD)
        .where(PAYLOAD.c.id.in_(old.scalar_subquery()))
        .execution_options(synchronize_session=False)
    )


# Built once, like the queue's statements; index [True] is PostgreSQL's (SKIP LOCKED), [False] SQLite's.
_DELETE_MESSAGES = {locked: _old_messages(skip_locked=locked) for locked in (False, True)}
_DELETE_DELIVERIES = {locked: _old_deliveries(skip_locked=locked) for locked in (False, True)}
_DELETE_PAYLOADS = {locked: _old_payloads(skip_locked=locked) for locked in (False, True)}


async def _delete_in_batches(rt: Runtime, statement: Delete, params: dict[str, Any], batch_size: int) -> int:
    """Run `statement` one batch per transaction until a batch comes back short; the rows deleted."""
    deleted = 0
    while True:
        # bulk: SQLite deletes on its own thread, so the event loop keeps serving meanwhile.
        async with rt.db.write(bulk=True) as session:
            result = await session.execute(statement, {**params, "limit": batch_size})
        count = int(cast(CursorResult[Any], result).rowcount or 0)
        deleted += count
        if count < batch_size:
            return deleted


def cutoff(rt: Runtime) -> datetime:
    """Rows that finished before this moment are pruned."""
    return rt.clock.now() - timedelta(days=rt.settings.retention_days)


async def prune(rt: Runtime, *, batch_size: int = BATCH_SIZE) -> PruneCounts:
    """Delete what finished before the retention cutoff (see the module docstring); the counts deleted.

    Safe to run on several nodes at once (PostgreSQL: each batch skips the rows another one holds) and
    to interrupt: every batch commits on its own, and the next run goes on from there."""
    locked = not rt.db.is_sqlite
    params: dict[str, Any] = {"cutoff": cutoff(rt)}
    messages = 0
    for status in FINISHED_MESSAGE_STATUSES:
        messages += await _delete_in_batches(
            rt, _DELETE_MESSAGES[locked], {**params, "status": status}, batch_size
        )
    deliveries = 0
    for delivery_status in FINISHED_DELIVERY_STATUSES:
        deliveries += await _delete_in_batches(
            rt, _DELETE_DELIVERIES[locked], {**params, "status": delivery_status}, batch_size
        )
    payloads = await _delete_in_batches(rt, _DELETE_PAYLOADS[locked], params, batch_size)
    return PruneCounts(messages=messages, webhook_deliveries=deliveries, event_payloads=payloads)
