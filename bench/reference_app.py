"""Strawberry's own ceiling: a bare Strawberry app answering `query { hello }`, with the parse and
validation caches gql-mail also uses, served by uvicorn with the options `gql-mail serve` passes (see
gql_mail/cli.py: no log configuration of uvicorn's own, no access log, lifespan on, the same websocket
implementation and keep-alive). bench/http_ceiling.py measures gql-mail's requests against this one's.

    python bench/reference_app.py PORT
"""

from __future__ import annotations

import sys

import strawberry
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route, WebSocketRoute
from strawberry.asgi import GraphQL
from strawberry.extensions import ParserCache, ValidationCache


@strawberry.type
class Query:
    @strawberry.field
    def hello(self) -> str:
        return "world"


def app() -> Starlette:
    """Strawberry's view at /graphql of a Starlette app, as Strawberry's documentation mounts it (the view
    alone does not answer uvicorn's lifespan messages)."""
    schema = strawberry.Schema(query=Query, extensions=[ParserCache, ValidationCache])
    return Starlette(routes=[Route("/graphql", GraphQL(schema)), WebSocketRoute("/graphql", GraphQL(schema))])


def main(port: int) -> None:
    from gql_mail.config import Settings
    from gql_mail.graphql.frame_writer import WS_PROTOCOL

    uvicorn.run(
        app(),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        log_config=None,
        access_log=False,
        lifespan="on",
        ws=WS_PROTOCOL,
        timeout_keep_alive=Settings.model_fields["http_keep_alive_seconds"].default,
    )


if __name__ == "__main__":
    main(int(sys.argv[1]))
