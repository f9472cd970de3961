"""gql_mail/oauth2_client.py against a real local token endpoint: what a token request's outcome means
(a grant, a refusal that no retry mends, or a failure worth retrying), within its bounds."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from gql_mail.oauth2_client import Limits, OAuth2Failure, TokenClient, TokenGrant, refresh_grant
from gql_mail.outbound import OutboundPolicy
from tests.servers.oauth2_token_server import TokenServer

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


@pytest.fixture
def tokens() -> Iterator[TokenServer]:
    with TokenServer(expires_in=600) as server:
        yield server


def client(tokens: TokenServer, url: str | None = None, secret: str | None = None) -> TokenClient:
    return TokenClient(
        token_url=url or tokens.url,
        client_id=tokens.client_id,
        client_secret=secret or tokens.client_secret,
        provider="gmail",
    )


async def refresh(
    token_client: TokenClient,
    refresh_token: str,
    policy: OutboundPolicy | None = None,
    timeout: float = 5,  # noqa: ASYNC109 - refresh_grant's bound, passed on
) -> TokenGrant:
    limits = Limits(policy or OutboundPolicy(), timeout, max_response_bytes=4096)
    return await refresh_grant(token_client, refresh_token, limits=limits, now=NOW)


async def test_a_grant_carries_the_new_token_its_expiry_and_the_rotated_refresh_token(
    tokens: TokenServer,
) -> None:
    _, old = tokens.grant()
    grant = await refresh(client(tokens), old)
    assert grant.access_token == tokens.access_token
    assert grant.expires == NOW + timedelta(seconds=600)
    assert grant.refresh_token is not None and grant.refresh_token != old
    # EmailEngine's request: the form with the client's credentials, no scope.
    assert tokens.requests[-1] == {
        "grant_type": "refresh_token",
        "refresh_token": old,
        "client_id": tokens.client_id,
        "client_secret": tokens.client_secret,
    }
    assert tokens.access_token not in repr(grant) and grant.refresh_token not in repr(grant)


@pytest.mark.parametrize(
    ("script", "permanent", "words"),
    [
        ("invalid_grant", True, "invalid_grant - invalid_grant: Token has been expired or revoked."),
        ("wrong_secret", True, "invalid_client - Unauthorized client"),
        (503, False, "HTTP 503"),
        (429, False, "HTTP 429"),
        ("huge", False, "more than 4096 bytes"),
        ("no_token", False, "no access_token"),
    ],
)
async def test_failures_are_classified(
    tokens: TokenServer, script: str | int, permanent: bool, words: str
) -> None:
    _, old = tokens.grant()
    secret = None
    if script == "invalid_grant":
        tokens.fail_next(error="invalid_grant")
    elif script == "wrong_secret":
        secret = "not-the-secret"
    elif script == "huge":
        tokens.answer_next(200, {"access_token": "x" * 10_000})
    elif script == "no_token":
        tokens.answer_next(200, {"token_type": "Bearer"})
    else:
        assert isinstance(script, int)
        tokens.answer_next(script, "Try again later")
    with pytest.raises(OAuth2Failure) as info:
        await refresh(client(tokens, secret=secret), old)
    assert info.value.permanent is permanent
    assert words in info.value.message
    assert info.value.message.startswith("Token request failed for gmail (refresh_token")


async def test_a_silent_endpoint_times_out_within_the_bound(silent_port: int) -> None:
    started = time.monotonic()
    with pytest.raises(OAuth2Failure) as info:
        await refresh(
            TokenClient(f"http://127.0.0.1:{silent_port}/token", "id", "secret", "gmail"), "r", timeout=0.5
        )
    assert info.value.permanent is False and "timed out" in info.value.message
    assert time.monotonic() - started < 3


async def test_the_outbound_policy_governs_the_token_endpoint(tokens: TokenServer) -> None:
    _, old = tokens.grant()
    policy = OutboundPolicy(deny=(ipaddress.ip_network("127.0.0.0/8"),))
    with pytest.raises(OAuth2Failure) as info:
        await refresh(client(tokens), old, policy)
    assert "refused by policy" in info.value.message
    assert tokens.calls == 0
