"""What a delivery attempt's outcome means: the new status, the retry time, and the events to report.

Many outcomes are recorded in one transaction (the worker batches them), each with its attempt row and
its events, so under load a commit costs a fraction of a message and an idle server still records at once.
The message updates of a batch go as a few executemany statements (one per shape of update), not one
statement per message: per-statement overhead (compile-cache lookup, a round trip to the database thread)
was the largest cost of delivering a message.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Update,
    bindparam,
    case,
    insert,
    literal_column,
    null,
    select,
    true,
    update,
)

from gql_mail.events import (
    MESSAGE_COPY_ERROR,
    MESSAGE_DELIVERY_ERROR,
    MESSAGE_FAILED,
    MESSAGE_SENT,
    Event,
    iso,
)
from gql_mail.mail.errors import MailError
from gql_mail.mail.smtp import SendResult
from gql_mail.models import CopyStatus, DeliveryAttempt, MessageStatus, table
from gql_mail.queue import (
    OUTBOX,
    STALLED_CODE,
    STALLED_ERROR,
    ClaimedCopy,
    ClaimedMessage,
    StalledMessage,
    held_copies,
    requeue_stalled,
    still,
)
from gql_mail.runtime import Runtime
from gql_mail.services import pacing
from gql_mail.services.delivery_report import report_failure, report_given_up, report_sent
from gql_mail.services.unit import ANY_ENABLED_WEBHOOK, UnitOfWork, unit_of_work

# The statements are built once: building a SQLAlchemy expression costs more than executing it (it was a
# third of recording a batch). Core inserts, too: an ORM entity's goes through the ORM's bulk path.
_STILL_OURS = select(OUTBOX.c.id, ANY_ENABLED_WEBHOOK.label("hooks")).where(
    OUTBOX.c.id.in_(bindparam("ids", expanding=True)),
    still(OUTBOX.c.status, MessageStatus.SENDING),
    OUTBOX.c.claimed_by == bindparam("me"),
)
# PostgreSQL: the rows checked are locked until the commit, so a cancel or a reclaim on another node cannot
# change them between the check and the update (SQLite's one write lock already serialises them).
_STILL_OURS_LOCKED = _STILL_OURS.with_for_update(of=OUTBOX)
_UPDATE_SENDING = update(OUTBOX).where(
    OUTBOX.c.id == bindparam("outbox_id"), OUTBOX.c.status == MessageStatus.SENDING
)
_ATTEMPTS = table(DeliveryAttempt)
_INSERT_ATTEMPTS = insert(_ATTEMPTS)
# A message every recipient accepted (nearly all of them) is recorded with the fewest values per row that can
# differ: its other columns are constants or copies of columns it has (`accepted` is its envelope, and its
# attempt row copies the message's). Each bound value costs a processor call per row; this path binds three.
_MARK_SENT = (
    update(OUTBOX)
    .where(OUTBOX.c.id == bindparam("outbox_id"), OUTBOX.c.status == MessageStatus.SENDING)
    .values(
        status=literal_column(f"'{MessageStatus.SENT.value}'"),
        sent_at=bindparam("now"),
        updated_at=bindparam("now"),
        response=bindparam("response"),
        accepted=OUTBOX.c.envelope_to,
        rejected=null(),
        claimed_by=null(),
        last_error_message=null(),
        last_error_code=null(),
        last_smtp_code=null(),
        raw=case((OUTBOX.c.copy_to_sent, OUTBOX.c.raw), else_=bindparam("no_raw", b"")),
        # The Sent copy becomes an obligation in the same statement as `sent`: a crash cannot lose it.
        copy_status=case(
            (OUTBOX.c.copy_to_sent, literal_column(f"'{CopyStatus.PENDING.value}'")), else_=null()
        ),
        copy_next_attempt_at=case(
            (OUTBOX.c.copy_to_sent, bindparam("now", type_=OUTBOX.c.copy_next_attempt_at.type)), else_=null()
        ),
    )
)
# The attempt row of a message every recipient accepted copies the message's columns; only its duration is
# bound (per row, matched by id).
_COPY_SENT_ATTEMPTS = insert(_ATTEMPTS).from_select(
    ["outbox_id", "attempt", "at", "ok", "response", "accepted", "duration_ms"],
    select(
        OUTBOX.c.id,
        OUTBOX.c.attempts_made,
        OUTBOX.c.sent_at,
        true(),
        OUTBOX.c.response,
        OUTBOX.c.accepted,
        bindparam("duration_ms", type_=_ATTEMPTS.c.duration_ms.type),
    ).where(OUTBOX.c.id == bindparam("outbox_id")),
)


# From this many outcomes a batch is recorded off the event loop (see `Database.write`).
BULK_OUTCOMES = 8


@dataclass(frozen=True)
class Outcome:
    message: ClaimedMessage
    result: SendResult | None = None
    error: MailError | None = None
    # The SMTP transaction's duration; None when the attempt never got a connection.
    duration_ms: int | None = None


def _envelope(m: ClaimedMessage) -> dict[str, Any]:
    return {"from": m.envelope_from, "to": list(m.envelope_to)}


async def record_outcomes(rt: Runtime, outcomes: Sequence[Outcome]) -> None:
    """Write each attempt and the message's new state, with its events, in one transaction."""
    if not outcomes:
        return
    now = rt.clock.now()
    sent: list[dict[str, Any]] = []
    sent_attempts: list[dict[str, Any]] = []
    attempt_rows: list[dict[str, Any]] = []
    # Updates grouped by the columns they set: each group is one executemany.
    updates: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    # Each recorded outcome, with a failure's retry time: logged and counted once the transaction commits.
    recorded: list[tuple[Outcome, datetime | None]] = []
    async with unit_of_work(rt, bulk=len(outcomes) >= BULK_OUTCOMES) as uow:
        # Only rows still ours: a message whose account was deleted (or that was reclaimed) meanwhile has
        # nothing to record, and its attempt row would break the whole batch's foreign keys.
        # The same query says whether any webhook is enabled, which spares staging its own when none is.
        still_ours = _STILL_OURS if rt.db.is_sqlite else _STILL_OURS_LOCKED
        ids = [o.message.id for o in outcomes]
        found = (await uow.session.execute(still_ours, {"ids": ids, "me": rt.worker_id})).all()
        ours = {r.id for r in found}
        if found and not any(r.hooks for r in found):
            uow.no_webhooks()
        # Throttling replies pause their accounts first: the messages that met them wait for the pause.
        paused: dict[str, datetime] = {}
        for outcome in outcomes:
            throttle = outcome.error.throttle if outcome.error is not None else None
            account = outcome.message.account_id
            if throttle is not None and outcome.message.id in ours and account not in paused:
                paused[account] = await pacing.pause(uow, rt, account, throttle, now)
        for outcome in outcomes:
            m = outcome.message
            if m.id not in ours:
                continue
            attempt = m.attempts_made  # counted when it was claimed
            if outcome.error is not None and outcome.error.throttle is not None:
                values, row = _record_throttled(uow, m, outcome.error, attempt, paused[m.account_id], now)
                recorded.append((outcome, values["next_attempt_at"]))
                values.update(claimed_by=None, updated_at=now, outbox_id=m.id)
                updates.setdefault(tuple(sorted(values)), []).append(values)
                row.update(outbox_id=m.id, attempt=attempt, at=now, duration_ms=outcome.duration_ms)
                attempt_rows.append(row)
                continue
            if outcome.result is not None and not outcome.result.rejected:
                sent.append({"outbox_id": m.id, "now": now, "response": outcome.result.response})
                sent_attempts.append({"outbox_id": m.id, "duration_ms": outcome.duration_ms})
                uow.emit(_sent_event(m, outcome.result, now, {}))
                recorded.append((outcome, None))
                continue
            values, row = _record_other(rt, uow, outcome, attempt, now)
            recorded.append((outcome, values.get("next_attempt_at")))
            values.update(claimed_by=None, updated_at=now, outbox_id=m.id)
            updates.setdefault(tuple(sorted(values)), []).append(values)
            row.update(outbox_id=m.id, attempt=attempt, at=now, duration_ms=outcome.duration_ms)
            attempt_rows.append(row)
        if sent:
            await uow.session.execute(_MARK_SENT, sent)
            await uow.session.execute(_COPY_SENT_ATTEMPTS, sent_attempts)
        for params in updates.values():
            await uow.session.execute(_UPDATE_SENDING, params)
        if attempt_rows:
            await uow.session.execute(_INSERT_ATTEMPTS, attempt_rows)
    for outcome, retry_at in recorded:
        if outcome.result is not None:
            report_sent(rt, outcome.message, outcome.result, now)
        else:
            report_failure(rt, outcome.message, _error(outcome), retry_at)


