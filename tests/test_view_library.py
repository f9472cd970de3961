"""gql_mail/graphql/view.py, ws_handlers.py and ws_adapter.py extend Strawberry's view and websocket
handlers through undocumented internals; a release without them fails here, by name."""

from __future__ import annotations

import inspect

from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.http.async_base_view import AsyncWebSocketAdapter
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler


def _missing(cls: type, methods: tuple[str, ...], set_in_init: tuple[str, ...]) -> list[str]:
    missing = [name for name in methods if not callable(getattr(cls, name, None))]
    init = inspect.getsource(vars(cls)["__init__"])
    missing += [name for name in set_in_init if f"self.{name} " not in init and f"self.{name}:" not in init]
    return [f"{cls.__name__}.{name}" for name in missing]


def test_strawberry_still_has_what_the_view_relies_on() -> None:
    missing = _missing(
        BaseGraphQLTransportWSHandler,
        (
            "handle",
            "handle_message",
            "handle_subscribe",
            "handle_invalid_message",
            "run_operation",
            "send_message",
        ),
        ("operations", "connection_acknowledged", "max_subscriptions_per_connection", "context", "websocket"),
    )
    missing += _missing(
        BaseGraphQLWSHandler,
        ("handle", "handle_message", "handle_connection_init", "handle_start", "send_message"),
        ("tasks", "view", "context", "websocket"),
    )
    missing += _missing(
        Operation, ("send_operation_message",), ("id", "query", "operation_name", "variables")
    )
    missing += [
        f"GraphQL.{name}"
        for name in (
            "graphql_ws_handler_class",
            "graphql_transport_ws_handler_class",
            "websocket_adapter_class",
            "on_ws_connect",
            "pick_websocket_subprotocol",
            "decode_json",
            "parse_json",
            "parse_http_body",
            "run",
        )
        if not hasattr(GraphQL, name)
    ]
    missing += _missing(ASGIWebSocketAdapter, ("iter_json", "close"), ("ws",))
    missing += _missing(AsyncWebSocketAdapter, (), ("view",))
    assert not missing, f"Strawberry lacks {missing}"
