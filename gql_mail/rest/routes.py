"""The /v1 routes: EmailEngine's paths, each method onto its handler (endpoint.py runs them)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, Router
from starlette.types import Receive, Scope, Send

from gql_mail.http_edge.gate import RequestGate
from gql_mail.rest import accounts, answers, boom, oauth2, outbox, settings, stats, submit, tokens
from gql_mail.rest.docs import docs_page, docs_static_app
from gql_mail.rest.endpoint import Front, Operation, Resource
from gql_mail.rest.models import (
    AccountsQuery,
    CreateAccount,
    CreateOAuth2App,
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
from gql_mail.rest.openapi import openapi_document
from gql_mail.runtime import Runtime


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    response: Response = boom.boom(404, "Not Found")
    await response(scope, receive, send)


def rest_app(runtime: Runtime, gate: RequestGate) -> Router:
    """The ASGI app to mount at /v1. `gate`: the process's token and body rules, shared with /graphql."""
    front = Front(runtime, gate)

    def resource(path: str, **operations: Operation) -> Route:
        return Route(path, Resource(front, operations, route="/v1" + path))

    # Each token operation has two paths (see below): one Operation for both.
    make_token = Operation(tokens.create_token, write=True, body=CreateToken, response=answers.TokenCreated)
    revoke_token = Operation(tokens.delete_token, write=True, response=answers.TokenDeleted)

    router = Router(
        routes=[
            resource(
                "/account",
                POST=Operation(
                    accounts.create_account,
                    write=True,
                    body=CreateAccount,
                    response=answers.AccountCreatedOrRedirect,
                ),
            ),
            resource(
                "/account/{account}",
                GET=Operation(accounts.get_account, response=answers.AccountDetails),
                PUT=Operation(
                    accounts.update_account, write=True, body=UpdateAccount, response=answers.AccountUpdated
                ),
                DELETE=Operation(
                    accounts.delete_account, write=True, query=DeleteQuery, response=answers.AccountDeleted
                ),
            ),
            resource(
                "/account/{account}/reconnect",
                PUT=Operation(
                    accounts.reconnect_account, write=True, body=Reconnect, response=answers.Reconnected
                ),
            ),
            resource(
                "/account/{account}/submit",
                POST=Operation(
                    submit.submit_message,
                    write=True,
                    body=SubmitMessage,
                    response=answers.Submitted,
                    refusals=(503,),
                ),
            ),
            resource(
                "/accounts",
                GET=Operation(accounts.list_accounts, query=AccountsQuery, response=answers.AccountList),
            ),
            resource(
                "/oauth2",
                GET=Operation(oauth2.list_apps, query=PageQuery, response=answers.OAuth2AppList),
                POST=Operation(
                    oauth2.create_app, write=True, body=CreateOAuth2App, response=answers.OAuth2AppCreated
                ),
            ),
            resource(
                "/oauth2/{app}",
                GET=Operation(oauth2.get_app, response=answers.OAuth2AppEntry),
                DELETE=Operation(oauth2.delete_app, write=True, response=answers.OAuth2AppDeleted),
            ),
            resource(
                "/outbox", GET=Operation(outbox.list_outbox, query=PageQuery, response=answers.OutboxList)
            ),
            resource(
                "/outbox/{queueId}",
                GET=Operation(outbox.get_outbox_entry, response=answers.OutboxEntry),
                DELETE=Operation(outbox.delete_outbox_entry, write=True, response=answers.OutboxDeleted),
            ),
            resource(
                "/settings",
                GET=Operation(settings.get_settings, query=SettingsQuery, response=answers.Settings),
                POST=Operation(
                    settings.update_settings,
                    write=True,
                    body=UpdateSettings,
                    response=answers.SettingsUpdated,
                ),
            ),
            resource("/stats", GET=Operation(stats.get_stats, query=StatsQuery, response=answers.Stats)),
            # Token management is an administrator's: an api-scope token for every method. EmailEngine 2.79
            # moved POST /v1/token and DELETE /v1/token/{token} to /v1/tokens; both spellings work.
            resource(
                "/tokens",
                GET=Operation(tokens.list_tokens, write=True, query=PageQuery, response=answers.TokenList),
                POST=make_token,
            ),
            resource("/token", POST=make_token),
            resource("/tokens/{token}", DELETE=revoke_token),
            resource("/token/{token}", DELETE=revoke_token),
        ],
        default=_not_found,
    )
    _add_docs(router)
    return router


def _add_docs(router: Router) -> None:
    """`/openapi.json`, describing the router's resources (built once, from the routes above, so a route
    added there is in it), and the Swagger UI page `/docs` with its assets."""
    document = openapi_document(router.routes)

    async def openapi_json(request: Request) -> Response:
        """Served without a token, as EmailEngine serves its /swagger.json."""
        return JSONResponse(document)

    async def docs(request: Request) -> Response:
        return docs_page(request)

    router.routes += [
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Mount("/docs/static", docs_static_app()),
    ]
