"""The JSON the REST handlers answer with, as pydantic models: what the OpenAPI document (openapi.py) says
each operation answers, and, for the submit, outbox, settings, stats and token handlers, what builds the
answer (a handler returns its model, and endpoint.py sends `dump(model)`), so their shape is written once.

Each model forbids keys it does not name, so the document says exactly what a client gets. A key that an
answer has only sometimes is a field with a default, left unset when it is absent: `dump` leaves out what
was not set, so absent stays absent and null stays null. A test (tests/test_rest_openapi.py) validates
real answers against these schemas, and another that every operation of the router names its model. The
account handlers still build their dicts by hand: for them the test is what keeps the model and the
answer together.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel
from pydantic.alias_generators import to_camel

ISO = "ISO 8601, UTC"


class Answer(BaseModel):
    """Keys in EmailEngine's camelCase; built by field name in Python (`Answer(queue_id=...)`)."""

    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, validate_by_name=True, validate_by_alias=True
    )


def dump(answer: BaseModel) -> dict[str, Any]:
    """An answer's JSON: EmailEngine's key names, and only the optional keys the handler set."""
    dumped: dict[str, Any] = answer.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return dumped


# --- accounts ----------------------------------------------------------------------------------------


class AccountCreated(Answer):
    """`POST /v1/account`: "new" when registered, "existing" when an account with that id was updated."""

    account: str
    state: Literal["new", "existing"]


class ConsentRedirect(Answer):
    """`POST /v1/account` with `oauth2.authorize: true`: where to send the user for the provider's consent;
    the account is registered when the provider sends the user back to gql-mail's `/oauth`."""

    redirect: str


class AccountCreatedOrRedirect(RootModel[AccountCreated | ConsentRedirect]):
    """`POST /v1/account`."""


class LastError(Answer):
    response: str
    server_response_code: str | None


class ShownAuth(Answer):
    """Login settings as shown: a stored password or access token reads "******"."""

    user: str | None
    pass_: Literal["******"] | None = Field(default=None, alias="pass")
    access_token: Literal["******"] | None = None


class ShownTls(Answer):
    reject_unauthorized: bool | None
    require_tls: bool | None = Field(alias="requireTLS")


class ShownSmtp(Answer):
    host: str | None
    port: int | None
    secure: bool | None
    auth: ShownAuth
    tls: ShownTls


class ShownImap(Answer):
    """`{"disabled": true}` for a send-only account, else its IMAP settings."""

    disabled: Literal[True] | None = None
    host: str | None = None
    port: int | None = None
    secure: bool | None = None
    auth: ShownAuth | None = None
    tls: ShownTls | None = None
    sent_mail_path: str | None = None


class ShownOAuth2Auth(Answer):
    user: str | None


class ShownOAuth2(Answer):
    """An OAuth2 account's login: `provider` is the app id; stored tokens read "******"."""

    provider: str
    auth: ShownOAuth2Auth
    access_token: Literal["******"] | None = None
    refresh_token: Literal["******"] | None = None
    expires: str | None = Field(description="ISO 8601, UTC: when the current access token expires")


class AccountSummary(Answer):
    """An entry of `GET /v1/accounts`; `state` in EmailEngine's spelling (init, connecting, connected,
    authenticationError, connectError, disconnected). `app`: an OAuth2 account's app id."""

    account: str
    name: str | None
    email: str | None
    type: Literal["imap", "sending"]
    app: str | None = None
    state: str
    last_error: LastError | None


class AccountDetails(AccountSummary):
    """`GET /v1/account/{account}`."""

    send_only: bool
    imap: ShownImap
    smtp: ShownSmtp
    oauth2: ShownOAuth2 | None = Field(default=None, description="only for an OAuth2 account")
    connected_at: str | None = Field(description="ISO 8601, UTC")


class AccountList(Answer):
    """`GET /v1/accounts`: `query` is false and `state` "*" when not filtered by them."""

    total: int
    page: int
    pages: int
    query: str | Literal[False]
    state: str
    accounts: list[AccountSummary]


class AccountUpdated(Answer):
    account: str


class AccountDeleted(Answer):
    account: str
    deleted: bool


class Reconnected(Answer):
    reconnect: bool


# --- OAuth2 apps -------------------------------------------------------------------------------------


class OAuth2AppCreated(Answer):
    """`POST /v1/oauth2`."""

    id: str
    created: Literal[True]


class OAuth2AppEntry(Answer):
    """An OAuth2 app: its client secret, when one is stored, reads "******"."""

    id: str
    name: str
    description: str | None
    provider: Literal["gmail", "outlook", "generic"]
    enabled: bool
    created: str = Field(description="ISO 8601, UTC")
    updated: str = Field(description="ISO 8601, UTC")
    client_id: str
    client_secret: Literal["******"] | None
    base_scopes: str
    extra_scopes: list[str]
    redirect_url: str | None
    authority: str | None
    token_url: str | None
    authorize_url: str | None
    accounts: int | None = Field(default=None, description="accounts registered with it (one app only)")


class OAuth2AppList(Answer):
    """`GET /v1/oauth2`."""

    total: int
    page: int
    pages: int
    apps: list[OAuth2AppEntry]


class OAuth2AppDeleted(Answer):
    id: str
    deleted: bool
    accounts: int


# --- submit ------------------------------------------------------------------------------------------


class Idempotency(Answer):
    """HIT: an earlier submission with the same `Idempotency-Key`, whose answer this is."""

    key: str
    status: Literal["HIT", "MISS"]


