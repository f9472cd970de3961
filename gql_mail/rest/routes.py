"""The /v1 routes: EmailEngine's paths, each method onto its handler (endpoint.py runs them)."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send

from gql_mail.http_edge.gate import RequestGate
from gql_mail.rest import accounts, boom, outbox, settings, stats, submit, tokens
from gql_mail.rest.endpoint import Front, Operation, Resource
from gql_mail.rest.models import (
    AccountsQuery,
    CreateAccount,
    CreateToken,
    DeleteQuery,
    PageQuery,
    Reconnect,
    SettingsQuery,
    StatsQuery,
    SubmitMessage,
    UpdateAccount,
    UpdateSettings,
)
from gql_mail.runtime import Runtime


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    response: Response = boom.boom(404, "Not Found")
    await response(scope, receive, send)


def rest_app(runtime: Runtime, gate: RequestGate) -> Router:
    """The ASGI app to mount at /v1. `gate`: the process's token and body rules, shared with /graphql."""
    front = Front(runtime, gate)

    def resource(path: str, **operations: Operation) -> Route:
        return Route(path, Resource(front, operations))

    return Router(
        routes=[
            resource("/account", POST=Operation(accounts.create_account, write=True, body=CreateAccount)),
            resource(
                "/account/{account}",
                GET=Operation(accounts.get_account),
                PUT=Operation(accounts.update_account, write=True, body=UpdateAccount),
                DELETE=Operation(accounts.delete_account, write=True, query=DeleteQuery),
            ),
            resource(
                "/account/{account}/reconnect",
                PUT=Operation(accounts.reconnect_account, write=True, body=Reconnect),
            ),
            resource(
                "/account/{account}/submit",
                POST=Operation(submit.submit_message, write=True, body=SubmitMessage),
            ),
            resource("/accounts", GET=Operation(accounts.list_accounts, query=AccountsQuery)),
            resource("/outbox", GET=Operation(outbox.list_outbox, query=PageQuery)),
            resource(
                "/outbox/{queueId}",
                GET=Operation(outbox.get_outbox_entry),
                DELETE=Operation(outbox.delete_outbox_entry, write=True),
            ),
            resource(
                "/settings",
                GET=Operation(settings.get_settings, query=SettingsQuery),
                POST=Operation(settings.update_settings, write=True, body=UpdateSettings),
            ),
            resource("/stats", GET=Operation(stats.get_stats, query=StatsQuery)),
            # Token management is an administrator's: an api-scope token for every method. EmailEngine 2.79
            # moved POST /v1/token and DELETE /v1/token/{token} to /v1/tokens; both spellings work.
            resource(
                "/tokens",
                GET=Operation(tokens.list_tokens, write=True, query=PageQuery),
                POST=Operation(tokens.create_token, write=True, body=CreateToken),
            ),
            resource("/token", POST=Operation(tokens.create_token, write=True, body=CreateToken)),
            resource("/tokens/{token}", DELETE=Operation(tokens.delete_token, write=True)),
            resource("/token/{token}", DELETE=Operation(tokens.delete_token, write=True)),
        ],
        default=_not_found,
    )
