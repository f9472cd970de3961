"""OAuth2 applications: registered once, then named by the OAuth2 accounts that use them.

The client secret is encrypted at rest and never shown. An app's endpoints are its provider's
(`oauth2_providers`) unless it gives its own `tokenUrl`/`authorizeUrl` (required for `generic`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlmodel import col

from gql_mail.ids import time_ordered_id
from gql_mail.models import Account, OAuth2App
from gql_mail.oauth2_client import TokenClient
from gql_mail.oauth2_providers import PROVIDERS, provider
from gql_mail.runtime import Runtime
from gql_mail.services import validation as v
from gql_mail.services.errors import BadInput, Conflict, NotFound
from gql_mail.services.unit import unit_of_work

BASE_SCOPES = ("imap",)  # XOAUTH2 over IMAP and SMTP; EmailEngine's `api`/`pubsub` are not offered


@dataclass(frozen=True)
class OAuth2AppSpec:
    name: str
    provider: str
    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    description: str | None = None
    enabled: bool = True
    base_scopes: str | None = None
    scopes: Sequence[str] = ()
    redirect_url: str | None = None
    authority: str | None = None
    token_url: str | None = None
    authorize_url: str | None = None


def _url(value: str | None, name: str) -> str | None:
    if value is None or value == "":
        return None
    text = v.no_control_chars(value, name, max_length=2048)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadInput(f"{name} must be an http(s) URL", field=name)
    return text


def _check(spec: OAuth2AppSpec) -> OAuth2AppSpec:
    known = provider(spec.provider)
    if known is None:
        names = ", ".join(PROVIDERS)
        raise BadInput(f'"provider" must be one of [{names}]', field="provider")
    v.required_text(spec.name, "name", max_length=256)
    v.required_text(spec.client_id, "clientId", max_length=1024)
    if spec.base_scopes is not None and spec.base_scopes not in BASE_SCOPES:
        raise BadInput(f'"baseScopes" must be one of [{", ".join(BASE_SCOPES)}]', field="baseScopes")
    for scope in spec.scopes:
        v.required_text(scope, "scopes", max_length=512)
    token_url = _url(spec.token_url, "tokenUrl")
    authorize_url = _url(spec.authorize_url, "authorizeUrl")
    if known.token_url is None and token_url is None:
        raise BadInput(f"tokenUrl is required for the {known.name} provider", field="tokenUrl")
    if spec.authority is not None:
        v.required_text(spec.authority, "authority", max_length=256)
    return replace(spec, token_url=token_url, authorize_url=authorize_url)


async def create_app(rt: Runtime, spec: OAuth2AppSpec) -> OAuth2App:
    """Register an app; its id is generated."""
    spec = _check(spec)
    now = rt.clock.now()
    row = OAuth2App(
        id=time_ordered_id(),
        name=spec.name,
        description=v.no_control_chars(spec.description, "description", max_length=1024)
        if spec.description
        else None,
        provider=spec.provider,
        enabled=spec.enabled,
        client_id=spec.client_id,
        client_secret_enc=rt.secrets.maybe_encrypt(spec.client_secret),
        base_scopes=spec.base_scopes or "imap",
        scopes=list(spec.scopes),
        redirect_url=_url(spec.redirect_url, "redirectUrl"),
        authority=spec.authority,
        token_url=spec.token_url,
        authorize_url=spec.authorize_url,
        created_at=now,
        updated_at=now,
    )
    async with unit_of_work(rt) as uow:
        uow.session.add(row)
    return row


async def get_app(rt: Runtime, app_id: str) -> OAuth2App:
    async with rt.db.read() as session:
        row = await session.get(OAuth2App, app_id)
    if row is None:
        raise NotFound("Document was not found", field="app")
    return row


async def list_apps(rt: Runtime) -> Sequence[OAuth2App]:
    async with rt.db.read() as session:
        statement = select(OAuth2App).order_by(col(OAuth2App.created_at), col(OAuth2App.id))
        return (await session.execute(statement)).scalars().all()


async def count_accounts(rt: Runtime, app_id: str) -> int:
    """How many accounts log in with the app."""
    async with rt.db.read() as session:
        return await _count_accounts(session, app_id)


async def _count_accounts(session: Any, app_id: str) -> int:
    used = select(func.count()).select_from(Account).where(col(Account.oauth2_app_id) == app_id)
    return int((await session.execute(used)).scalar_one())


async def delete_app(rt: Runtime, app_id: str) -> bool:
    """Delete an app no account uses (CONFLICT otherwise: its accounts could not refresh any more)."""
    async with unit_of_work(rt) as uow:
        row = await uow.session.get(OAuth2App, app_id)
        if row is None:
            raise NotFound("Document was not found", field="app")
        if await _count_accounts(uow.session, app_id):
            raise Conflict("the OAuth2 app is used by accounts; delete or change them first", field="app")
        await uow.session.delete(row)
    return True


def token_client(rt: Runtime, app: OAuth2App) -> TokenClient:
    """The app's token endpoint and credentials, decrypted for one token request."""
    known = provider(app.provider)
    url = app.token_url or (known.token_endpoint(app.authority) if known else None)
    if url is None:  # refused at registration; a row edited by hand
        raise BadInput(f"the OAuth2 app {app.id} has no token URL", field="tokenUrl")
    return TokenClient(
        token_url=url,
        client_id=app.client_id,
        client_secret=rt.secrets.maybe_decrypt(app.client_secret_enc),
        provider=app.provider,
    )


def app_scopes(app: OAuth2App) -> list[str]:
    known = provider(app.provider)
    base = list(known.scopes) if known else []
    return base + [s for s in app.scopes if s not in base]
