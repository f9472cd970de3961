"""The account handlers: EmailEngine's account routes onto services/accounts.py."""

from __future__ import annotations

import math
from typing import Any

from gql_mail import models
from gql_mail.clock import utc
from gql_mail.events import iso
from gql_mail.rest.endpoint import Call
from gql_mail.rest.models import AccountsQuery, CreateAccount, DeleteQuery, NoQuery, Reconnect, UpdateAccount
from gql_mail.rest.states import FROM_EE_STATE, ee_state
from gql_mail.services import accounts, oauth2_consent
from gql_mail.services.errors import BadInput

# EmailEngine never shows a stored secret; it shows this in its place.
MASKED = "******"


def _auth(user: str | None, password: str | None, token: str | None) -> dict[str, Any]:
    auth: dict[str, Any] = {"user": user}
    if password:
        auth["pass"] = MASKED
    if token:
        auth["accessToken"] = MASKED
    return auth


def _last_error(row: models.Account) -> dict[str, Any] | None:
    if not row.last_error_message:
        return None
    return {"response": row.last_error_message, "serverResponseCode": row.last_error_code}


def account_summary(row: models.Account) -> dict[str, Any]:
    """An entry of `GET /v1/accounts`."""
    summary = {
        "account": row.id,
        "name": row.name,
        "email": row.email,
        "type": "sending" if row.imap_disabled else "imap",
        "state": ee_state(row.state),
        "lastError": _last_error(row),
    }
    if row.oauth2_app_id is not None:
        summary["app"] = row.oauth2_app_id
    return summary


def _oauth2(row: models.Account) -> dict[str, Any]:
    """An OAuth2 account's `oauth2` block, tokens masked as EmailEngine masks them."""
    expires = row.oauth2_expires if row.oauth2_access_token_enc else None  # none stored: no expiry
    shown: dict[str, Any] = {
        "provider": row.oauth2_app_id,
        "auth": {"user": row.oauth2_user},
        "expires": iso(utc(expires)) if expires else None,
    }
    if row.oauth2_access_token_enc:
        shown["accessToken"] = MASKED
    if row.oauth2_refresh_token_enc:
        shown["refreshToken"] = MASKED
    return shown


def account_details(row: models.Account) -> dict[str, Any]:
    """`GET /v1/account/{account}`: its settings (secrets masked) and its state."""
    smtp = {
        "host": row.smtp_host,
        "port": row.smtp_port,
        "secure": row.smtp_secure,
        "auth": _auth(row.smtp_user, row.smtp_pass_enc, row.smtp_token_enc),
        "tls": {"rejectUnauthorized": row.smtp_reject_unauthorized, "requireTLS": row.smtp_require_tls},
    }
    imap: dict[str, Any] = {"disabled": True}
    if not row.imap_disabled:
        imap = {
            "host": row.imap_host,
            "port": row.imap_port,
            "secure": row.imap_secure,
            "auth": _auth(row.imap_user, row.imap_pass_enc, row.imap_token_enc),
            "tls": {"rejectUnauthorized": row.imap_reject_unauthorized, "requireTLS": row.imap_require_tls},
            "sentMailPath": row.sent_mail_path,
        }
    details = {
        **account_summary(row),
        "sendOnly": row.imap_disabled,
        "imap": imap,
        "smtp": smtp,
        "connectedAt": iso(utc(row.connected_at)) if row.connected_at else None,
    }
    if row.oauth2_app_id is not None:
        details["oauth2"] = _oauth2(row)
    return details


async def create_account(call: Call[CreateAccount, NoQuery]) -> dict[str, Any]:
    """`POST /v1/account`: registers, or updates the account with that id (EmailEngine's upsert). With
    `oauth2.authorize: true`, only `{redirect}`: the provider's consent URL (services/oauth2_consent.py)."""
    oauth2 = call.body.oauth2
    if oauth2 is not None and oauth2.authorize:
        spec = call.body.to_spec()
        return {"redirect": await oauth2_consent.start_consent(call.runtime, spec, oauth2.redirect_url)}
    row, created = await accounts.upsert_account(call.runtime, call.body.to_spec())
    return {"account": row.id, "state": "new" if created else "existing"}


async def get_account(call: Call[None, NoQuery]) -> dict[str, Any]:
    return account_details(await accounts.get_account(call.runtime, call.path["account"]))


async def list_accounts(call: Call[None, AccountsQuery]) -> dict[str, Any]:
    query = call.query
    state = None
    if query.state is not None:
        state = FROM_EE_STATE.get(query.state)
        if state is None:
            known = ", ".join(FROM_EE_STATE)
            raise BadInput(f'"state" must be one of [{known}]', field="state")
    found = await accounts.page_accounts(
        call.runtime, page=query.page, page_size=query.page_size, state=state, query=query.query
    )
    return {
        "total": found.total,
        "page": query.page,
        "pages": math.ceil(found.total / query.page_size),
        "query": query.query or False,
        "state": query.state or "*",
        "accounts": [account_summary(row) for row in found.accounts],
    }


async def update_account(call: Call[UpdateAccount, NoQuery]) -> dict[str, Any]:
    if call.body.oauth2 is not None and call.body.oauth2.authorize:
        raise BadInput("oauth2.authorize is taken by POST /v1/account only", field="oauth2.authorize")
    row = await accounts.update_account(call.runtime, call.path["account"], call.body.to_patch())
    return {"account": row.id}


async def delete_account(call: Call[None, DeleteQuery]) -> dict[str, Any]:
    account = call.path["account"]
    return {"account": account, "deleted": await accounts.delete_account(call.runtime, account)}


async def reconnect_account(call: Call[Reconnect, NoQuery]) -> dict[str, Any]:
    """EmailEngine reconnects only when asked (`{"reconnect": true}`); either way an unknown account 404s."""
    if call.body.reconnect:
        await accounts.reconnect_account(call.runtime, call.path["account"])
    else:
        await accounts.get_account(call.runtime, call.path["account"])
    return {"reconnect": call.body.reconnect}