def _error(outcome: Outcome) -> MailError:
    return outcome.error or MailError("unknown delivery failure", code="EPROTOCOL")


# The texts `record_unrecordable` writes: constants, so nothing a peer said can make that write fail too.
_UNRECORDED_SENT = "the server accepted the message, but its answer could not be recorded"
_UNRECORDED_FAILED = "the delivery attempt failed, and its error could not be recorded"


async def record_unrecordable(rt: Runtime, outcome: Outcome, error: Exception) -> None:
    """End a message whose outcome could not be recorded, even alone: `failed`, error code INTERNAL.

    Without it the message stays `sending` for as long as this worker lives, and is then handed back as
    stalled and sent again. Every value written is a constant or the
    claim's own (ids, counters), so this write cannot fail for the reason the outcome's did; what the server
    said is lost, and the body is dropped. `failed` even when the server accepted the message: it is not
    sent again, and the error says it may well have arrived. Only a message still `sending` is touched, as
    in `record_outcomes`. The delivery worker's recorder calls this (`Batcher`'s `on_item_failed`)."""
    m = outcome.message
    now = rt.clock.now()
    attempt = m.attempts_made  # counted when it was claimed
    text = _UNRECORDED_SENT if outcome.result is not None else _UNRECORDED_FAILED
    text = f"{text} ({type(error).__name__})"
    async with unit_of_work(rt) as uow:
        ended = await uow.session.execute(
            _UPDATE_SENDING.where(OUTBOX.c.claimed_by == rt.worker_id)
            .values(
                status=MessageStatus.FAILED,
                claimed_by=None,
                updated_at=now,
                raw=b"",
                response=None,
                last_error_message=text,
                last_error_code="INTERNAL",
                last_smtp_code=None,
            )
            .returning(OUTBOX.c.id),
            {"outbox_id": m.id},
        )
        if ended.first() is None:
            return  # recorded after all, reclaimed, or its account deleted: not ours to end
        await uow.session.execute(
            _INSERT_ATTEMPTS,
            {
                "outbox_id": m.id,
                "attempt": attempt,
                "at": now,
                "ok": False,
                "error": text,
                "error_code": "INTERNAL",
            },
        )
        uow.emit(_failed_event(m, now, text, "INTERNAL"))
    report_given_up(rt, m, "INTERNAL", text)


