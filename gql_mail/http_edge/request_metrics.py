"""HTTP requests counted by what they were, not by their raw path: the REST route's template
(`/v1/account/{account}/submit`), `/graphql` with the GraphQL operation's name, a fixed path of the app.

The outermost middleware (`RequestMetrics`) counts every answered request with its status; the front doors
fill in what only they know (`current_labels()`): REST its route template, GraphQL the operation name and
the first error's code. A path no one claimed is counted as "other", so scanners probing random paths add
no series. A context variable, not the ASGI scope, carries the labels: every request runs in a task of its
own, and the view reaches them without being handed the scope.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gql_mail.metrics import Metrics

# Paths of the app counted under their own name.
FIXED_ROUTES = frozenset({"/health", "/health/live", "/health/ready", "/metrics", "/graphql"})


@dataclass
class RequestLabels:
    route: str | None = None
    operation: str = ""
    outcome: str | None = None  # None: "ok" below status 400, "error" from it


_current: ContextVar[RequestLabels | None] = ContextVar("gql_mail_request_labels", default=None)


def current_labels() -> RequestLabels:
    """The labels of the request being answered (a throwaway outside one, e.g. in a unit test)."""
    return _current.get() or RequestLabels()


class RequestMetrics:
    """Counts each HTTP request in `gql_mail_http_requests_total` once it is answered."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        labels = RequestLabels()
        path = scope.get("path", "")
        if path in FIXED_ROUTES:
            labels.route = path
        status = 500  # an exception before any answer: the server error middleware answers 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        token = _current.set(labels)
        try:
            await self.app(scope, receive, sending)
        finally:
            _current.reset(token)
            outcome = labels.outcome or ("ok" if status < 400 else "error")
            self.metrics.http_requests.labels(
                labels.route or "other", labels.operation, str(status), outcome
            ).inc()
