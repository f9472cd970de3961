"""OAuth2 accounts: what registering or updating one stores (app, user, encrypted tokens) and which mail
servers it logs in to. The tokens' life after that is services/oauth2_tokens.py's."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from gql_mail.models import Account, OAuth2App
from gql_mail.oauth2_providers import Provider, provider
from gql_mail.runtime import Runtime
from gql_mail.services import validation as v
from gql_mail.services.errors import BadInput


@dataclass(frozen=True)
class OAuth2Spec:
    """An OAuth2 mailbox (EmailEngine's `oauth2` object): the app (`provider`, an app id), the mailbox
    user, and the tokens the app's consent gave. SMTP and IMAP then log in with XOAUTH2, at the provider's
    servers unless the `smtp`/`imap` blocks name others (their `auth` is not used)."""

    app: str
    user: str | None
    access_token: str | None = field(default=None, repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    expires: datetime | None = None


@dataclass(frozen=True)
class OAuth2Login:
    """Who an OAuth2 account logs in as, and whose servers are its defaults."""

    user: str
    provider: Provider


async def oauth2_app(rt: Runtime, app_id: str) -> OAuth2App:
    """The app an account names; an unknown one is refused in EmailEngine's words."""
    async with rt.db.read() as session:
        app = await session.get(OAuth2App, app_id) if app_id else None
    if app is None:
        raise BadInput("Invalid or missing OAuth2 provider", field="oauth2.provider")
    return app


def apply_oauth2(rt: Runtime, row: Account, spec: OAuth2Spec, app: OAuth2App) -> OAuth2Login:
    """Store the OAuth2 app, user and tokens (encrypted); new tokens start afresh (a stored refusal, a
    backoff and a claim of an earlier refresh are forgotten)."""
    user = v.required_text(spec.user, "oauth2.auth.user", max_length=512)
    if not spec.access_token and not spec.refresh_token:
        raise BadInput("oauth2.accessToken or oauth2.refreshToken is required", field="oauth2.refreshToken")
    known = provider(app.provider)
    assert known is not None  # apps are checked at registration
    row.oauth2_app_id = app.id
    row.oauth2_user = user
    row.oauth2_access_token_enc = rt.secrets.maybe_encrypt(spec.access_token)
    row.oauth2_refresh_token_enc = rt.secrets.maybe_encrypt(spec.refresh_token)
    # Without an access token, the first use refreshes (see oauth2_tokens._usable).
    row.oauth2_expires = spec.expires if spec.access_token else None
    row.oauth2_token_version = (row.oauth2_token_version or 0) + 1
    row.oauth2_refreshing_until = row.oauth2_retry_at = row.oauth2_error = None
    row.oauth2_failures = 0
    return OAuth2Login(user=user, provider=known)


def stored_login(row: Account, app: OAuth2App | None) -> OAuth2Login | None:
    """The stored OAuth2 login of an account, for an update that changes its smtp/imap blocks only."""
    known = provider(app.provider) if app else None
    if known is None or row.oauth2_user is None:
        return None
    return OAuth2Login(user=row.oauth2_user, provider=known)
