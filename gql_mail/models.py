"""The tables. The database is the queue: outbox rows are jobs, webhook_delivery rows are the event outbox.

Secrets are stored only in `*_enc` columns, encrypted by `crypto.SecretBox`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlmodel import Field, SQLModel


def table(model: type[SQLModel]) -> Table:
    """A model's Core table: its `.c` columns compare to typed SQL expressions (the class attributes are
    typed as Python values), which the hand-written queue queries need."""
    return cast(Table, model.__table__)  # type: ignore[attr-defined]


def _ts(nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=nullable, index=index))


class AccountState(StrEnum):
    NEW = "NEW"
    CONNECTING = "CONNECTING"
    CONNECTED = "CONNECTED"
    AUTHENTICATION_ERROR = "AUTHENTICATION_ERROR"
    CONNECT_ERROR = "CONNECT_ERROR"
    DISCONNECTED = "DISCONNECTED"


class CopyStatus(StrEnum):
    """The Sent-folder copy of a sent message: an obligation recorded with `sent`, retried until done."""

    PENDING = "pending"
    COPYING = "copying"
    DONE = "done"
    FAILED = "failed"


class MessageStatus(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE_STATUSES = frozenset({MessageStatus.QUEUED, MessageStatus.SENDING})
TERMINAL_STATUSES = frozenset({MessageStatus.SENT, MessageStatus.FAILED, MessageStatus.CANCELLED})


class Account(SQLModel, table=True):
    __tablename__ = "account"

    id: str = Field(sa_column=Column(String(256), primary_key=True))
    name: str
    email: str
    state: str = Field(default=AccountState.NEW, max_length=32)
    last_error_message: str | None = None
    last_error_code: str | None = Field(default=None, max_length=64)
    # Bumped by every change of settings, so a background check that started earlier cannot overwrite
    # the state of settings it did not test.
    version: int = 1

    smtp_host: str
    smtp_port: int
    smtp_secure: bool = False
    smtp_user: str
    smtp_pass_enc: str | None = None
    smtp_token_enc: str | None = None
    smtp_reject_unauthorized: bool = True
    # None: the deployment's default (`Settings.require_tls`). True: no STARTTLS offered, or a failed
    # upgrade, is ETLS and no credential is sent.
    smtp_require_tls: bool | None = None

    imap_disabled: bool = True
    imap_host: str | None = None
    imap_port: int | None = None
    imap_secure: bool = False
    imap_user: str | None = None
    imap_pass_enc: str | None = None
    imap_token_enc: str | None = None
    imap_reject_unauthorized: bool = True
    imap_require_tls: bool | None = None
    sent_mail_path: str | None = None

    created_at: datetime = _ts(nullable=False)
    updated_at: datetime = _ts(nullable=False)
    connected_at: datetime | None = _ts()
    checked_at: datetime | None = _ts()
    # Consecutive failed periodic checks of a CONNECTED account: one network blip does not flip its state.
    check_failures: int = 0

    # An OAuth2 mailbox (services/oauth2_tokens.py): SMTP and IMAP log in with XOAUTH2 as `oauth2_user`
    # with the current access token of the app `oauth2_app_id`, refreshed before `oauth2_expires`.
    oauth2_app_id: str | None = Field(
        default=None,
        sa_column=Column(String(64), ForeignKey("oauth2_app.id", ondelete="RESTRICT"), nullable=True),
    )
    oauth2_user: str | None = Field(default=None, max_length=512)
    oauth2_access_token_enc: str | None = None
    oauth2_refresh_token_enc: str | None = None
    oauth2_expires: datetime | None = _ts()
    # Bumped by every change of the tokens: a refresh is claimed and stored by compare-and-set on it, so
    # nodes sharing the database refresh an account once, not once each.
    oauth2_token_version: int = 0
    # While a refresh is in flight somewhere (the claim's deadline; a crashed refresher's claim expires).
    oauth2_refreshing_until: datetime | None = _ts()
    # Transient refresh failures in a row, and when the next try may go out (backoff).
    oauth2_failures: int = 0
    oauth2_retry_at: datetime | None = _ts()
    # The provider's refusal (invalid_grant...): no refresh is tried again until new tokens are given.
    oauth2_error: str | None = None


class OAuth2App(SQLModel, table=True):
    """An OAuth2 application (EmailEngine's `/v1/oauth2` apps): the client that refreshes the tokens of the
    accounts registered with it. `provider` names a row of `oauth2_providers.PROVIDERS`."""

    __tablename__ = "oauth2_app"

    id: str = Field(sa_column=Column(String(64), primary_key=True))
    name: str = Field(max_length=256)
    description: str | None = None
    provider: str = Field(max_length=32)
    enabled: bool = True
    client_id: str = Field(max_length=1024)
    client_secret_enc: str | None = None
    base_scopes: str = Field(default="imap", max_length=16)
    # Scopes asked for besides the provider's (EmailEngine's extraScopes).
    scopes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    redirect_url: str | None = None
    authority: str | None = Field(default=None, max_length=256)
    # Override the provider's endpoints (tests, sovereign clouds); required for the generic provider.
    token_url: str | None = None
    authorize_url: str | None = None
    created_at: datetime = _ts(nullable=False)
    updated_at: datetime = _ts(nullable=False)


class OutboxMessage(SQLModel, table=True):
    __tablename__ = "outbox_message"
    __table_args__ = (
        Index("ix_outbox_due", "status", "next_attempt_at"),
        Index("ix_outbox_account_status", "account_id", "status"),
        # Queued messages by account, due time: the claim walks the accounts that have any and seeks each
        # one's due messages in it (queue.py). Partial, so a row leaves it when it is claimed and a
        # million sent messages in retention cost it nothing.
        Index(
            "ix_outbox_queued",
            "account_id",
            "next_attempt_at",
            sqlite_where=text("status = 'queued'"),
            postgresql_where=text("status = 'queued'"),
        ),
        Index("ix_outbox_copy_due", "copy_status", "copy_next_attempt_at"),
        UniqueConstraint("account_id", "idempotency_key", name="uq_outbox_idempotency"),
    )

    id: str = Field(sa_column=Column(String(64), primary_key=True))
    account_id: str = Field(
        sa_column=Column(String(256), ForeignKey("account.id", ondelete="CASCADE"), nullable=False)
    )
    message_id: str = Field(max_length=998)
    raw: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    envelope_from: str
    envelope_to: list[str] = Field(sa_column=Column(JSON, nullable=False))
    status: str = Field(default=MessageStatus.QUEUED, max_length=16)
    attempts_made: int = 0
    attempts: int = 10
    copy_to_sent: bool = False
    # The folder this message's Sent copy goes to, over the account's (EmailEngine's submit `sentMailPath`).
    sent_mail_path: str | None = Field(default=None, max_length=512)
    # As the message says it, decoded; kept after the body is dropped (listings show it).
    subject: str | None = Field(default=None, sa_column=Column(Text))
    send_at: datetime | None = _ts()
    next_attempt_at: datetime = _ts(nullable=False)
    # The worker (see `Worker`) that claimed the row to send it or to copy it to the Sent folder.
    claimed_by: str | None = Field(default=None, max_length=64)
    # How often the row came back because its worker died mid-send (EmailEngine's maxStalledCount idea).
    stalled_count: int = 0
    idempotency_key: str | None = Field(default=None, max_length=256)
    last_error_message: str | None = None
    last_error_code: str | None = Field(default=None, max_length=64)
    last_smtp_code: int | None = None
    response: str | None = None
    accepted: list[str] | None = Field(default=None, sa_column=Column(JSON))
    rejected: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    copied_to: str | None = None
    copy_error: str | None = None
    copy_status: str | None = Field(default=None, max_length=16)
    copy_attempts: int = 0
    copy_next_attempt_at: datetime | None = _ts()
    created_at: datetime = _ts(nullable=False)
    updated_at: datetime = _ts(nullable=False)
    sent_at: datetime | None = _ts()


class DeliveryAttempt(SQLModel, table=True):
    __tablename__ = "delivery_attempt"

    id: int | None = Field(default=None, primary_key=True)
    outbox_id: str = Field(
        sa_column=Column(
            String(64), ForeignKey("outbox_message.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    attempt: int
    at: datetime = _ts(nullable=False)
    ok: bool
    response: str | None = None
    error: str | None = None
    error_code: str | None = Field(default=None, max_length=64)
    smtp_code: int | None = None
    accepted: list[str] | None = Field(default=None, sa_column=Column(JSON))
    rejected: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    # How long the SMTP transaction took (MAIL FROM to the end of DATA); None when no connection was made.
    duration_ms: int | None = None


class Webhook(SQLModel, table=True):
    __tablename__ = "webhook"

    id: str = Field(sa_column=Column(String(64), primary_key=True))
    url: str
    events: list[str] = Field(sa_column=Column(JSON, nullable=False))
    account_id: str | None = Field(default=None, max_length=256, index=True)
    secret_enc: str | None = None
    enabled: bool = True
    created_at: datetime = _ts(nullable=False)
    # The last failed POST's reason, and since when every POST has failed (None once one succeeds): an
    # operator sees a dead receiver on the webhook itself, not only in its deliveries.
    last_error: str | None = None
    failing_since: datetime | None = _ts()
    last_delivered_at: datetime | None = _ts()


class WebhookDelivery(SQLModel, table=True):
    __tablename__ = "webhook_delivery"
    __table_args__ = (
        Index("ix_webhook_delivery_due", "status", "next_attempt_at"),
        Index("ix_webhook_delivery_order", "webhook_id", "order_key", "status", "seq"),
        # A message's deliveries (its events' order_key is its queue id), for its history.
        Index("ix_webhook_delivery_order_key", "order_key"),
    )

    seq: int | None = Field(default=None, primary_key=True)
    id: str = Field(max_length=64, unique=True)
    webhook_id: str = Field(
        sa_column=Column(String(64), ForeignKey("webhook.id", ondelete="CASCADE"), nullable=False)
    )
    event: str = Field(max_length=64)
    order_key: str = Field(max_length=256)
    body: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    status: str = Field(default="pending", max_length=16)
    attempts_made: int = 0
    next_attempt_at: datetime = _ts(nullable=False)
    claimed_by: str | None = Field(default=None, max_length=64)
    last_error: str | None = None
    created_at: datetime = _ts(nullable=False)
    delivered_at: datetime | None = _ts()


class AccessToken(SQLModel, table=True):
    __tablename__ = "access_token"

    id: str = Field(sa_column=Column(String(64), primary_key=True))
    token_hash: str = Field(max_length=128, unique=True)
    scope: str = Field(default="api", max_length=32)
    description: str | None = None
    created_at: datetime = _ts(nullable=False)
    revoked_at: datetime | None = _ts()
    last_used_at: datetime | None = _ts()


class Worker(SQLModel, table=True):
    """A live gql-mail process that claims work. Its heartbeat, written on a timer of its own, is what keeps
    its claims: rows claimed by a worker whose heartbeat is older than the lease go back to the queue, so a
    process that dies (kill -9) costs seconds, while a live one keeps its claims however long they wait."""

    __tablename__ = "worker"

    id: str = Field(sa_column=Column(String(64), primary_key=True))
    host: str = Field(max_length=256)
    pid: int
    started_at: datetime = _ts(nullable=False)
    heartbeat_at: datetime = _ts(nullable=False, index=True)


class EventPayload(SQLModel, table=True):
    """An event too large for a PostgreSQL NOTIFY (8,000 bytes at most): the relay stores it here and
    notifies its id; other processes read it by id. Rows are short-lived (see `pg_events`)."""

    __tablename__ = "event_payload"

    id: int | None = Field(default=None, primary_key=True)
    body: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = _ts(nullable=False, index=True)


class ServiceSetting(SQLModel, table=True):
    """A deployment-wide setting, shared by every process (EmailEngine keeps these in its settings store):
    one row per key. A secret's value is only in `value_enc` (see `crypto.SecretBox`), anything else in
    `value` (JSON)."""

    __tablename__ = "service_setting"

    key: str = Field(sa_column=Column(String(64), primary_key=True))
    value: Any = Field(default=None, sa_column=Column(JSON, nullable=True))
    value_enc: str | None = None
    updated_at: datetime = _ts(nullable=False)


class AccountPacing(SQLModel, table=True):
    """An account's sending limits and throttling state (services/pacing.py). A row of its own, not columns
    of `account`: limits are read and locked by every claim of a paced account, and that lock must not
    serialise updates of the account's settings. No row (or all limits None): the provider's preset."""

    __tablename__ = "account_pacing"

    account_id: str = Field(
        sa_column=Column(String(256), ForeignKey("account.id", ondelete="CASCADE"), primary_key=True)
    )
    per_minute: int | None = None
    per_hour: int | None = None
    per_day: int | None = None
    recipients_per_day: int | None = None
    max_connections: int | None = None
    # Warm-up: the limits start at a fraction for a new account and double daily (services/pacing.py).
    ramp_up: bool = False
    # A throttling reply paused the account until then (None: never paused).
    throttled_until: datetime | None = _ts()
    throttle_reason: str | None = None
    # Consecutive pauses (each one's backoff doubles); back to 1 when a pause starts long after the last.
    throttle_level: int = 0
    updated_at: datetime = _ts(nullable=False)


class SmtpLease(SQLModel, table=True):
    """One open SMTP connection of a connection-capped account, held by the worker that opened it
    (services/smtp_leases.py): on PostgreSQL, several nodes open connections for one account and its
    `maxConnections` bounds them all. Slot numbers run from 0 to the cap; a dead worker's rows go with it."""

    __tablename__ = "smtp_lease"

    account_id: str = Field(
        sa_column=Column(String(256), ForeignKey("account.id", ondelete="CASCADE"), primary_key=True)
    )
    slot: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    worker_id: str = Field(max_length=64, index=True)
    taken_at: datetime = _ts(nullable=False)


class SendLog(SQLModel, table=True):
    """One row per message admitted for sending by a paced account: the sliding windows of its limits are
    counted over these rows, so they hold across restarts and across processes. Kept one day. A row is
    written at admission and moved to the end of the message's attempt, so a message that waited in a busy
    lane counts from when the provider saw it."""

    __tablename__ = "send_log"
    __table_args__ = (
        Index("ix_send_log_account_at", "account_id", "at"),
        Index("ix_send_log_outbox", "outbox_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    account_id: str = Field(
        sa_column=Column(String(256), ForeignKey("account.id", ondelete="CASCADE"), nullable=False)
    )
    # When the message was admitted, then when its attempt ended (`stamp_sent`): what the provider counted.
    at: datetime = _ts(nullable=False)
    recipients: int = 1
    # The message, while its send is pending (no foreign key: the log outlives pruned messages).
    outbox_id: str | None = Field(default=None, max_length=64)
