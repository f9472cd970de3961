"""The outbox handlers: EmailEngine's outbox routes onto services/outbox.py, and gql-mail's message as
EmailEngine's outbox entry (lib/outbox.js) as far as gql-mail keeps the data."""

from __future__ import annotations

import math

from gql_mail import models
from gql_mail.clock import utc
from gql_mail.events import iso
from gql_mail.models import MessageStatus
from gql_mail.rest import answers
from gql_mail.rest.endpoint import Call
from gql_mail.rest.models import NoQuery, PageQuery
from gql_mail.services import outbox

# gql-mail's message status as EmailEngine's `progress.status`; a cancelled message has none in
# EmailEngine (its job is removed), so it keeps gql-mail's word.
PROGRESS: dict[str, answers.OutboxStatus] = {
    MessageStatus.QUEUED: "queued",
    MessageStatus.SENDING: "processing",
    MessageStatus.SENT: "submitted",
    MessageStatus.FAILED: "error",
    MessageStatus.CANCELLED: "cancelled",
}


def _progress(row: models.OutboxMessage) -> answers.OutboxProgress:
    progress = answers.OutboxProgress(status=PROGRESS[row.status])
    if row.response:
        progress.response = row.response
    if row.status == MessageStatus.SENT:
        progress.message_id = row.message_id
    if row.last_error_message:
        progress.error = answers.OutboxError(message=row.last_error_message, code=row.last_error_code)
        if row.last_smtp_code is not None:
            progress.error.status_code = row.last_smtp_code
    return progress


def outbox_entry(row: models.OutboxMessage) -> answers.OutboxEntry:
    """EmailEngine's OutboxEntry: the job's data, `scheduled`, `nextAttempt`, attempts and `progress`."""
    active = row.status in models.ACTIVE_STATUSES
    created = utc(row.created_at)
    return answers.OutboxEntry(
        queue_id=row.id,
        account=row.account_id,
        source="api",
        message_id=row.message_id,
        envelope=answers.OutboxEnvelope(from_=row.envelope_from, to=list(row.envelope_to)),
        subject=row.subject,
        idempotency_key=row.idempotency_key,
        created=iso(created),
        scheduled=iso(utc(row.send_at) if row.send_at else created),
        next_attempt=iso(utc(row.next_attempt_at)) if active else False,
        attempts_made=row.attempts_made,
        attempts=row.attempts,
        progress=_progress(row),
    )


async def list_outbox(call: Call[None, PageQuery]) -> answers.OutboxList:
    query = call.query
    found = await outbox.page_outbox(call.runtime, page=query.page, page_size=query.page_size)
    return answers.OutboxList(
        total=found.total,
        page=query.page,
        pages=math.ceil(found.total / query.page_size),
        messages=[outbox_entry(row) for row in found.messages],
    )


async def get_outbox_entry(call: Call[None, NoQuery]) -> answers.OutboxEntry:
    return outbox_entry(await outbox.get_message(call.runtime, call.path["queueId"]))


async def delete_outbox_entry(call: Call[None, NoQuery]) -> answers.OutboxDeleted:
    """`{"deleted": true}` when the message was taken out of the queue; false when it was already being
    sent or had finished. An unknown queueId is a 404 (EmailEngine answers `{"deleted": false}`)."""
    return answers.OutboxDeleted(deleted=await outbox.cancel_message(call.runtime, call.path["queueId"]))
