"""EmailEngine's request bodies and query strings as pydantic models, and their translation to the
services' specs (the same specs GraphQL's inputs build).

Strict like EmailEngine's Joi schemas: an unknown key is refused ("\\"foo\\" is not allowed"). A key
EmailEngine knows but gql-mail cannot honour yet is declared `Unsupported`: refused by name ("is not
supported by gql-mail"), never silently ignored; `UnsupportedFlag` lets the value that asks for nothing
(false, null) through. Sizes, formats and every other rule are the services' (services/validation.py,
services/submission.py), so both APIs refuse the same input for the same reason.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from gql_mail.mail.compose import Address
from gql_mail.services.accounts import AccountPatch, AccountSpec, AuthSpec, ImapSpec, SmtpSpec
from gql_mail.services.oauth2_accounts import OAuth2Spec
from gql_mail.services.oauth2_apps import OAuth2AppSpec
from gql_mail.services.submission import AttachmentSpec, Envelope, SubmitSpec


def _refuse(value: Any) -> None:
    if value is not None:
        raise PydanticCustomError("unsupported", "not supported by gql-mail")


def _refuse_unless_off(value: Any) -> None:
    if value is not None and value is not False:
        raise PydanticCustomError("unsupported", "not supported by gql-mail")


Unsupported = Annotated[Any, BeforeValidator(_refuse)]
UnsupportedFlag = Annotated[Any, BeforeValidator(_refuse_unless_off)]


def _false_is_none(value: Any) -> Any:
    """EmailEngine's `imap: false`, `smtp: false`, `auth: false`: the block is absent."""
    return None if value is False else value


def _single(value: Any) -> Any:
    """Joi's `.single()`: one value where a list is taken."""
    return [value] if isinstance(value, str) else value


def _one_or_many(value: Any) -> Any:
    """EmailEngine accepts one address object where it takes a list."""
    return [value] if isinstance(value, dict) else value


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=False)


# --- accounts ----------------------------------------------------------------------------------------


class Auth(Body):
    user: str
    pass_: str | None = Field(default=None, alias="pass")
    access_token: str | None = None

    def to_spec(self) -> AuthSpec:
        return AuthSpec(user=self.user, password=self.pass_, access_token=self.access_token)


class Tls(Body):
    reject_unauthorized: bool | None = None
    require_tls: bool | None = Field(default=None, alias="requireTLS")  # gql-mail's own
    min_version: Unsupported = None


MaybeAuth = Annotated[Auth | None, BeforeValidator(_false_is_none)]


class Imap(Body):
    host: str | None = None
    port: int | None = None
    secure: bool | None = None
    auth: MaybeAuth = None
    tls: Tls | None = None
    disabled: bool | None = None
    sent_mail_path: str | None = None
    partial: bool = False
    use_auth_server: UnsupportedFlag = None
    disable_imap4rev2: UnsupportedFlag = Field(default=None, alias="disableIMAP4rev2")
    resync_delay: Unsupported = None
    drafts_mail_path: Unsupported = None
    junk_mail_path: Unsupported = None
    trash_mail_path: Unsupported = None
    archive_mail_path: Unsupported = None

    def to_spec(self) -> ImapSpec:
        return ImapSpec(
            host=self.host,
            port=self.port,
            secure=self.secure,
            auth=self.auth.to_spec() if self.auth else None,
            reject_unauthorized=self.tls.reject_unauthorized if self.tls else None,
            require_tls=self.tls.require_tls if self.tls else None,
            disabled=self.disabled,
            sent_mail_path=self.sent_mail_path,
            partial=self.partial,
        )


class Smtp(Body):
    host: str | None = None
    port: int | None = None
    secure: bool | None = None
    auth: MaybeAuth = None
    tls: Tls | None = None
    use_auth_server: UnsupportedFlag = None
    partial: bool = False

    def to_spec(self) -> SmtpSpec:
        return SmtpSpec(
            host=self.host,
            port=self.port,
            auth=self.auth.to_spec() if self.auth else None,
            secure=self.secure,
            reject_unauthorized=self.tls.reject_unauthorized if self.tls else None,
            require_tls=self.tls.require_tls if self.tls else None,
            partial=self.partial,
        )


