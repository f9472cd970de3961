"""Output types: built from rows, never carrying a secret (there is no field that could)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

import strawberry
from sqlalchemy import Row
from strawberry.scalars import JSON

from gql_mail import models
from gql_mail.clock import utc
from gql_mail.events import Event as BusEvent
from gql_mail.events import iso
from gql_mail.graphql.context import Info
from gql_mail.graphql.history_types import DeliveryAttempt, MessageEvent, WebhookDeliveryInfo
from gql_mail.graphql.pacing import AccountLimits, AccountUsage, limits_of, throttled_until_of, usage_of
from gql_mail.graphql.pacing import status as pacing_status
from gql_mail.services import history
from gql_mail.services.outbox import PreviewResult, SubmitResult
from gql_mail.services.webhooks import expand_events

AccountState = strawberry.enum(models.AccountState, name="AccountState")


def _dt(value: datetime | None) -> datetime | None:
    return utc(value) if value is not None else None


@strawberry.type
class ErrorInfo:
    message: str
    code: str | None = None


def _error(message: str | None, code: str | None) -> ErrorInfo | None:
    return ErrorInfo(message=message, code=code) if message else None


def _reason(text: str | None) -> ErrorInfo | None:
    """A webhook POST's stored reason, `"<code>: <detail>"` (see workers/webhook_post.py), as an ErrorInfo."""
    if not text:
        return None
    code, sep, _ = text.partition(": ")
    return ErrorInfo(message=text, code=code if sep else None)


@strawberry.type
class SmtpSummary:
    host: str
    port: int
    secure: bool
    user: str


@strawberry.type
class ImapSummary:
    host: str | None
    port: int | None
    secure: bool
    user: str | None
    sent_mail_path: str | None


@strawberry.type(description="An OAuth2 account's login; its tokens are never shown.")
class AccountOAuth2:
    app: strawberry.ID
    user: str | None
    expires: datetime | None = strawberry.field(description="When the current access token expires.")


@strawberry.type
class Account:
    account: strawberry.ID
    name: str | None
    email: str | None
    state: AccountState  # type: ignore[valid-type]
    last_error: ErrorInfo | None
    smtp: SmtpSummary
    imap: ImapSummary | None
    created_at: datetime
    connected_at: datetime | None
    oauth2: AccountOAuth2 | None = None

    @strawberry.field(description="The sending limits in force (the account's own, or its provider's).")
    async def limits(self, info: Info) -> AccountLimits:
        return limits_of(await pacing_status(info, str(self.account)))

    @strawberry.field(description="Messages sent in the sliding windows the limits count.")
    async def usage(self, info: Info) -> AccountUsage:
        return usage_of(await pacing_status(info, str(self.account)))

    @strawberry.field(description="A throttling reply paused the account until then; null: not paused.")
    async def throttled_until(self, info: Info) -> datetime | None:
        return throttled_until_of(await pacing_status(info, str(self.account)))

    @classmethod
    def from_row(cls, row: models.Account | Row[Any]) -> Account:
        """From the model or a row of its table (services.accounts.list_accounts)."""
        return cls(
            account=strawberry.ID(row.id),
            name=row.name,
            email=row.email,
            state=models.AccountState(row.state),
            last_error=_error(row.last_error_message, row.last_error_code),
            smtp=SmtpSummary(
                host=row.smtp_host, port=row.smtp_port, secure=row.smtp_secure, user=row.smtp_user
            ),
            imap=None
            if row.imap_disabled
            else ImapSummary(
                host=row.imap_host,
                port=row.imap_port,
                secure=row.imap_secure,
                user=row.imap_user,
                sent_mail_path=row.sent_mail_path,
            ),
            created_at=utc(row.created_at),
            connected_at=_dt(row.connected_at),
            oauth2=None
            if row.oauth2_app_id is None
            else AccountOAuth2(
                app=strawberry.ID(row.oauth2_app_id), user=row.oauth2_user, expires=_dt(row.oauth2_expires)
            ),
        )


@strawberry.type
class SubmitMessageResult:
    response: str
    message_id: str
    send_at: datetime | None
    queue_id: strawberry.ID

    @classmethod
    def from_result(cls, result: SubmitResult) -> SubmitMessageResult:
        return cls(
            response=result.response,
            message_id=result.message_id,
            send_at=result.send_at,
            queue_id=strawberry.ID(result.queue_id),
        )


@strawberry.type
class Envelope:
    from_: str = strawberry.field(name="from")
    to: list[str]


@strawberry.type(description="A dry run: the message as it would be queued; nothing was queued or stored.")
class PreviewMessageResult:
    response: str = strawberry.field(description='"Dry run".')
    message_id: str
    preview: str = strawberry.field(description="The RFC 822 message (no Bcc header), base64.")
    envelope: Envelope = strawberry.field(description="Who it would be sent to: to, cc and bcc.")

    @classmethod
    def from_result(cls, result: PreviewResult) -> PreviewMessageResult:
        return cls(
            response=result.response,
            message_id=result.message_id,
            preview=result.preview,
            envelope=Envelope(from_=result.envelope_from, to=list(result.envelope_to)),
        )


