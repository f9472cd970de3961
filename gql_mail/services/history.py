"""A message's history: its delivery attempts, the events it caused, and the webhook POSTs of those events.

Each reader takes many queue ids and answers with one query, so a listing of messages that asks for their
history costs one query per field, not one per message (the GraphQL layer batches them with DataLoaders).
Nothing here reads a message's body.

Events are not stored per message (the bus publishes them; only webhook deliveries are durable rows, and
only when a webhook matched), so `derive_events` rebuilds them from what is stored: each attempt row is the
`messageDeliveryError` or `messageSent` recorded with it (same transaction, same time), the last failed
attempt of a run that ended the message is also its `messageFailed`, and a Sent-folder copy given up is
`messageCopyError`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from gql_mail.clock import utc
from gql_mail.events import MESSAGE_COPY_ERROR, MESSAGE_DELIVERY_ERROR, MESSAGE_FAILED, MESSAGE_SENT
from gql_mail.models import CopyStatus, DeliveryAttempt, MessageStatus, OutboxMessage, WebhookDelivery, table
from gql_mail.runtime import Runtime

MESSAGE_EVENTS = (MESSAGE_SENT, MESSAGE_DELIVERY_ERROR, MESSAGE_FAILED, MESSAGE_COPY_ERROR)

_ATTEMPTS = table(DeliveryAttempt)
_DELIVERIES = table(WebhookDelivery)
_REPLY_CODE = re.compile(r"^([2-5]\d\d)[ -]")


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt as recorded with its outcome."""

    queue_id: str
    attempt: int
    attempted_at: datetime
    duration_ms: int | None
    ok: bool
    error: str | None
    error_code: str | None
    smtp_code: int | None
    response: str | None

    @property
    def result(self) -> str:
        return "sent" if self.ok else "failed"


@dataclass(frozen=True)
class MessageEvent:
    event: str
    date: datetime


@dataclass(frozen=True)
class Delivery:
    """One webhook POST of one of a message's events (its body is not read)."""

    queue_id: str
    id: str
    webhook_id: str
    event: str
    status: str
    attempts: int
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


def _reply_code(response: str | None) -> int | None:
    """The reply code of a stored SMTP answer ("250 2.0.0 Ok"): a successful attempt stores only the text."""
    match = _REPLY_CODE.match(response or "")
    return int(match.group(1)) if match else None


async def attempts_of(rt: Runtime, queue_ids: Sequence[str]) -> dict[str, list[Attempt]]:
    """Every recorded attempt of each message, oldest first (one query for all of them)."""
    found: dict[str, list[Attempt]] = {q: [] for q in queue_ids}
    if not queue_ids:
        return found
    a = _ATTEMPTS.c
    query = (
        select(a.outbox_id, a.attempt, a.at, a.duration_ms, a.ok, a.error, a.error_code, a.smtp_code)
        .add_columns(a.response)
        .where(a.outbox_id.in_(set(queue_ids)))
        .order_by(a.outbox_id, a.at, a.id)
    )
    async with rt.db.read() as session:
        rows = (await session.execute(query)).all()
    for r in rows:
        found[r.outbox_id].append(
            Attempt(
                queue_id=r.outbox_id,
                attempt=r.attempt,
                attempted_at=utc(r.at),
                duration_ms=r.duration_ms,
                ok=r.ok,
                error=r.error,
                error_code=r.error_code,
                smtp_code=r.smtp_code if r.smtp_code is not None else _reply_code(r.response),
                response=r.response,
            )
        )
    return found


def derive_events(message: OutboxMessage, attempts: Sequence[Attempt]) -> list[MessageEvent]:
    """The message's events, oldest first, rebuilt from its attempts and its state (see the module's
    docstring). A run of attempts ends where a later attempt starts again at 1 (`retryMessage`) or at the
    last attempt; a failed attempt that ends a run before a retry, or the last one of a failed message,
    was also reported as `messageFailed`."""
    events: list[MessageEvent] = []
    for i, attempt in enumerate(attempts):
        if attempt.ok:
            events.append(MessageEvent(MESSAGE_SENT, attempt.attempted_at))
            continue
        events.append(MessageEvent(MESSAGE_DELIVERY_ERROR, attempt.attempted_at))
        later = attempts[i + 1] if i + 1 < len(attempts) else None
        if later is not None and later.attempt <= attempt.attempt:
            events.append(MessageEvent(MESSAGE_FAILED, attempt.attempted_at))
    if message.status == MessageStatus.FAILED:
        # Given up at its last failed attempt, or without one (stalled too often: no attempt row).
        last = attempts[-1] if attempts else None
        if last is not None and not last.ok:
            events.append(MessageEvent(MESSAGE_FAILED, last.attempted_at))
        else:
            events.append(MessageEvent(MESSAGE_FAILED, utc(message.updated_at)))
    if message.copy_status == CopyStatus.FAILED and message.copy_error:
        events.append(MessageEvent(MESSAGE_COPY_ERROR, utc(message.updated_at)))
    return events


async def deliveries_of(rt: Runtime, queue_ids: Sequence[str]) -> dict[str, list[Delivery]]:
    """The webhook deliveries of each message's events, oldest first (one query for all of them)."""
    found: dict[str, list[Delivery]] = {q: [] for q in queue_ids}
    if not queue_ids:
        return found
    w = _DELIVERIES.c
    query = (
        select(w.order_key, w.id, w.webhook_id, w.event, w.status, w.attempts_made, w.last_error)
        .add_columns(w.created_at, w.delivered_at)
        .where(w.order_key.in_(set(queue_ids)), w.event.in_(MESSAGE_EVENTS))
        .order_by(w.order_key, w.seq)
    )
    async with rt.db.read() as session:
        rows = (await session.execute(query)).all()
    for r in rows:
        found[r.order_key].append(
            Delivery(
                queue_id=r.order_key,
                id=r.id,
                webhook_id=r.webhook_id,
                event=r.event,
                status=r.status,
                attempts=r.attempts_made,
                last_error=r.last_error,
                created_at=utc(r.created_at),
                delivered_at=utc(r.delivered_at) if r.delivered_at else None,
            )
        )
    return found