class OAuth2Auth(Body):
    user: str
    delegated_user: Unsupported = None
    delegated_account: Unsupported = None


class OAuth2(Body):
    """EmailEngine's `oauth2` object: `provider` is the OAuth2 app's id."""

    provider: str | None = None
    auth: OAuth2Auth | None = None
    access_token: str | None = Field(default=None, max_length=16384)
    refresh_token: str | None = Field(default=None, max_length=16384)
    expires: datetime | None = None
    # The consent flow (POST /v1/account only): answer the provider's consent URL instead of registering;
    # the user is sent to `redirectUrl` once the account is registered.
    authorize: bool = False
    redirect_url: str | None = Field(default=None, max_length=2048)
    use_auth_server: UnsupportedFlag = None

    def to_spec(self) -> OAuth2Spec:
        return OAuth2Spec(
            app=self.provider or "",
            user=self.auth.user if self.auth else None,
            access_token=self.access_token,
            refresh_token=self.refresh_token,
            expires=self.expires,
        )


MaybeOAuth2 = Annotated[OAuth2 | None, BeforeValidator(_false_is_none)]
# `imap: false` is a send-only account, as `imap: {disabled: true}`.
MaybeImap = Annotated[Imap | None, BeforeValidator(lambda v: {"disabled": True} if v is False else v)]
MaybeSmtp = Annotated[Smtp | None, BeforeValidator(_false_is_none)]


class AccountSettings(Body):
    """What `POST /v1/account` and `PUT /v1/account/{account}` share."""

    name: str | None = None
    email: str | None = None
    imap: MaybeImap = None
    smtp: MaybeSmtp = None
    oauth2: MaybeOAuth2 = None
    path: Unsupported = None
    subconnections: Unsupported = None
    webhooks: Unsupported = None
    copy_: Unsupported = Field(default=None, alias="copy")
    logs: UnsupportedFlag = None
    notify_from: Unsupported = None
    proxy: Unsupported = None
    smtp_ehlo_name: Unsupported = None
    locale: Unsupported = None
    tz: Unsupported = None
    webhooks_custom_headers: Unsupported = None
    expected_email: Unsupported = None

    def to_patch(self) -> AccountPatch:
        return AccountPatch(
            name=self.name,
            email=self.email,
            smtp=self.smtp.to_spec() if self.smtp else None,
            imap=self.imap.to_spec() if self.imap else None,
            oauth2=self.oauth2.to_spec() if self.oauth2 else None,
        )


class CreateAccount(AccountSettings):
    """`POST /v1/account`. `account: null` lets the service generate the id, as EmailEngine does."""

    account: str | None
    name: str
    sync_from: Unsupported = None
    imap_indexer: Unsupported = None

    def to_spec(self) -> AccountSpec:
        return AccountSpec(
            account=self.account or "",
            name=self.name,
            email=self.email,
            smtp=self.smtp.to_spec() if self.smtp else None,
            imap=self.imap.to_spec() if self.imap else None,
            oauth2=self.oauth2.to_spec() if self.oauth2 else None,
        )


class UpdateAccount(AccountSettings):
    """`PUT /v1/account/{account}`: fields left out keep their value; a given imap or smtp replaces it."""


class Reconnect(Body):
    reconnect: bool = False


class AccountsQuery(Body):
    """`GET /v1/accounts`. `state` is in EmailEngine's spelling (states.py)."""

    page: int = Field(default=0, ge=0, le=1048576)
    page_size: int = Field(default=20, ge=1, le=1000)
    state: str | None = None
    query: str | None = None


class DeleteQuery(Body):
    """`DELETE /v1/account/{account}`: `revoke` undoes an OAuth2 grant in EmailEngine; gql-mail keeps
    none, so there is nothing to revoke."""

    revoke: bool = False