@strawberry.type
class OutboxMessage:
    queue_id: strawberry.ID
    message_id: str | None
    account: strawberry.ID
    status: str
    attempts_made: int
    attempts: int
    next_attempt: datetime | None
    send_at: datetime | None
    last_error: ErrorInfo | None
    envelope: Envelope
    subject: str | None = strawberry.field(description="As the message says it (decoded).")
    created_at: datetime
    sent_at: datetime | None
    response: str | None
    accepted: list[str] | None
    rejected: JSON | None
    copied_to: str | None
    copy_error: str | None
    copy_status: str | None = strawberry.field(
        description="The Sent-folder copy of a sent message: pending (due, retried after an IMAP failure), "
        "copying, done (see copiedTo) or failed (given up, see copyError); null when no copy was asked for."
    )
    row: strawberry.Private[models.OutboxMessage | None] = None

    @strawberry.field(description="Every delivery attempt, oldest first.")
    async def delivery_attempts(self, info: Info) -> list[DeliveryAttempt]:
        found = await info.context.loaders.attempts.load(str(self.queue_id))
        return [DeliveryAttempt.from_attempt(a) for a in found]

    @strawberry.field(description="The message's events, oldest first (see MessageEvent: derived).")
    async def events(self, info: Info) -> list[MessageEvent]:
        assert self.row is not None
        found = await info.context.loaders.attempts.load(str(self.queue_id))
        return [MessageEvent.from_event(e) for e in history.derive_events(self.row, found)]

    @strawberry.field(description="The webhook POSTs of the message's events, oldest first.")
    async def webhook_deliveries(self, info: Info) -> list[WebhookDeliveryInfo]:
        found = await info.context.loaders.deliveries.load(str(self.queue_id))
        return [WebhookDeliveryInfo.from_delivery(d) for d in found]

    @classmethod
    def from_row(cls, row: models.OutboxMessage) -> OutboxMessage:
        active = row.status in models.ACTIVE_STATUSES
        return cls(
            queue_id=strawberry.ID(row.id),
            message_id=row.message_id,
            account=strawberry.ID(row.account_id),
            status=row.status,
            attempts_made=row.attempts_made,
            attempts=row.attempts,
            next_attempt=_dt(row.next_attempt_at) if active else None,
            send_at=_dt(row.send_at),
            last_error=_error(row.last_error_message, row.last_error_code),
            envelope=Envelope(from_=row.envelope_from, to=list(row.envelope_to)),
            subject=row.subject,
            created_at=utc(row.created_at),
            sent_at=_dt(row.sent_at),
            response=row.response,
            accepted=row.accepted,
            rejected=cast(JSON, row.rejected),
            copied_to=row.copied_to,
            copy_error=row.copy_error,
            copy_status=row.copy_status,
            row=row,
        )


@strawberry.type
class Webhook:
    id: strawberry.ID
    url: str
    events: list[str]
    account: strawberry.ID | None
    enabled: bool
    has_secret: bool
    created_at: datetime
    last_error: ErrorInfo | None = strawberry.field(
        description="The last failed POST: its reason (message) and the reason's leading code (EPOLICY, "
        "ETIMEDOUT, HTTP 500, or the HTTP client's error name). Kept after a success; see failingSince."
    )
    failing_since: datetime | None = strawberry.field(
        description="When POSTs to this webhook started failing (the first failure after a success); "
        "null when the last POST succeeded."
    )
    last_delivered_at: datetime | None = strawberry.field(description="When a POST last got a 2xx answer.")

    @classmethod
    def from_row(cls, row: models.Webhook) -> Webhook:
        return cls(
            id=strawberry.ID(row.id),
            url=row.url,
            events=expand_events(row.events),
            account=strawberry.ID(row.account_id) if row.account_id else None,
            enabled=row.enabled,
            has_secret=row.secret_enc is not None,
            created_at=utc(row.created_at),
            last_error=_reason(row.last_error),
            failing_since=_dt(row.failing_since),
            last_delivered_at=_dt(row.last_delivered_at),
        )


@strawberry.type
class Event:
    """The same event, account, date and data as the webhook body."""

    event: str
    account: strawberry.ID | None
    date: str = strawberry.field(
        description="ISO 8601 in UTC with milliseconds, exactly as in the webhook body."
    )
    data: JSON

    @classmethod
    def from_bus(cls, event: BusEvent) -> Event:
        data: Any = event.data
        return cls(
            event=event.event,
            account=strawberry.ID(event.account) if event.account else None,
            date=iso(event.date),
            data=data,
        )


@strawberry.type
class AccessToken:
    id: strawberry.ID
    scope: str
    description: str | None
    created_at: datetime
    revoked_at: datetime | None


@strawberry.type(description="An OAuth2 application; its client secret is never shown.")
class OAuth2App:
    id: strawberry.ID
    name: str
    description: str | None
    provider: str
    enabled: bool
    client_id: str
    client_secret_set: bool = strawberry.field(description="Whether a client secret is stored.")
    base_scopes: str
    scopes: list[str]
    redirect_url: str | None
    authority: str | None
    token_url: str | None
    authorize_url: str | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: models.OAuth2App) -> OAuth2App:
        return cls(
            id=strawberry.ID(row.id),
            name=row.name,
            description=row.description,
            provider=row.provider,
            enabled=row.enabled,
            client_id=row.client_id,
            client_secret_set=row.client_secret_enc is not None,
            base_scopes=row.base_scopes,
            scopes=list(row.scopes),
            redirect_url=row.redirect_url,
            authority=row.authority,
            token_url=row.token_url,
            authorize_url=row.authorize_url,
            created_at=utc(row.created_at),
        )