class Queued(Answer):
    response: Literal["Queued for delivery"]
    message_id: str
    send_at: str | None = Field(description="ISO 8601, UTC; null to send now")
    queue_id: str
    idempotency: Idempotency | None = Field(default=None, description="only with an Idempotency-Key header")


class DryRun(Answer):
    """`dryRun: true`: the message as it would be sent, nothing queued."""

    response: Literal["Dry run"]
    message_id: str
    preview: str = Field(description="the RFC 822 message, base64")


class Submitted(RootModel[Queued | DryRun]):
    """`POST /v1/account/{account}/submit`."""


# --- outbox ------------------------------------------------------------------------------------------


class OutboxEnvelope(Answer):
    from_: str = Field(alias="from")
    to: list[str]


class OutboxError(Answer):
    """The last attempt's error; `code` gql-mail's (e.g. EENVELOPE), `statusCode` the SMTP reply's code
    when a server gave one."""

    message: str
    code: str | None
    status_code: int | None = Field(default=None, description="absent when no SMTP server replied")


OutboxStatus = Literal["queued", "processing", "submitted", "error", "cancelled"]


class OutboxProgress(Answer):
    """`status` in EmailEngine's words: queued, processing (being sent), submitted (sent), error (failed
    for good); a cancelled message, which EmailEngine no longer lists, keeps gql-mail's "cancelled"."""

    status: OutboxStatus
    response: str | None = Field(default=None, description="the SMTP server's reply; absent before one")
    message_id: str | None = Field(default=None, description="the sent message's Message-ID, once sent")
    error: OutboxError | None = Field(default=None, description="absent unless an attempt failed")


class OutboxEntry(Answer):
    """`GET /v1/outbox/{queueId}` and the entries of `GET /v1/outbox`: EmailEngine's OutboxEntry, with the
    fields gql-mail keeps."""

    queue_id: str
    account: str
    source: Literal["api"]
    message_id: str
    envelope: OutboxEnvelope
    subject: str | None
    idempotency_key: str | None
    created: str = Field(description=ISO)
    scheduled: str = Field(description=f"{ISO}: when it is (or was) due")
    next_attempt: str | Literal[False] = Field(
        description=f"{ISO}; false once it is sent, failed or cancelled"
    )
    attempts_made: int
    attempts: int = Field(description="delivery attempts before the message fails")
    progress: OutboxProgress


class OutboxList(Answer):
    """`GET /v1/outbox`: every account's messages, newest first."""

    total: int
    page: int
    pages: int
    messages: list[OutboxEntry]


class OutboxDeleted(Answer):
    """`DELETE /v1/outbox/{queueId}`: false when the message was already being sent or had finished."""

    deleted: bool


# --- settings ----------------------------------------------------------------------------------------


class Settings(Answer):
    """`GET /v1/settings`: only the keys asked for (`?webhooks=true&...`)."""

    webhooks: str | None = Field(default=None, description="the webhook's URL; null when none is set")
    webhooks_enabled: bool | None = None
    webhook_events: list[str] | None = None
    service_secret: Literal[True] | None = Field(
        default=None, description="stored encrypted, so shown as true (generated on first use)"
    )
    event_types: list[str] | None = Field(default=None, description="every event name gql-mail sends")


class SettingsUpdated(Answer):
    """`POST /v1/settings`: the keys the body set."""

    updated: list[str]


# --- stats -------------------------------------------------------------------------------------------


class Connections(Answer):
    """Accounts by state: every key of EmailEngine's `connections`, 0 for a state gql-mail has none in
    (it never uses syncing, unset, paused and unassigned)."""

    init: int
    connected: int
    connecting: int
    syncing: int
    authentication_error: int
    connect_error: int
    unset: int
    disconnected: int
    paused: int
    unassigned: int


class QueueCounts(Answer):
    active: int = Field(description="being sent now")
    delayed: int = Field(description="queued, not due yet (scheduled, or waiting for a retry)")
    paused: Literal[0]
    waiting: int = Field(description="queued and due")
    failed: int


class Queues(Answer):
    """The outbox as EmailEngine's `submit` queue, webhook deliveries as its `notify` queue."""

    submit: QueueCounts
    notify: QueueCounts


class Stats(Answer):
    """`GET /v1/stats`: `python` in place of EmailEngine's `node`; its Redis fields and event `counters`
    have no counterpart in gql-mail."""

    version: str = Field(description="gql-mail's version")
    python: str
    arch: str
    accounts: int
    connections: Connections
    queues: Queues


# --- tokens ------------------------------------------------------------------------------------------


class TokenAccess(Answer):
    time: str = Field(description=f"{ISO}: when the token was last used")
    ip: None = Field(description="gql-mail does not keep the address")


class TokenEntry(Answer):
    """An entry of `GET /v1/tokens`: the token's id, never the token. gql-mail's tokens are instance-wide
    (`account` null) with one scope: "api", or gql-mail's read-only "read"."""

    id: str
    account: None
    description: str | None
    scopes: list[str]
    created: str = Field(description=ISO)
    access: TokenAccess | None = Field(default=None, description="absent until the token is used")


class TokenList(Answer):
    """`GET /v1/tokens`: `account` is null, every token is listed."""

    account: None
    total: int
    page: int
    pages: int
    tokens: list[TokenEntry]


class TokenCreated(Answer):
    """`POST /v1/tokens` (and `/v1/token`): the only time the token is shown."""

    token: str
    id: str


class TokenDeleted(Answer):
    """`DELETE /v1/tokens/{token}` (and `/v1/token/{token}`): false for a token unknown or already revoked."""

    deleted: bool