class PageQuery(Body):
    """A listing's page (0-based) and its size, EmailEngine's bounds."""

    page: int = Field(default=0, ge=0, le=1048576)
    page_size: int = Field(default=20, ge=1, le=1000)


class NoQuery(Body):
    """Routes without query parameters refuse any (as EmailEngine's Joi does)."""


# --- submit ------------------------------------------------------------------------------------------


class MailAddress(Body):
    address: str
    name: str | None = None

    def to_address(self) -> Address:
        return Address(address=self.address, name=self.name)


Addresses = Annotated[list[MailAddress] | None, BeforeValidator(_one_or_many)]


class SubmitAttachment(Body):
    content: str
    filename: str | None = None
    content_type: str | None = None
    cid: str | None = None
    encoding: Literal["base64"] = "base64"
    content_disposition: Literal["inline", "attachment"] | None = None
    reference: Unsupported = None

    def to_spec(self) -> AttachmentSpec:
        return AttachmentSpec(
            content=self.content,
            filename=self.filename,
            content_type=self.content_type,
            cid=self.cid,
            disposition=self.content_disposition,
        )


class SubmitEnvelope(Body):
    """The SMTP envelope (`MAIL FROM` and `RCPT TO`), over the one read from the message."""

    from_: str | None = Field(default=None, alias="from")
    to: Annotated[list[str], BeforeValidator(_single)] = Field(default_factory=list)

    def to_envelope(self) -> Envelope:
        return Envelope(from_=self.from_, to=tuple(self.to))


def _addresses(values: list[MailAddress] | None) -> tuple[Address, ...]:
    return tuple(a.to_address() for a in values or ())


class SubmitMessage(Body):
    """`POST /v1/account/{account}/submit`. The `Idempotency-Key` header is passed to `to_spec`."""

    from_: MailAddress | None = Field(default=None, alias="from")
    to: Addresses = None
    cc: Addresses = None
    bcc: Addresses = None
    reply_to: Addresses = None
    subject: str | None = None
    text: str | None = None
    html: str | None = None
    attachments: list[SubmitAttachment] | None = None
    headers: dict[str, Any] | None = None
    message_id: str | None = None
    send_at: datetime | None = None
    delivery_attempts: int | None = None
    copy_: bool | None = Field(default=None, alias="copy")
    sent_mail_path: str | None = None
    preview_text: str | None = None
    raw: str | None = None
    envelope: SubmitEnvelope | None = None
    template: Unsupported = None
    render: UnsupportedFlag = None
    mail_merge: Unsupported = None
    list_id: Unsupported = None
    reference: Unsupported = None
    tracking_enabled: UnsupportedFlag = None
    track_opens: UnsupportedFlag = None
    track_clicks: UnsupportedFlag = None
    base_url: Unsupported = None
    gateway: Unsupported = None
    dsn: Unsupported = None
    proxy: Unsupported = None
    local_address: Unsupported = None
    locale: Unsupported = None
    tz: Unsupported = None
    dry_run: bool = False
    use_queue: Unsupported = None

    def to_spec(self, idempotency_key: str | None) -> SubmitSpec:
        return SubmitSpec(
            from_=self.from_.to_address() if self.from_ else None,
            to=_addresses(self.to),
            cc=_addresses(self.cc),
            bcc=_addresses(self.bcc),
            reply_to=_addresses(self.reply_to),
            subject=self.subject,
            text=self.text,
            html=self.html,
            attachments=tuple(a.to_spec() for a in self.attachments or ()),
            headers=self.headers,
            message_id=self.message_id,
            send_at=self.send_at,
            delivery_attempts=self.delivery_attempts,
            copy=self.copy_,
            idempotency_key=idempotency_key,
            preview_text=self.preview_text,
            raw=self.raw,
            envelope=self.envelope.to_envelope() if self.envelope else None,
            sent_mail_path=self.sent_mail_path,
        )


# --- tokens ------------------------------------------------------------------------------------------


