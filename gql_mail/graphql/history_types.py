"""Output types of a message's history (see services/history.py)."""

from __future__ import annotations

from datetime import datetime

import strawberry

from gql_mail.events import iso
from gql_mail.services import history


@strawberry.type(description="One delivery attempt, as recorded with its outcome.")
class DeliveryAttempt:
    attempt: int = strawberry.field(
        description="Its number in its run of attempts (a retryMessage starts a new run at 1)."
    )
    attempted_at: datetime = strawberry.field(description="When its outcome was recorded.")
    duration: float | None = strawberry.field(
        description="Seconds the SMTP transaction took; null when no connection was made."
    )
    result: str = strawberry.field(description="sent or failed.")
    error: str | None
    error_code: str | None = strawberry.field(description="EPROTOCOL, EAUTH, ECONNECTION, ETIMEDOUT, ...")
    smtp_response_code: int | None = strawberry.field(
        description="The SMTP server's reply code, if it replied."
    )
    response: str | None = strawberry.field(description="The SMTP server's reply text.")

    @classmethod
    def from_attempt(cls, a: history.Attempt) -> DeliveryAttempt:
        return cls(
            attempt=a.attempt,
            attempted_at=a.attempted_at,
            duration=a.duration_ms / 1000 if a.duration_ms is not None else None,
            result=a.result,
            error=a.error,
            error_code=a.error_code,
            smtp_response_code=a.smtp_code,
            response=a.response,
        )


@strawberry.type(
    description="An event this message caused. Derived from what is stored, not a log of what was published: "
    "each attempt is the messageDeliveryError or messageSent recorded with it, the failed attempt that ended "
    "the message (or a run before a retryMessage) also its messageFailed, and a Sent copy given up "
    "messageCopyError (dated at the message's last change)."
)
class MessageEvent:
    event: str
    date: str = strawberry.field(description="ISO 8601 in UTC with milliseconds, as in the webhook body.")

    @classmethod
    def from_event(cls, e: history.MessageEvent) -> MessageEvent:
        return cls(event=e.event, date=iso(e.date))


@strawberry.type(description="One webhook POST of one of this message's events.")
class WebhookDeliveryInfo:
    id: strawberry.ID
    webhook: strawberry.ID = strawberry.field(description="The webhook's id.")
    event: str
    status: str = strawberry.field(description="pending, sending, delivered or failed.")
    attempts: int = strawberry.field(description="POSTs made so far.")
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None

    @classmethod
    def from_delivery(cls, d: history.Delivery) -> WebhookDeliveryInfo:
        return cls(
            id=strawberry.ID(d.id),
            webhook=strawberry.ID(d.webhook_id),
            event=d.event,
            status=d.status,
            attempts=d.attempts,
            last_error=d.last_error,
            created_at=d.created_at,
            delivered_at=d.delivered_at,
        )
