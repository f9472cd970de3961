"""The OAuth2 app handlers: EmailEngine's `/v1/oauth2` routes onto services/oauth2_apps.py."""

from __future__ import annotations

import math
from typing import Any

from gql_mail import models
from gql_mail.clock import utc
from gql_mail.events import iso
from gql_mail.rest.endpoint import Call
from gql_mail.rest.models import CreateOAuth2App, NoQuery, PageQuery
from gql_mail.services import oauth2_apps

# EmailEngine never shows a stored secret; it shows this in its place.
MASKED = "******"


def app_entry(row: models.OAuth2App) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "description": row.description,
        "provider": row.provider,
        "enabled": row.enabled,
        "created": iso(utc(row.created_at)),
        "updated": iso(utc(row.updated_at)),
        "clientId": row.client_id,
        "clientSecret": MASKED if row.client_secret_enc else None,
        "baseScopes": row.base_scopes,
        "extraScopes": list(row.scopes),
        "redirectUrl": row.redirect_url,
        "authority": row.authority,
        "tokenUrl": row.token_url,
        "authorizeUrl": row.authorize_url,
    }


async def create_app(call: Call[CreateOAuth2App, NoQuery]) -> dict[str, Any]:
    """`{id, created: true}`."""
    row = await oauth2_apps.create_app(call.runtime, call.body.to_spec())
    return {"id": row.id, "created": True}


async def list_apps(call: Call[None, PageQuery]) -> dict[str, Any]:
    query = call.query
    rows = await oauth2_apps.list_apps(call.runtime)
    start = query.page * query.page_size
    return {
        "total": len(rows),
        "page": query.page,
        "pages": math.ceil(len(rows) / query.page_size),
        "apps": [app_entry(row) for row in rows[start : start + query.page_size]],
    }


async def get_app(call: Call[None, NoQuery]) -> dict[str, Any]:
    row = await oauth2_apps.get_app(call.runtime, call.path["app"])
    return {**app_entry(row), "accounts": await oauth2_apps.count_accounts(call.runtime, row.id)}


async def delete_app(call: Call[None, NoQuery]) -> dict[str, Any]:
    """An app accounts still use is not deleted (409): they could not refresh their tokens any more."""
    app = call.path["app"]
    return {"id": app, "deleted": await oauth2_apps.delete_app(call.runtime, app), "accounts": 0}
