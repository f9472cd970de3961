"""The submit handler: `POST /v1/account/{account}/submit` onto services/outbox.py."""

from __future__ import annotations

from gql_mail.events import iso
from gql_mail.rest import answers
from gql_mail.rest.endpoint import Call
from gql_mail.rest.models import NoQuery, SubmitMessage
from gql_mail.services import outbox

IDEMPOTENCY_HEADER = "idempotency-key"


async def submit_message(call: Call[SubmitMessage, NoQuery]) -> answers.Queued | answers.DryRun:
    """EmailEngine's answer: `{response, messageId, sendAt, queueId}`, plus `idempotency {key, status}`
    when the request carried an `Idempotency-Key` (status HIT: an earlier submission's answer, replayed).
    With `dryRun: true`, `{response: "Dry run", messageId, preview}` and nothing queued."""
    key = call.request.headers.get(IDEMPOTENCY_HEADER)
    spec = call.body.to_spec(key)
    if call.body.dry_run:
        preview = await outbox.preview_message(call.runtime, call.path["account"], spec)
        return answers.DryRun(
            response=preview.response, message_id=preview.message_id, preview=preview.preview
        )
    result = await outbox.submit_message(call.runtime, call.path["account"], spec)
    optional = {}
    if key:
        optional["idempotency"] = answers.Idempotency(key=key, status="HIT" if result.duplicate else "MISS")
    return answers.Queued(
        response=result.response,
        message_id=result.message_id,
        send_at=iso(result.due_at) if result.due_at else None,
        queue_id=result.queue_id,
        **optional,
    )
