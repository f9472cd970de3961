"""Account states in EmailEngine's spelling (its lowercase `state` enum), both ways."""

from __future__ import annotations

from gql_mail.models import AccountState

# gql-mail's NEW is EmailEngine's `init`: registered, not checked yet.
EE_STATE: dict[str, str] = {
    AccountState.NEW: "init",
    AccountState.CONNECTING: "connecting",
    AccountState.CONNECTED: "connected",
    AccountState.AUTHENTICATION_ERROR: "authenticationError",
    AccountState.CONNECT_ERROR: "connectError",
    AccountState.DISCONNECTED: "disconnected",
}
FROM_EE_STATE: dict[str, AccountState] = {ee: AccountState(state) for state, ee in EE_STATE.items()}


def ee_state(state: str) -> str:
    """A stored state in EmailEngine's spelling (an unknown one as it is)."""
    return EE_STATE.get(state, state)
