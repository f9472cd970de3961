"""Input types (EmailEngine's JSON bodies are valid variables) and their translation to service specs."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.scalars import JSON

from gql_mail.graphql.pacing import LimitsInput
from gql_mail.mail.compose import Address
from gql_mail.services.accounts import AccountPatch, AccountSpec, AuthSpec, ImapSpec, SmtpSpec
from gql_mail.services.oauth2_accounts import OAuth2Spec
from gql_mail.services.oauth2_apps import OAuth2AppSpec
from gql_mail.services.submission import AttachmentSpec, Envelope, SubmitSpec
from gql_mail.services.webhooks import WebhookSpec


@strawberry.input
class MailAuthInput:
    user: str
    pass_: str | None = strawberry.field(name="pass", default=None)
    access_token: str | None = None

    def to_spec(self) -> AuthSpec:
        return AuthSpec(user=self.user, password=self.pass_, access_token=self.access_token)


@strawberry.input
class TlsInput:
    reject_unauthorized: bool | None = None
    require_tls: bool | None = strawberry.field(
        name="requireTLS",
        default=None,
        description=(
            "true: never log in without TLS (no STARTTLS offered, or a failed upgrade, is ETLS); "
            "null: the deployment's default (GQL_MAIL_REQUIRE_TLS)."
        ),
    )


def _reject(tls: TlsInput | None) -> bool | None:
    return tls.reject_unauthorized if tls else None


def _require(tls: TlsInput | None) -> bool | None:
    return tls.require_tls if tls else None


@strawberry.input
class ImapInput:
    host: str | None = None
    port: int | None = None
    secure: bool | None = None
    auth: MailAuthInput | None = None
    tls: TlsInput | None = None
    disabled: bool | None = None
    sent_mail_path: str | None = None

    def to_spec(self) -> ImapSpec:
        return ImapSpec(
            host=self.host,
            port=self.port,
            secure=self.secure,
            auth=self.auth.to_spec() if self.auth else None,
            reject_unauthorized=_reject(self.tls),
            require_tls=_require(self.tls),
            disabled=self.disabled,
            sent_mail_path=self.sent_mail_path,
        )


@strawberry.input
class SmtpInput:
    host: str
    port: int
    auth: MailAuthInput | None = strawberry.field(
        default=None, description="Required unless the account logs in with oauth2."
    )
    secure: bool | None = strawberry.field(
        default=None, description="true: implicit TLS; false: plain, STARTTLS where offered."
    )
    tls: TlsInput | None = None

    def to_spec(self) -> SmtpSpec:
        return SmtpSpec(
            host=self.host,
            port=self.port,
            auth=self.auth.to_spec() if self.auth else None,
            secure=self.secure,
            reject_unauthorized=_reject(self.tls),
            require_tls=_require(self.tls),
        )


@strawberry.input
class OAuth2AuthInput:
    user: str


@strawberry.input(
    description=(
        "EmailEngine's oauth2 object: the OAuth2 app (`provider`, an app id), the mailbox user and the "
        "tokens of its consent. SMTP and IMAP then log in with XOAUTH2, at the provider's servers unless "
        "smtp/imap name others. Tokens are stored encrypted and never shown."
    )
)
class OAuth2Input:
    provider: strawberry.ID
    auth: OAuth2AuthInput
    access_token: str | None = None
    refresh_token: str | None = None
    expires: datetime | None = None

    def to_spec(self) -> OAuth2Spec:
        return OAuth2Spec(
            app=str(self.provider),
            user=self.auth.user,
            access_token=self.access_token,
            refresh_token=self.refresh_token,
            expires=self.expires,
        )


@strawberry.input(description="The same object as EmailEngine's POST /v1/account body.")
class RegisterAccountInput:
    account: strawberry.ID
    name: str
    email: str
    smtp: SmtpInput | None = strawberry.field(default=None, description="Required unless oauth2 is given.")
    imap: ImapInput | None = strawberry.field(
        default=None, description="Omitted, or {disabled: true}: send-only."
    )
    limits: LimitsInput | None = None
    oauth2: OAuth2Input | None = None

    def to_spec(self) -> AccountSpec:
        return AccountSpec(
            account=str(self.account),
            name=self.name,
            email=self.email,
            smtp=self.smtp.to_spec() if self.smtp else None,
            imap=self.imap.to_spec() if self.imap else None,
            oauth2=self.oauth2.to_spec() if self.oauth2 else None,
        )


@strawberry.input(
    description="Fields left out keep their value; a given imap or smtp object replaces the old one."
)
class UpdateAccountInput:
    name: str | None = None
    email: str | None = None
    smtp: SmtpInput | None = None
    imap: ImapInput | None = None
    limits: LimitsInput | None = strawberry.field(
        default=None, description="Replaces the account's limits; {} (all null): back to its provider's."
    )
    oauth2: OAuth2Input | None = strawberry.field(
        default=None, description="New tokens (or another app or user); ends an AUTHENTICATION_ERROR."
    )

    def to_patch(self) -> AccountPatch:
        return AccountPatch(
            name=self.name,
            email=self.email,
            smtp=self.smtp.to_spec() if self.smtp else None,
            imap=self.imap.to_spec() if self.imap else None,
            oauth2=self.oauth2.to_spec() if self.oauth2 else None,
        )


@strawberry.input(description="EmailEngine's POST /v1/oauth2 body (providers gmail, outlook, generic).")
class OAuth2AppInput:
    name: str
    provider: str
    client_id: str
    client_secret: str | None = strawberry.field(default=None, description="Stored encrypted, never shown.")
    description: str | None = None
    enabled: bool = True
    base_scopes: str | None = strawberry.field(
        default=None, description='"imap" (XOAUTH2 for IMAP and SMTP).'
    )
    scopes: list[str] | None = strawberry.field(default=None, description="Scopes besides the provider's.")
    redirect_url: str | None = None
    authority: str | None = strawberry.field(
        default=None, description="Microsoft: common, organizations, consumers or a tenant id."
    )
    token_url: str | None = strawberry.field(
        default=None, description="Overrides the provider's token endpoint; required for generic."
    )
    authorize_url: str | None = None

    def to_spec(self) -> OAuth2AppSpec:
        return OAuth2AppSpec(
            name=self.name,
            provider=self.provider,
            client_id=self.client_id,
            client_secret=self.client_secret,
            description=self.description,
            enabled=self.enabled,
            base_scopes=self.base_scopes,
            scopes=tuple(self.scopes or ()),
            redirect_url=self.redirect_url,
            authority=self.authority,
            token_url=self.token_url,
            authorize_url=self.authorize_url,
        )


@strawberry.input
class AddressInput:
    address: str
    name: str | None = None

    def to_address(self) -> Address:
        return Address(address=self.address, name=self.name)


@strawberry.input
class AttachmentInput:
    content: str = strawberry.field(description="Base64.")
    filename: str | None = None
    content_type: str | None = None
    cid: str | None = None
    content_disposition: str | None = strawberry.field(
        default=None, description="Content-Disposition: inline or attachment (default: inline with a cid)."
    )

    def to_spec(self) -> AttachmentSpec:
        return AttachmentSpec(
            content=self.content,
            filename=self.filename,
            content_type=self.content_type,
            cid=self.cid,
            disposition=self.content_disposition,
        )


@strawberry.input(description="The SMTP envelope, over the one read from the message's headers.")
class EnvelopeInput:
    from_: str | None = strawberry.field(name="from", default=None)
    to: list[str] | None = None

    def to_envelope(self) -> Envelope:
        return Envelope(from_=self.from_, to=tuple(self.to or ()))


def _addresses(values: list[AddressInput] | None) -> tuple[Address, ...]:
    return tuple(a.to_address() for a in values or ())


@strawberry.input(description="The same object as EmailEngine's POST /v1/account/{account}/submit body.")
class SubmitMessageInput:
    from_: AddressInput | None = strawberry.field(
        name="from", default=None, description="Defaults to the account's name and email."
    )
    to: list[AddressInput] | None = None
    cc: list[AddressInput] | None = None
    bcc: list[AddressInput] | None = None
    reply_to: list[AddressInput] | None = None
    subject: str | None = None
    text: str | None = None
    html: str | None = None
    attachments: list[AttachmentInput] | None = None
    headers: JSON | None = strawberry.field(default=None, description="Extra headers: header name -> value.")
    message_id: str | None = None
    send_at: datetime | None = strawberry.field(default=None, description="In the future: a scheduled send.")
    delivery_attempts: int | None = None
    copy: bool | None = strawberry.field(
        default=None, description="Append the sent message to the Sent folder."
    )
    idempotency_key: str | None = None
    preview_text: str | None = strawberry.field(
        default=None,
        description="Preheader text: a hidden div in the html, as EmailEngine puts it; ignored without html.",
    )
    raw: str | None = strawberry.field(
        default=None,
        description="A ready RFC 5322 message in base64, sent as it is (Message-ID, Date and MIME-Version "
        "added when missing, Bcc removed); not with the fields that compose a message.",
    )
    envelope: EnvelopeInput | None = None
    sent_mail_path: str | None = strawberry.field(
        default=None, description="The folder of this message's Sent copy, over the account's."
    )

    def to_spec(self) -> SubmitSpec:
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
            copy=self.copy,
            idempotency_key=self.idempotency_key,
            preview_text=self.preview_text,
            raw=self.raw,
            envelope=self.envelope.to_envelope() if self.envelope else None,
            sent_mail_path=self.sent_mail_path,
        )


@strawberry.input
class WebhookInput:
    url: str
    events: list[str] | None = strawberry.field(default=None, description="Default: all events.")
    account: strawberry.ID | None = strawberry.field(default=None, description="Only this account's events.")
    secret: str | None = strawberry.field(
        default=None, description="HMAC-SHA256 key for X-GqlMail-Signature and X-GqlMail-Signature-V2."
    )

    def to_spec(self) -> WebhookSpec:
        return WebhookSpec(
            url=self.url,
            events=self.events,
            account=str(self.account) if self.account else None,
            secret=self.secret,
        )