def _sent_event(m: ClaimedMessage, result: SendResult, now: datetime, rejected: dict[str, Any]) -> Event:
    data: dict[str, Any] = {
        "messageId": m.message_id,
        "queueId": m.id,
        "response": result.response,
        "envelope": _envelope(m),
    }
    if rejected:
        data.update(accepted=list(result.accepted), rejected=rejected)
    return Event(MESSAGE_SENT, m.account_id, now, data, order_key=m.id)


def _delivery_error_event(
    m: ClaimedMessage,
    err: MailError,
    now: datetime,
    attempts_made: int,
    next_attempt: datetime | None,
    **extra: Any,
) -> Event:
    """`messageDeliveryError`, after every failed attempt (EmailEngine's payload; `extra` adds gql-mail's
    keys, such as `throttled`)."""
    data: dict[str, Any] = {
        "queueId": m.id,
        "envelope": _envelope(m),
        "messageId": m.message_id,
        "error": str(err),
        "errorCode": err.code,
        "smtpResponse": err.response,
        "smtpResponseCode": err.smtp_code,
        **extra,
        "job": {
            "attemptsMade": attempts_made,
            "attempts": m.attempts,
            "nextAttempt": iso(next_attempt) if next_attempt else None,
        },
    }
    return Event(MESSAGE_DELIVERY_ERROR, m.account_id, now, data, order_key=m.id)


