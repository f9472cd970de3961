"""Submitting, listing and cancelling messages.

A submission is validated and composed completely before anything is written, then stored in one
transaction (shared with the submissions arriving alongside it, see `gql_mail.group_commit`), and only
then answered: an answered message is durable. Delivery never composes again.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, cast

from sqlalchemy import Text, func, insert, or_, select, update
from sqlalchemy import cast as sql_cast
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import QueryableAttribute, defer
from sqlmodel import col

from gql_mail.clock import utc
from gql_mail.ids import time_ordered_id
from gql_mail.mail.compose import Composed
from gql_mail.malloc_tuning import release_after
from gql_mail.models import AccountState, MessageStatus, OutboxMessage
from gql_mail.queue import OUTBOX
from gql_mail.runtime import Runtime
from gql_mail.services import cursors
from gql_mail.services import validation as v
from gql_mail.services.errors import AccountNotReady, BadInput, Conflict, NotFound
from gql_mail.services.submission import Sender, SubmitSpec, check_bounds, compose_message

QUEUED_RESPONSE = "Queued for delivery"
DRY_RUN_RESPONSE = "Dry run"


@dataclass(frozen=True)
class SubmitResult:
    response: str
    message_id: str
    send_at: datetime | None
    queue_id: str
    # True when an earlier submission with the same idempotency key answered and nothing new was queued.
    duplicate: bool = field(default=False)
    # When the message was first due: `send_at`, or the submission's time for one sent at once (EmailEngine
    # answers `sendAt` for both).
    due_at: datetime | None = None


@dataclass(frozen=True)
class PreviewResult:
    """A dry run's answer: EmailEngine's `{response: "Dry run", messageId, preview}`, and the envelope."""

    response: str
    message_id: str
    raw: bytes  # the RFC 822 message, CRLF, no Bcc header (its recipients are in envelope_to)
    envelope_from: str
    envelope_to: tuple[str, ...]

    @property
    def preview(self) -> str:
        """`raw` in base64, as EmailEngine's `preview`."""
        return base64.b64encode(self.raw).decode("ascii")


async def _sender(rt: Runtime, account_id: str) -> Sender | None:
    # One indexed row per submission: read without a session (see Database.lookup).
    row = await rt.db.lookup(
        "SELECT email, name, state, imap_disabled FROM account WHERE id = :account_id",
        {"account_id": account_id},
    )
    if row is None:
        return None
    email, name, state, imap_disabled = row
    return Sender(email=str(email), name=name, state=str(state), imap_disabled=bool(imap_disabled))


def _model_defaults() -> dict[str, Any]:
    """Every outbox_message column with the model's default (None where it has none)."""
    fields = OutboxMessage.model_fields
    return {
        name: fields[name].get_default(call_default_factory=True)
        if name in fields and not fields[name].is_required()
        else None
        for name in OUTBOX.c.keys()
    }


_OUTBOX_DEFAULTS = _model_defaults()


def _outbox_values(**given: Any) -> dict[str, Any]:
    """A new outbox_message row's every column, as the ORM would insert it: a Core insert of these skips
    building (and validating) an `OutboxMessage`, a large part of a submission's cost."""
    return {**_OUTBOX_DEFAULTS, **given}


# Reads answer with everything but the message's bytes: a listing of 40 queued 2 MB messages must not load
# 80 MB. `raiseload` makes an accidental access to `raw` an error instead of a silent second query.
WITHOUT_RAW = defer(cast("QueryableAttribute[bytes]", OutboxMessage.raw), raiseload=True)


def _result(row: OutboxMessage, *, duplicate: bool = False) -> SubmitResult:
    return SubmitResult(
        response=QUEUED_RESPONSE,
        message_id=row.message_id,
        send_at=utc(row.send_at) if row.send_at else None,
        queue_id=row.id,
        duplicate=duplicate,
        due_at=utc(row.send_at or row.created_at),
    )


async def _earlier_answer(rt: Runtime, session: Any, account_id: str, key: str) -> OutboxMessage | None:
    row: OutboxMessage | None = (
        await session.execute(
            select(OutboxMessage)
            .options(WITHOUT_RAW)
            .where(col(OutboxMessage.account_id) == account_id, col(OutboxMessage.idempotency_key) == key)
        )
    ).scalar_one_or_none()
    if row is None:
        return None
    if utc(row.created_at) < rt.clock.now() - timedelta(seconds=rt.settings.idempotency_window_seconds):
        return None
    return row


async def _insert_rows(rt: Runtime, rows: Sequence[dict[str, Any]]) -> None:
    async with rt.db.write() as session:
        await session.execute(insert(OUTBOX), list(rows))


