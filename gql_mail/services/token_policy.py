"""When a token is checked again after it was accepted: the policy for long-lived requests.

A request is authenticated once, when it arrives (`tokens.authenticate`). Whatever then outlives that
moment follows these rules, whichever front door it came through:
- a new operation on an open connection re-checks the token (`still_authorised`), so a revocation takes
  effect at once for anything new;
- a running stream re-checks it every `token_recheck_seconds` (`TokenRecheck`), for revocations made in
  another process; revocations in this process end the stream at once through the bus (TokenRevoked).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gql_mail.events import TokenRevoked
from gql_mail.runtime import Runtime
from gql_mail.services.tokens import Principal, is_active


async def still_authorised(rt: Runtime, principal: Principal | None) -> bool:
    """Whether `principal` may start something new now (None: a request that needed no token)."""
    return principal is None or await is_active(rt, principal.token_id)


class TokenRecheck:
    """The periodic re-check of a stream's token; call `check` as the stream goes on."""

    def __init__(
        self, rt: Runtime, principal: Principal | None, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.rt = rt
        self.token_id = principal.token_id if principal else None
        self.every = rt.settings.token_recheck_seconds
        self._monotonic = monotonic
        self._checked = monotonic()

    async def check(self) -> None:
        """Raise TokenRevoked when a re-check is due and the token is no longer valid."""
        if self.token_id is None or self._monotonic() - self._checked < self.every:
            return
        if not await is_active(self.rt, self.token_id):
            raise TokenRevoked(self.token_id)
        self._checked = self._monotonic()
