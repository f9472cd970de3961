"""What an operator sees of each recorded delivery outcome: one INFO log line with its ids, and the
process's metrics (gql_mail/metrics.py).

Called only once an outcome's transaction has committed, so a batch that failed and was recorded again
item by item (workers/batcher.py) is neither logged nor counted twice. The ids go in the record's `extra`
(`account`, `queueId`, `messageId`), which JSON logs carry as fields (gql_mail/log_format.py); the text
says them too, for text logs.
"""

from __future__ import annotations

import logging
from datetime import datetime

from gql_mail.mail.errors import MailError
from gql_mail.mail.smtp import SendResult
from gql_mail.queue import ClaimedMessage, StalledMessage
from gql_mail.runtime import Runtime

log = logging.getLogger("gql_mail.delivery")


def _ids(m: ClaimedMessage | StalledMessage) -> dict[str, object]:
    return {"account": m.account_id, "queueId": m.id, "messageId": m.message_id}


def report_sent(rt: Runtime, m: ClaimedMessage, result: SendResult, now: datetime) -> None:
    latency = (now - m.due_from).total_seconds() if m.due_from is not None else None
    rt.metrics.record_sent(latency)
    log.info(
        "message %s of account %s sent (attempt %d of %d): %s",
        m.id,
        m.account_id,
        m.attempts_made,
        m.attempts,
        result.response,
        extra={**_ids(m), "result": "sent", "attempt": m.attempts_made, "response": result.response},
    )


def report_failure(rt: Runtime, m: ClaimedMessage, error: MailError, retry_at: datetime | None) -> None:
    rt.metrics.record_failure(retried=retry_at is not None, error_code=error.code, smtp_code=error.smtp_code)
    then = f"retrying at {retry_at.isoformat()}" if retry_at is not None else "given up"
    log.info(
        "message %s of account %s: attempt %d of %d failed (%s%s): %s; %s",
        m.id,
        m.account_id,
        m.attempts_made,
        m.attempts,
        error.code,
        f" {error.smtp_code}" if error.smtp_code is not None else "",
        error,
        then,
        extra={
            **_ids(m),
            "result": "retried" if retry_at is not None else "failed",
            "attempt": m.attempts_made,
            "errorCode": error.code,
            "smtpResponseCode": error.smtp_code,
        },
    )


def report_given_up(
    rt: Runtime, m: ClaimedMessage | StalledMessage, code: str, reason: str, *, retried: bool = False
) -> None:
    """An outcome not from a server: a stalled message (requeued, or failed when it stalled too often) or
    one whose outcome could not be recorded."""
    rt.metrics.record_failure(retried=retried, error_code=code, smtp_code=None)
    log.info(
        "message %s of account %s %s (%s): %s",
        m.id,
        m.account_id,
        "requeued" if retried else "failed",
        code,
        reason,
        extra={**_ids(m), "result": "retried" if retried else "failed", "errorCode": code},
    )
