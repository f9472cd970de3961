"""The token handlers: EmailEngine's access-token routes onto services/tokens.py."""

from __future__ import annotations

import math

from gql_mail import models
from gql_mail.clock import utc
from gql_mail.events import iso
from gql_mail.rest import answers
from gql_mail.rest.endpoint import Call
from gql_mail.rest.models import CreateToken, NoQuery, PageQuery
from gql_mail.services import tokens
from gql_mail.services.errors import BadInput


def token_entry(row: models.AccessToken) -> answers.TokenEntry:
    """An entry of `GET /v1/tokens`: never the token, only its id."""
    entry = answers.TokenEntry(
        id=row.id,
        account=None,
        description=row.description,
        scopes=[row.scope],
        created=iso(utc(row.created_at)),
    )
    if row.last_used_at is not None:
        entry.access = answers.TokenAccess(time=iso(utc(row.last_used_at)), ip=None)
    return entry


async def list_tokens(call: Call[None, PageQuery]) -> answers.TokenList:
    query = call.query
    found = await tokens.page_tokens(call.runtime, page=query.page, page_size=query.page_size)
    return answers.TokenList(
        account=None,
        total=found.total,
        page=query.page,
        pages=math.ceil(found.total / query.page_size),
        tokens=[token_entry(row) for row in found.tokens],
    )


async def create_token(call: Call[CreateToken, NoQuery]) -> answers.TokenCreated:
    """`{token, id}`: the only time the token is shown."""
    scopes = call.body.scopes
    if len(scopes) != 1:
        raise BadInput("scopes must hold one scope: gql-mail's tokens have one", field="scopes")
    try:
        row, token = await tokens.create_token(call.runtime, scopes[0], call.body.description)
    except BadInput as exc:
        raise BadInput(exc.message, field="scopes" if exc.field == "scope" else exc.field) from None
    return answers.TokenCreated(token=token, id=row.id)


async def delete_token(call: Call[None, NoQuery]) -> answers.TokenDeleted:
    """`{"deleted": true}`; false for a token (its id or the token itself) that is unknown or already
    revoked, as EmailEngine answers."""
    return answers.TokenDeleted(deleted=await tokens.revoke_reference(call.runtime, call.path["token"]))