class CreateToken(Body):
    """`POST /v1/tokens`. gql-mail's tokens are instance-wide with one scope ("api", or gql-mail's own
    read-only "read" or scrape-only "metrics"); EmailEngine's narrowing fields are refused by name."""

    description: str
    scopes: Annotated[list[str], BeforeValidator(_single)] = Field(default_factory=lambda: ["api"])
    account: Unsupported = None
    metadata: Unsupported = None
    restrictions: Unsupported = None
    permissions: Unsupported = None
    expires: Unsupported = None
    ip: Unsupported = None


# --- settings ----------------------------------------------------------------------------------------


class SettingsQuery(Body):
    """`GET /v1/settings?key=true`: the settings asked for (EmailEngine answers only those)."""

    webhooks: bool = False
    webhooks_enabled: bool = False
    webhook_events: bool = False
    service_secret: bool = False
    event_types: bool = False


class UpdateSettings(Body):
    """`POST /v1/settings`: the settings gql-mail keeps; other EmailEngine settings are refused by name."""

    webhooks: str | None = None
    webhooks_enabled: bool | None = None
    webhook_events: list[str] | None = None
    service_secret: str | None = None
    webhooks_custom_headers: Unsupported = None
    notify_headers: Unsupported = None
    notify_text: Unsupported = None
    notify_text_size: Unsupported = None
    notify_web_safe_html: Unsupported = None
    notify_attachments: Unsupported = None
    notify_attachment_size: Unsupported = None
    notify_calendar_events: Unsupported = None
    inbox_new_only: Unsupported = None
    service_url: Unsupported = None
    track_clicks: Unsupported = None
    track_opens: Unsupported = None
    delivery_attempts: Unsupported = None
    queue_keep: Unsupported = None

    def given(self) -> dict[str, Any]:
        """The settings the body set, by EmailEngine's names (null included: it clears `webhooks`)."""
        return {to_camel(name): getattr(self, name) for name in sorted(self.model_fields_set)}


class StatsQuery(Body):
    """`GET /v1/stats`: `seconds` is the window of EmailEngine's event counters, which gql-mail does not
    keep; refused by name rather than ignored."""

    seconds: Unsupported = None


# --- OAuth2 apps ----------------------------------------------------------------------------------------


class CreateOAuth2App(Body):
    """`POST /v1/oauth2`. Providers: gmail, outlook, and generic (with `tokenUrl`, gql-mail's own, as are
    `tokenUrl`/`authorizeUrl` overrides for the others). EmailEngine's service accounts (gmailService,
    outlookService), mail.ru and Pub/Sub are not offered."""

    name: str = Field(max_length=256)
    provider: str
    description: str | None = Field(default=None, max_length=1024)
    title: Unsupported = None
    enabled: bool = True
    include_in_listing: UnsupportedFlag = None
    client_id: str = Field(max_length=1024)
    client_secret: str | None = Field(default=None, max_length=16384)
    base_scopes: str | None = None
    extra_scopes: list[str] = Field(default_factory=list, max_length=100)
    skip_scopes: Unsupported = None
    redirect_url: str | None = None
    authority: str | None = None
    cloud: Annotated[Any, BeforeValidator(lambda v: _refuse(v) if v not in (None, "global") else None)] = None
    token_url: str | None = None
    authorize_url: str | None = None
    service_client: Unsupported = None
    service_client_email: Unsupported = None
    service_key: Unsupported = None
    google_project_id: Unsupported = None
    google_workspace_accounts: UnsupportedFlag = None
    google_topic_name: Unsupported = None
    google_subscription_name: Unsupported = None
    pub_sub_app: Unsupported = None
    auth_method: Unsupported = None
    external_account: Unsupported = None

    def to_spec(self) -> OAuth2AppSpec:
        return OAuth2AppSpec(
            name=self.name,
            provider=self.provider,
            client_id=self.client_id,
            client_secret=self.client_secret,
            description=self.description,
            enabled=self.enabled,
            base_scopes=self.base_scopes,
            scopes=tuple(self.extra_scopes),
            redirect_url=self.redirect_url,
            authority=self.authority,
            token_url=self.token_url,
            authorize_url=self.authorize_url,
        )