async def _insert_keyed(rt: Runtime, row: dict[str, Any], account_id: str, key: str) -> OutboxMessage | None:
    """Insert a message with an idempotency key; the earlier message if the key's window still holds one."""
    try:
        async with rt.db.write() as session:
            earlier = await _earlier_answer(rt, session, account_id, key)
            if earlier is not None:
                return earlier
            # An expired key may be used again: release it from the old row.
            await session.execute(
                update(OutboxMessage)
                .where(col(OutboxMessage.account_id) == account_id, col(OutboxMessage.idempotency_key) == key)
                .values(idempotency_key=None)
            )
            await session.execute(insert(OUTBOX).values(row))
    except IntegrityError:
        # A concurrent submission with the same key won (PostgreSQL); answer with its result.
        async with rt.db.read() as session:
            earlier = await _earlier_answer(rt, session, account_id, key)
        if earlier is None:
            raise
        return earlier
    return None


async def _sender_and_key(rt: Runtime, account_id: str, spec: SubmitSpec) -> tuple[Sender, str | None]:
    """The account (NOT_FOUND if none) and the checked idempotency key: the checks before any lookup of
    an earlier answer."""
    account = await _sender(rt, account_id)
    if account is None:
        raise NotFound(f"no account {account_id!r}", field="account")
    key = None
    if spec.idempotency_key:
        key = v.no_control_chars(spec.idempotency_key, "idempotencyKey", max_length=256)
    return account, key


@dataclass(frozen=True)
class _Ready:
    """A submission that passed every check, composed."""

    composed: Composed
    attempts: int
    send_at: datetime | None
    sent_mail_path: str | None


async def _ready(rt: Runtime, account_id: str, account: Sender, spec: SubmitSpec, now: datetime) -> _Ready:
    """The checks of the account's state and the delivery fields, then the compose: what a submission
    and its dry run share."""
    if account.state != AccountState.CONNECTED:
        raise AccountNotReady(
            f"account {account_id!r} is {account.state}, not CONNECTED", field="account", state=account.state
        )

    attempts = spec.delivery_attempts if spec.delivery_attempts is not None else rt.settings.delivery_attempts
    if not 1 <= attempts <= 100:
        raise BadInput("deliveryAttempts must be between 1 and 100", field="deliveryAttempts")
    send_at = utc(spec.send_at) if spec.send_at else None
    if send_at and send_at < now - timedelta(seconds=rt.settings.send_at_tolerance_seconds):
        raise BadInput("sendAt is in the past", field="sendAt")

    sent_mail_path = (
        v.no_control_chars(spec.sent_mail_path, "sentMailPath", max_length=512)
        if spec.sent_mail_path
        else None
    )
    composed = await compose_message(rt.settings, account, spec, now)
    return _Ready(composed, attempts, send_at, sent_mail_path)


async def submit_message(rt: Runtime, account_id: str, spec: SubmitSpec) -> SubmitResult:
    """Validate, compose and durably queue one message."""
    check_bounds(rt.settings, spec)
    now = rt.clock.now()
    account, key = await _sender_and_key(rt, account_id, spec)
    if key:
        async with rt.db.read() as session:
            if earlier := await _earlier_answer(rt, session, account_id, key):
                return _result(earlier, duplicate=True)
    ready = await _ready(rt, account_id, account, spec, now)
    composed, send_at = ready.composed, ready.send_at

    row = _outbox_values(
        id=time_ordered_id(),
        account_id=account_id,
        message_id=composed.message_id,
        raw=composed.raw,
        envelope_from=composed.envelope_from,
        envelope_to=list(composed.envelope_to),
        status=MessageStatus.QUEUED,
        attempts=ready.attempts,
        copy_to_sent=(spec.copy if spec.copy is not None else True) and not account.imap_disabled,
        sent_mail_path=ready.sent_mail_path,
        subject=composed.subject,
        send_at=send_at,
        next_attempt_at=max(now, send_at) if send_at else now,
        idempotency_key=key,
        created_at=now,
        updated_at=now,
    )
    if key:
        earlier = await _insert_keyed(rt, row, account_id, key)
        if earlier is not None:
            return _result(earlier, duplicate=True)
    else:
        await rt.new_messages.write(row, partial(_insert_rows, rt))
    release_after(len(composed.raw))
    if row["next_attempt_at"] <= now:
        rt.wake.delivery()
    return SubmitResult(
        response=QUEUED_RESPONSE,
        message_id=row["message_id"],
        send_at=send_at,
        queue_id=row["id"],
        due_at=send_at or now,
    )


