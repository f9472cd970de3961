"""The submit handler: `POST /v1/account/{account}/submit` onto services/outbox.py."""

from __future__ import annotations

from typing import Any

from gql_mail.events import iso
from gql_mail.rest.endpoint import Call
from gql_mail.rest.models import NoQuery, SubmitMessage
from gql_mail.services import outbox

IDEMPOTENCY_HEADER = "idempotency-key"


async def submit_message(call: Call[SubmitMessage, NoQuery]) -> dict[str, Any]:
    """EmailEngine's answer: `{response, messageId, sendAt, queueId}`, plus `idempotency {key, status}`
    when the request carried an `Idempotency-Key` (status HIT: an earlier submission's answer, replayed).
    With `dryRun: true`, `{response: "Dry run", messageId, preview}` and nothing queued."""
    key = call.request.headers.get(IDEMPOTENCY_HEADER)
    spec = call.body.to_spec(key)
    if call.body.dry_run:
        preview = await outbox.preview_message(call.runtime, call.path["account"], spec)
        return {"response": preview.response, "messageId": preview.message_id, "preview": preview.preview}
    result = await outbox.submit_message(call.runtime, call.path["account"], spec)
    answer: dict[str, Any] = {
        "response": result.response,
        "messageId": result.message_id,
        "sendAt": iso(result.due_at) if result.due_at else None,
        "queueId": result.queue_id,
    }
    if key:
        answer["idempotency"] = {"key": key, "status": "HIT" if result.duplicate else "MISS"}
    return answer
