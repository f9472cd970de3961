"""The per-request context: the runtime and who is calling (set by the HTTP guard or on connection_init)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from strawberry.types import Info as StrawberryInfo

from gql_mail.events import QueueBudget
from gql_mail.graphql.loaders import Loaders, build_loaders
from gql_mail.runtime import Runtime
from gql_mail.services.tokens import Principal


@dataclass
class Context:
    runtime: Runtime
    principal: Principal | None = None
    request: Any = None
    response: Any = None
    connection_params: dict[str, Any] | None = field(default=None)
    # Websockets: the bound on events queued for this connection over all its subscriptions.
    queue: QueueBudget | None = None
    _loaders: Loaders | None = field(default=None, repr=False)

    @property
    def loaders(self) -> Loaders:
        """Built on first use: most operations never read a message's history."""
        if self._loaders is None:
            self._loaders = build_loaders(self.runtime)
        return self._loaders


Info = StrawberryInfo[Context, None]
