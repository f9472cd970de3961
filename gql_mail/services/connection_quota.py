"""How many long-lived connections (websockets) this process holds open: in all, and per access token.

A rule of the service, not of one protocol: every front door that keeps a connection open counts it here,
so `max_ws_connections` and `max_ws_connections_per_token` bound the process whichever door was used.
Both counts live in this process only (a node's own memory and file descriptors are what they protect).
A refusal is returned as its reason, for the front door to word in its own protocol.
"""

from __future__ import annotations

from collections import Counter

from gql_mail.config import Settings


class ConnectionQuota:
    """The two counts and their limits; `enter`/`leave` around a connection, `claim`/`release` around the
    time it is authenticated as a token."""

    def __init__(self, max_open: int, max_per_token: int) -> None:
        self.max_open = max_open
        self.max_per_token = max_per_token
        self.open = 0  # observable by operators and tests
        self.per_token: Counter[str] = Counter()

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionQuota:
        return cls(settings.max_ws_connections, settings.max_ws_connections_per_token)

    def enter(self) -> str | None:
        """Count a new connection, or say why it is refused (the process is at `max_open`)."""
        if self.open >= self.max_open:
            return f"too many websocket connections (at most {self.max_open}); try again later"
        self.open += 1
        return None

    def leave(self) -> None:
        self.open -= 1

    def claim(self, token_id: str) -> str | None:
        """Count an open connection against its token, or say why it is refused."""
        if self.per_token[token_id] >= self.max_per_token:
            return f"at most {self.max_per_token} websocket connections per token"
        self.per_token[token_id] += 1
        return None

    def release(self, token_id: str) -> None:
        self.per_token[token_id] -= 1
        if self.per_token[token_id] <= 0:
            del self.per_token[token_id]