async def preview_message(rt: Runtime, account_id: str, spec: SubmitSpec) -> PreviewResult:
    """EmailEngine's `dryRun`: the message exactly as `submit_message` would queue it, and nothing written.

    The same checks in the same order, and the same errors, as a submission (an account not CONNECTED
    included); the idempotency key is checked but neither looked up nor recorded."""
    check_bounds(rt.settings, spec)
    now = rt.clock.now()
    account, _ = await _sender_and_key(rt, account_id, spec)
    composed = (await _ready(rt, account_id, account, spec, now)).composed
    return PreviewResult(
        response=DRY_RUN_RESPONSE,
        message_id=composed.message_id,
        raw=composed.raw,
        envelope_from=composed.envelope_from,
        envelope_to=composed.envelope_to,
    )


_KNOWN_STATUSES = frozenset(MessageStatus)


def _statuses(values: Sequence[str] | None) -> list[str] | None:
    """`outbox(status:)`: at most one of each status, each a known one."""
    if values is None:
        return None
    max_count = len(_KNOWN_STATUSES)
    return v.known_names(values, known=_KNOWN_STATUSES, field="status", max_count=max_count, what="status")


def _listed(account_id: str | None, statuses: Sequence[str] | None, since: datetime) -> list[Any]:
    """The one rule of what an outbox listing shows (GraphQL's `outbox` and REST's `GET /v1/outbox`):
    the given statuses, or else active messages and those finished since `since`."""
    conditions: list[Any] = []
    if account_id is not None:
        conditions.append(col(OutboxMessage.account_id) == account_id)
    if statuses:
        conditions.append(col(OutboxMessage.status).in_(statuses))
    else:
        conditions.append(
            or_(
                col(OutboxMessage.status).in_([MessageStatus.QUEUED, MessageStatus.SENDING]),
                col(OutboxMessage.updated_at) >= since,
            )
        )
    return conditions


async def list_outbox(
    rt: Runtime, account_id: str | None = None, *, statuses: Sequence[str] | None = None, limit: int = 1000
) -> Sequence[OutboxMessage]:
    """Active messages (queued, sending, scheduled) and finished ones of the last 24 hours, newest first."""
    conditions = _listed(account_id, _statuses(statuses), rt.clock.now() - timedelta(hours=24))
    query = (
        select(OutboxMessage)
        .options(WITHOUT_RAW)
        .where(*conditions)
        .order_by(col(OutboxMessage.id).desc())
        .limit(max(1, min(limit, 10_000)))
    )
    async with rt.db.read() as session:
        return (await session.execute(query)).scalars().all()


@dataclass(frozen=True)
class OutboxPage:
    messages: Sequence[OutboxMessage]
    total: int  # listed messages on all pages


async def page_outbox(rt: Runtime, *, page: int = 0, page_size: int = 20) -> OutboxPage:
    """One page (0-based) of what `list_outbox` shows for every account, newest first (EmailEngine's
    `GET /v1/outbox` is global too)."""
    v.check_page(page, page_size)
    conditions = _listed(None, None, rt.clock.now() - timedelta(hours=24))
    rows = (
        select(OutboxMessage)
        .options(WITHOUT_RAW)
        .where(*conditions)
        .order_by(col(OutboxMessage.id).desc())
        .offset(page * page_size)
        .limit(page_size)
    )
    count = select(func.count()).select_from(OutboxMessage).where(*conditions)
    async with rt.db.read() as session:
        total = int((await session.execute(count)).scalar_one())
        found = (await session.execute(rows)).scalars().all()
    return OutboxPage(messages=found, total=total)


@dataclass(frozen=True)
class OutboxFilter:
    """What `outboxConnection` narrows the listing to; every given condition must hold."""

    account_id: str | None = None
    statuses: Sequence[str] | None = None
    created_from: datetime | None = None  # inclusive
    created_to: datetime | None = None  # exclusive
    recipient: str | None = None  # one of the envelope's recipients, case-insensitive


_OUTBOX_CURSOR = "outbox"


def _filtered(rt: Runtime, f: OutboxFilter) -> list[Any]:
    """`_listed` (the one rule of what a listing shows), narrowed by the filter's other conditions."""
    conditions = _listed(f.account_id, _statuses(f.statuses), rt.clock.now() - timedelta(hours=24))
    if f.created_from is not None:
        conditions.append(col(OutboxMessage.created_at) >= utc(f.created_from))
    if f.created_to is not None:
        conditions.append(col(OutboxMessage.created_at) < utc(f.created_to))
    if f.recipient:
        address = v.no_control_chars(f.recipient, "recipient", max_length=998).lower()
        # envelope_to is a JSON list of addresses: a quoted element matches exactly one of them.
        envelope = func.lower(sql_cast(col(OutboxMessage.envelope_to), Text))
        conditions.append(envelope.contains(f'"{address}"', autoescape=True))
    return conditions


async def count_outbox(rt: Runtime, f: OutboxFilter) -> int:
    """How many messages the filter lists on all pages."""
    count = select(func.count()).select_from(OutboxMessage).where(*_filtered(rt, f))
    async with rt.db.read() as session:
        return int((await session.execute(count)).scalar_one())


