"""The token re-check policy for what outlives a request's authentication, against a real database."""

from __future__ import annotations

import pytest

from gql_mail.events import TokenRevoked
from gql_mail.services.token_policy import TokenRecheck, still_authorised
from gql_mail.services.tokens import Principal, create_token, revoke_token
from tests.harness import Server


async def test_a_new_operation_sees_a_revocation_at_once(server: Server) -> None:
    row, _ = await create_token(server.runtime)
    principal = Principal(token_id=row.id, scope=row.scope)
    assert await still_authorised(server.runtime, principal)
    await revoke_token(server.runtime, row.id)
    assert not await still_authorised(server.runtime, principal)
    assert await still_authorised(server.runtime, None)  # a request that needed no token


async def test_a_stream_rechecks_only_when_due(server: Server) -> None:
    row, _ = await create_token(server.runtime)
    now = [1000.0]
    recheck = TokenRecheck(server.runtime, Principal(token_id=row.id, scope=row.scope), lambda: now[0])
    await revoke_token(server.runtime, row.id)
    now[0] += recheck.every / 2
    await recheck.check()  # not due yet: no lookup, no error
    now[0] += recheck.every
    with pytest.raises(TokenRevoked):
        await recheck.check()


async def test_a_stream_without_a_token_is_never_rechecked(server: Server) -> None:
    now = [0.0]
    recheck = TokenRecheck(server.runtime, None, lambda: now[0])
    now[0] += 10 * recheck.every
    await recheck.check()
