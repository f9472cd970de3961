"""The JSON the REST handlers answer with, as pydantic models, for the OpenAPI document (openapi.py).

They describe, they do not build: handlers return their dicts as before, so a model here cannot change an
answer. Each model forbids keys it does not name, so the document says exactly what a client gets, and a
test (tests/test_rest_openapi.py) validates real answers against these schemas: a handler that adds a key
without adding it here fails it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel
from pydantic.alias_generators import to_camel


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=False)


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