async def outbox_after(
    rt: Runtime, f: OutboxFilter, *, first: int = cursors.DEFAULT_FIRST, after: str | None = None
) -> cursors.CursorPage[OutboxMessage]:
    """Up to `first` listed messages after the cursor `after`, newest first.

    Keyset paging on the time-ordered id (never OFFSET): each page is an index range, as cheap on the
    thousandth page as on the first, and a message submitted meanwhile never shifts a row onto two pages."""
    first = cursors.check_first(first)
    conditions = _filtered(rt, f)
    if after is not None:
        (last_id,) = cursors.decode(_OUTBOX_CURSOR, after, 1)
        conditions.append(col(OutboxMessage.id) < last_id)
    query = (
        select(OutboxMessage)
        .options(WITHOUT_RAW)
        .where(*conditions)
        .order_by(col(OutboxMessage.id).desc())
        .limit(first + 1)
    )
    async with rt.db.read() as session:
        rows = (await session.execute(query)).scalars().all()
    edges = [(cursors.encode(_OUTBOX_CURSOR, r.id), r) for r in rows[:first]]
    return cursors.CursorPage(edges=edges, has_next=len(rows) > first)


async def _require_message(session: Any, queue_id: str) -> OutboxMessage:
    row: OutboxMessage | None = await session.get(OutboxMessage, queue_id, options=[WITHOUT_RAW])
    if row is None:
        raise NotFound(f"no queued message {queue_id!r}", field="queueId")
    return row


async def get_message(rt: Runtime, queue_id: str) -> OutboxMessage:
    async with rt.db.read() as session:
        return await _require_message(session, queue_id)


async def cancel_message(rt: Runtime, queue_id: str) -> bool:
    """Take a message out of the queue. False when it is already being sent or has finished.

    One conditional update, not a read then a write: on PostgreSQL another node may claim the message
    between the two, and a cancel must never mark a message `cancelled` while it is being sent."""
    now = rt.clock.now()
    async with rt.db.write() as session:
        cancelled = await session.execute(
            update(OUTBOX)
            .where(OUTBOX.c.id == queue_id, OUTBOX.c.status == MessageStatus.QUEUED)
            # No longer due at its send time: a finished row is found by retention through (status,
            # next_attempt_at), and one due a year from now would otherwise outlive its retention by a year.
            .values(status=MessageStatus.CANCELLED, updated_at=now, next_attempt_at=now, raw=b"")
            .returning(OUTBOX.c.id)
        )
        if cancelled.first() is not None:
            return True
        if (await session.execute(select(OUTBOX.c.id).where(OUTBOX.c.id == queue_id))).first() is None:
            raise NotFound(f"no queued message {queue_id!r}", field="queueId")
    return False


async def retry_message(rt: Runtime, queue_id: str) -> OutboxMessage:
    """Queue a `failed` message again, due now, with a fresh attempt budget (its `attempts`, counted anew;
    its attempt rows stay, and the new run's attempts are numbered from 1 again). No event is emitted: the
    new attempts report their own outcomes as usual.

    One conditional UPDATE, not a read then a write: on PostgreSQL two nodes retrying the same message at
    once queue it once, and a message that is not `failed` is never touched. CONFLICT when the message is
    not failed, or when its body is no longer stored (a failure whose outcome could not be recorded, or
    one that stalled too often: those drop it, since the message may have been delivered)."""
    now = rt.clock.now()
    async with rt.db.write() as session:
        retried = await session.execute(
            update(OUTBOX)
            .where(
                OUTBOX.c.id == queue_id,
                OUTBOX.c.status == MessageStatus.FAILED,
                func.length(OUTBOX.c.raw) > 0,
            )
            .values(
                status=MessageStatus.QUEUED,
                attempts_made=0,
                stalled_count=0,
                claimed_by=None,
                next_attempt_at=now,
                updated_at=now,
            )
            .returning(OUTBOX.c.id)
        )
        if retried.first() is None:
            status = (
                await session.execute(select(OUTBOX.c.status).where(OUTBOX.c.id == queue_id))
            ).scalar_one_or_none()
            if status is None:
                raise NotFound(f"no queued message {queue_id!r}", field="queueId")
            if status != MessageStatus.FAILED:
                raise Conflict(f"message {queue_id!r} is {status}; only a failed message can be retried")
            raise Conflict(
                f"message {queue_id!r} can not be retried: its body is no longer stored; submit it again"
            )
        # Read in the same transaction: the answer is the message as retried, not as a worker woken
        # meanwhile may already have claimed it.
        row = await _require_message(session, queue_id)
    rt.wake.delivery()
    return row
