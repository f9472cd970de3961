"""EmailEngine's consent flow: `oauth2.authorize: true` answers the provider's consent URL; the provider
sends the user back to gql-mail's `/oauth` with a code, which is exchanged for the account's first tokens,
and the account is registered (or updated) as if its tokens had been given.

The request waits in the `state` parameter itself, sealed with the deployment's secret (AES-GCM, the key of
secrets at rest): no table, any node can finish what another started, and nobody can forge or read it (it
names the account, its servers and where to send the user at the end). It expires after `CONSENT_TTL`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from authlib.oauth2.rfc6749.parameters import prepare_grant_uri

from gql_mail.crypto import DecryptionError
from gql_mail.oauth2_client import OAuth2Failure, exchange_code
from gql_mail.oauth2_providers import provider
from gql_mail.runtime import Runtime
from gql_mail.services.accounts import AccountSpec, ImapSpec, SmtpSpec, upsert_account
from gql_mail.services.errors import BadInput
from gql_mail.services.oauth2_accounts import OAuth2Spec, oauth2_app
from gql_mail.services.oauth2_apps import app_scopes, token_client
from gql_mail.services.oauth2_tokens import limits

CONSENT_TTL = timedelta(hours=1)
_VERSION = 1


@dataclass(frozen=True)
class ConsentDone:
    account: str
    created: bool
    # Where the user goes now (the `redirectUrl` of the request), or None.
    return_url: str | None


def _block(spec: SmtpSpec | ImapSpec | None) -> dict[str, Any] | None:
    if spec is None:
        return None
    block = asdict(spec)
    block.pop("auth", None)  # an OAuth2 account logs in with its tokens
    return block


async def start_consent(rt: Runtime, spec: AccountSpec, return_url: str | None) -> str:
    """The provider's consent URL for registering `spec` (its `oauth2` names the app; tokens none)."""
    assert spec.oauth2 is not None
    if return_url is not None and urlsplit(return_url).scheme not in ("http", "https"):
        raise BadInput("oauth2.redirectUrl must be an http(s) URL", field="oauth2.redirectUrl")
    app = await oauth2_app(rt, spec.oauth2.app)
    if not app.redirect_url:
        raise BadInput("the OAuth2 app has no redirectUrl for the consent flow", field="oauth2.provider")
    known = provider(app.provider)
    authorize = app.authorize_url or (known.authorize_endpoint(app.authority) if known else None)
    if authorize is None:
        raise BadInput("the OAuth2 app has no authorizeUrl", field="oauth2.provider")
    sealed = {
        "v": _VERSION,
        "at": rt.clock.now().isoformat(),
        "account": spec.account,
        "name": spec.name,
        "email": spec.email,
        "smtp": _block(spec.smtp),
        "imap": _block(spec.imap),
        "app": app.id,
        "user": spec.oauth2.user,
        "return": return_url,
    }
    extra: dict[str, str] = {}
    if app.provider == "gmail":  # a refresh token, and on every consent, not only the first
        extra.update(access_type="offline", prompt="consent")
    if spec.oauth2.user or spec.email:
        extra["login_hint"] = spec.oauth2.user or spec.email or ""
    return str(
        prepare_grant_uri(
            authorize,
            app.client_id,
            "code",
            redirect_uri=app.redirect_url,
            scope=" ".join(app_scopes(app)),
            state=rt.secrets.encrypt(json.dumps(sealed)),
            **extra,
        )
    )


def _unseal(rt: Runtime, state: str) -> dict[str, Any]:
    try:
        sealed = json.loads(rt.secrets.decrypt(state))
        started = datetime.fromisoformat(sealed["at"])
    except (DecryptionError, ValueError, KeyError, TypeError):
        raise BadInput("invalid OAuth2 state", field="state") from None
    if sealed.get("v") != _VERSION or rt.clock.now() - started > CONSENT_TTL:
        raise BadInput("the OAuth2 consent expired; start it again", field="state")
    return dict(sealed)


async def finish_consent(rt: Runtime, code: str, state: str) -> ConsentDone:
    """Exchange the provider's `code` and register the account the sealed `state` describes."""
    sealed = _unseal(rt, state)
    app = await oauth2_app(rt, str(sealed["app"]))
    if not app.redirect_url:
        raise BadInput("the OAuth2 app has no redirectUrl for the consent flow", field="oauth2.provider")
    try:
        grant = await exchange_code(
            token_client(rt, app), code, app.redirect_url, limits=limits(rt), now=rt.clock.now()
        )
    except OAuth2Failure as failure:
        rt.metrics.oauth2_refreshes.labels(app.provider, "refused" if failure.permanent else "failed").inc()
        raise BadInput(failure.message, field="code") from None
    rt.metrics.oauth2_refreshes.labels(app.provider, "ok").inc()
    spec = AccountSpec(
        account=sealed["account"] or "",
        name=sealed["name"],
        email=sealed["email"],
        smtp=SmtpSpec(auth=None, **sealed["smtp"]) if sealed["smtp"] else None,
        imap=ImapSpec(**sealed["imap"]) if sealed["imap"] else None,
        oauth2=OAuth2Spec(
            app=app.id,
            user=sealed["user"] or sealed["email"],
            access_token=grant.access_token,
            refresh_token=grant.refresh_token,
            expires=grant.expires,
        ),
    )
    row, created = await upsert_account(rt, spec)
    return ConsentDone(account=row.id, created=created, return_url=sealed["return"])