def _record_throttled(
    uow: UnitOfWork, m: ClaimedMessage, err: MailError, attempt: int, until: datetime, now: datetime
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A reply that throttles the account (its pause is recorded by `pacing.pause`): the message is queued
    again for when the pause ends, with the attempt the claim counted given back. Its attempt row and its
    `messageDeliveryError` (after every failed attempt, as the contract says) still report what happened;
    the event's `job` shows the attempt not spent."""
    values: dict[str, Any] = {
        "status": MessageStatus.QUEUED,
        "next_attempt_at": until,
        "attempts_made": attempt - 1,
        "last_error_message": str(err),
        "last_error_code": err.code,
        "last_smtp_code": err.smtp_code,
        "response": err.response,
    }
    uow.emit(_delivery_error_event(m, err, now, attempt - 1, until, throttled=True))
    row = {
        "ok": False,
        "error": str(err),
        "error_code": err.code,
        "smtp_code": err.smtp_code,
        "response": err.response,
    }
    return values, row


def _record_other(
    rt: Runtime, uow: UnitOfWork, outcome: Outcome, attempt: int, now: datetime
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A failed attempt, or a message some recipients refused: the message's new values and its attempt
    row (without the columns every outcome sets), with its events emitted."""
    m = outcome.message
    if outcome.result is not None:
        r = outcome.result
        rejected = {k: {"code": c, "message": t} for k, (c, t) in r.rejected.items()}
        values: dict[str, Any] = {
            "status": MessageStatus.SENT,
            "sent_at": now,
            "response": r.response,
            "accepted": list(r.accepted),
            "rejected": rejected or None,
            "last_error_message": None,
            "last_error_code": None,
            "last_smtp_code": None,
        }
        if m.copy_to_sent:  # the body is kept until the Sent copy is done or given up
            values.update(copy_status=CopyStatus.PENDING, copy_next_attempt_at=now)
        else:
            values["raw"] = b""
        uow.emit(_sent_event(m, r, now, rejected))
        row = {"ok": True, "response": r.response, "accepted": list(r.accepted), "rejected": rejected or None}
        return values, row
    err = _error(outcome)
    retry_at = None
    if not err.permanent:
        retry_at = rt.delivery_retry.next_attempt(
            attempts_made=attempt, attempts=m.attempts, now=now, rng=rt.rng
        )
    values = {
        "last_error_message": str(err),
        "last_error_code": err.code,
        "last_smtp_code": err.smtp_code,
        "response": err.response,
    }
    if retry_at is None:
        # The body is kept (until retention prunes the message) so `retry_message` can send it again.
        values["status"] = MessageStatus.FAILED
    else:
        values.update(status=MessageStatus.QUEUED, next_attempt_at=retry_at)
    uow.emit(_delivery_error_event(m, err, now, attempt, retry_at))
    if retry_at is None:
        uow.emit(_failed_event(m, now, str(err), err.code, err.smtp_code))
    row = {
        "ok": False,
        "error": str(err),
        "error_code": err.code,
        "smtp_code": err.smtp_code,
        "response": err.response,
    }
    return values, row


async def record_copy(rt: Runtime, copy: ClaimedCopy, folder: str | None, error: MailError | None) -> None:
    """The outcome of one try at the Sent-folder copy of a sent message: done, due again later, or given up.

    A copy never makes a message be sent again, whatever happens to it. A transient failure (the IMAP server
    unreachable, a timeout) is retried with the delivery backoff until `sent_copy_attempts` tries are spent,
    silently: the message was sent, and only giving up is worth an event. A permanent one (no such folder,
    no Sent folder, login refused) gives up at once. Giving up emits `messageCopyError` once; the message's
    body is dropped when the copy is done or given up. Only a copy this worker still holds is recorded."""
    now = rt.clock.now()
    values: dict[str, Any] = {"claimed_by": None, "updated_at": now}
    retry_at = None
    if error is None:
        values.update(copy_status=CopyStatus.DONE, copied_to=folder, copy_error=None)
    else:
        if not error.permanent:
            retry_at = rt.delivery_retry.next_attempt(
                attempts_made=copy.copy_attempts, attempts=rt.settings.sent_copy_attempts, now=now, rng=rt.rng
            )
        values["copy_error"] = str(error)
        if retry_at is not None:
            values.update(copy_status=CopyStatus.PENDING, copy_next_attempt_at=retry_at)
        else:
            values["copy_status"] = CopyStatus.FAILED
    if values["copy_status"] != CopyStatus.PENDING:
        values.update(raw=b"", copy_next_attempt_at=None)
    async with unit_of_work(rt) as uow:
        held = await uow.session.execute(_update_held_copy(rt, copy).values(**values).returning(OUTBOX.c.id))
        if error is not None and retry_at is None and held.first() is not None:
            uow.emit(
                Event(
                    MESSAGE_COPY_ERROR,
                    copy.account_id,
                    now,
                    {
                        "messageId": copy.message_id,
                        "queueId": copy.id,
                        "error": str(error),
                        "errorCode": error.code,
                    },
                    order_key=copy.id,
                )
            )


async def recover_stalled(rt: Runtime, lost: Collection[str] | None = None) -> int:
    """Hand back what dead workers held (the scheduler's `requeue_stalled` job), or with `lost`, this
    worker's own claims it can no longer account for. A message that stalled too often or has no attempt
    left fails with `messageFailed` (errorCode ESTALLED) instead of going out again. Returns how many rows
    came back to the queue."""
    async with unit_of_work(rt) as uow:
        messages, others = await requeue_stalled(uow.session, rt, lost)
        now = rt.clock.now()
        for m in messages:
            if m.status == MessageStatus.FAILED:
                uow.emit(_failed_event(m, now, STALLED_ERROR, STALLED_CODE))
    for m in messages:
        failed = m.status == MessageStatus.FAILED
        reason = STALLED_ERROR if failed else "its worker stopped while sending it; it goes out again"
        report_given_up(rt, m, STALLED_CODE, reason, retried=not failed)
    requeued = others + sum(1 for m in messages if m.status == MessageStatus.QUEUED)
    if requeued:
        rt.wake.delivery()
        rt.wake.webhooks()
    return requeued


def _failed_event(
    m: ClaimedMessage | StalledMessage, now: datetime, error: str, code: str, smtp_code: int | None = None
) -> Event:
    """`messageFailed`: the message was given up (attempts spent, a permanent error, stalled too often, or
    an outcome that could not be recorded)."""
    data = {
        "messageId": m.message_id,
        "queueId": m.id,
        "error": error,
        "errorCode": code,
        "smtpResponseCode": smtp_code,
    }
    return Event(MESSAGE_FAILED, m.account_id, now, data, order_key=m.id)


async def abandon_copy(rt: Runtime, copy: ClaimedCopy, reason: str) -> None:
    """End a copy that cannot be made because its account has no IMAP any more (turned off after the message
    was sent): `failed` with the reason, the body dropped, and no event -- nothing went wrong that the user
    did not choose, and EmailEngine makes no copy without IMAP either."""
    now = rt.clock.now()
    async with rt.db.write() as session:
        await session.execute(
            _update_held_copy(rt, copy).values(
                copy_status=CopyStatus.FAILED,
                copy_error=reason,
                copy_next_attempt_at=None,
                raw=b"",
                claimed_by=None,
                updated_at=now,
            )
        )


def _update_held_copy(rt: Runtime, copy: ClaimedCopy) -> Update:
    return update(OUTBOX).where(held_copies(rt, [copy.id])).execution_options(synchronize_session=False)
