"""The GraphQL operation's name on the HTTP request's metrics (http_edge/request_metrics.py).

An extension because only the parsed document knows the name when the client sent none in the body
(`operationName` is optional); Strawberry's execution context resolves it either way. Websocket operations
are not HTTP requests: their labels go nowhere.
"""

from __future__ import annotations

from collections.abc import Iterator

from strawberry.extensions import SchemaExtension

from gql_mail.http_edge.request_metrics import current_labels


class OperationLabel(SchemaExtension):
    def on_execute(self) -> Iterator[None]:
        ec = self.execution_context
        runtime = getattr(ec.context, "runtime", None)
        if runtime is not None:
            current_labels().operation = runtime.metrics.operation_label(ec.operation_name)
        yield
