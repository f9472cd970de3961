"""OAuth2 mailboxes end to end: a real gql-mail, a real OAuth2 token endpoint (tests/servers/
oauth2_token_server.py) and aiosmtpd accepting XOAUTH2 with exactly the currently valid access token.

Time is the server's manual clock: a token "expires" when the test moves the clock, never by waiting.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gql_mail.services import oauth2_tokens
from tests.conftest import ACCOUNT, register_connected
from tests.faults.helpers import message, simple, submit
from tests.harness import GraphQLErrors, Server, run_server, subscribe
from tests.mail.test_imap import answer_capability, answer_logout, stub_imap
from tests.servers.oauth2_token_server import TokenServer
from tests.servers.smtp import SmtpServer

USER = "mailbox@example.com"
CREATE_APP = """
mutation App($input: OAuth2AppInput!) {
  createOAuth2App(input: $input) { id name provider clientId clientSecretSet tokenUrl }
}"""
UPDATE = """
mutation Up($account: ID!, $input: UpdateAccountInput!) { updateAccount(account: $account, input: $input) {
  account state } }"""


@pytest.fixture
def tokens(smtp_server: SmtpServer) -> Iterator[TokenServer]:
    """The token endpoint; every access token it issues becomes the only one the SMTP server accepts."""
    smtp_server.set_credentials(USER, "unused-password")
    with TokenServer(on_issue=smtp_server.set_access_token) as server:
        yield server


async def create_app(server: Server, tokens: TokenServer) -> str:
    app = (
        await server.gql(
            CREATE_APP,
            {
                "input": {
                    "name": "Test Gmail",
                    "provider": "gmail",
                    "clientId": tokens.client_id,
                    "clientSecret": tokens.client_secret,
                    "tokenUrl": tokens.url,
                }
            },
        )
    )["createOAuth2App"]
    assert app["clientSecretSet"] is True and app["tokenUrl"] == tokens.url
    return str(app["id"])


def oauth2_block(app: str, access: str | None, refresh: str, expires: datetime | None) -> dict[str, Any]:
    return {
        "provider": app,
        "auth": {"user": USER},
        "accessToken": access,
        "refreshToken": refresh,
        "expires": expires.isoformat() if expires else None,
    }


# Google's preset (by the app's provider) would pace these tests' bursts of sends over minutes.
UNPACED = {"perMinute": 10_000}


async def register_oauth2(
    server: Server,
    smtp: SmtpServer,
    tokens: TokenServer,
    account: str = "oa",
    limits: dict[str, Any] | None = UNPACED,
) -> tuple[str, str]:
    """A CONNECTED OAuth2 account whose token expires in an hour; (app id, access token)."""
    app = await create_app(server, tokens)
    access, refresh = tokens.grant()
    expires = server.clock.now() + timedelta(hours=1)
    await register_connected(
        server,
        {
            "account": account,
            "name": "OAuth2 Sender",
            "email": USER,
            # The provider's SMTP server (smtp.gmail.com:465) is replaced by the local one.
            "smtp": {"host": smtp.host, "port": smtp.port, "secure": False},
            "oauth2": oauth2_block(app, access, refresh, expires),
            **({"limits": limits} if limits else {}),
        },
    )
    return app, access


def refreshes(server: Server, result: str) -> float:
    """`gql_mail_oauth2_token_refresh_total` of the gmail provider with this result."""
    value = server.runtime.metrics.registry.get_sample_value(
        "gql_mail_oauth2_token_refresh_total", {"provider": "gmail", "result": result}
    )
    return value or 0.0


async def state_of(server: Server, account: str) -> dict[str, Any]:
    result: dict[str, Any] = (await server.gql(ACCOUNT, {"account": account}))["account"]
    return result


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with run_server(tmp_path) as s:
        yield s


async def test_a_token_about_to_expire_is_refreshed_once_before_the_send(
    server: Server, smtp_server: SmtpServer, tokens: TokenServer
) -> None:
    await register_oauth2(server, smtp_server, tokens)
    assert tokens.calls == 0  # the check logged in with the token it was given
    server.advance(3600 - 60)  # within the 5-minute margin
    queued = await submit(server, "oa", simple())
    await server.drain()
    assert len(await smtp_server.wait_for_messages(1)) == 1
    assert tokens.calls == 1
    assert tokens.requests[0]["grant_type"] == "refresh_token" and "scope" not in tokens.requests[0]
    assert (await message(server, queued["queueId"]))["status"] == "sent"
    # The provider rotated the refresh token; the old one is dead, so the next refresh works only if the
    # new one was stored.
    server.advance(3600)
    await submit(server, "oa", simple())
    await server.drain()
    assert len(await smtp_server.wait_for_messages(2)) == 2
    assert tokens.calls == 2
    assert (await state_of(server, "oa"))["state"] == "CONNECTED"
    assert refreshes(server, "ok") == 2


async def test_twenty_concurrent_sends_at_expiry_share_one_refresh(
    server: Server, smtp_server: SmtpServer, tokens: TokenServer
) -> None:
    await register_oauth2(server, smtp_server, tokens)
    server.advance(3600)
    await asyncio.gather(*(submit(server, "oa", simple(subject=f"m{i}")) for i in range(20)))
    await server.drain()
    assert len(await smtp_server.wait_for_messages(20)) == 20
    assert tokens.calls == 1


async def test_concurrent_callers_of_the_token_service_share_one_request(
    server: Server, smtp_server: SmtpServer, tokens: TokenServer
) -> None:
    await register_oauth2(server, smtp_server, tokens)
    server.clock.advance(3600)
    got = await asyncio.gather(*(oauth2_tokens.access_token(server.runtime, "oa") for _ in range(20)))
    assert tokens.calls == 1
    assert set(got) == {tokens.access_token}


async def test_invalid_grant_stops_the_account_without_spending_attempts_until_new_tokens(
    server: Server, smtp_server: SmtpServer, tokens: TokenServer
) -> None:
    app, _ = await register_oauth2(server, smtp_server, tokens)
    tokens.revoke_all()  # the user revoked consent
    server.advance(3600)
    async with subscribe(server, account="oa") as sub:
        queued = await submit(server, "oa", simple())
        await server.drain()
        event = await sub.wait_for(lambda e: e["event"] == "authenticationError")
    assert event["data"]["errorCode"] == "EOAUTH2"
    assert "invalid_grant" in event["data"]["error"]
    account = await state_of(server, "oa")
    assert account["state"] == "AUTHENTICATION_ERROR"
    assert account["lastError"]["code"] == "EOAUTH2" and "invalid_grant" in account["lastError"]["message"]
    waiting = await message(server, queued["queueId"])
    assert (waiting["status"], waiting["attemptsMade"]) == ("queued", 0)
    assert smtp_server.messages == []
    assert refreshes(server, "refused") == 1
    calls = tokens.calls
    await server.drain()  # the refusal is remembered: no request goes out again
    assert tokens.calls == calls == 1

    access, refresh = tokens.grant()  # a new consent
    expires = server.clock.now() + timedelta(hours=1)
    async with subscribe(server, account="oa") as sub:
        await server.gql(
            UPDATE, {"account": "oa", "input": {"oauth2": oauth2_block(app, access, refresh, expires)}}
        )
        await sub.wait_for(lambda e: e["event"] == "accountConnected")
    await server.drain()
    assert len(await smtp_server.wait_for_messages(1)) == 1
    sent = await message(server, queued["queueId"])
    assert (sent["status"], sent["attemptsMade"]) == ("sent", 1)


async def test_an_unavailable_token_endpoint_is_retried_with_backoff_and_keeps_the_state(
    server: Server, smtp_server: SmtpServer, tokens: TokenServer
) -> None:
    await register_oauth2(server, smtp_server, tokens)
    tokens.fail_next(1, status=503)
    server.advance(3600)
    queued = await submit(server, "oa", simple())
    await server.drain()
    waiting = await message(server, queued["queueId"])
    assert (waiting["status"], waiting["attemptsMade"]) == ("queued", 0)
    assert datetime.fromisoformat(waiting["nextAttempt"]) > server.clock.now()
    assert (await state_of(server, "oa"))["state"] == "CONNECTED"
    assert tokens.calls == 1
    assert refreshes(server, "failed") == 1
    await server.drain()  # not due yet: no second request before the backoff
    assert tokens.calls == 1
    server.advance(server.settings.retry_base_seconds)
    await server.drain()
    assert len(await smtp_server.wait_for_messages(1)) == 1
    assert tokens.calls == 2
    assert (await message(server, queued["queueId"]))["attemptsMade"] == 1


async def test_a_refused_token_is_refreshed_once_and_the_login_tried_again(
    server: Server, smtp_server: SmtpServer, tokens: TokenServer
) -> None:
    """The server refuses a token that has not expired yet (revoked early): one refresh, then success."""
    await register_oauth2(server, smtp_server, tokens)
    smtp_server.set_access_token("only-a-newer-token-works")
    await submit(server, "oa", simple())
    await server.drain()
    assert len(await smtp_server.wait_for_messages(1)) == 1
    assert tokens.calls == 1


async def test_imap_and_smtp_log_in_with_the_refreshed_token_of_an_expired_one(
    server: Server, smtp_server: SmtpServer, tokens: TokenServer
) -> None:
    """Registered with an access token that already expired: the check refreshes first, then IMAP
    (AUTHENTICATE XOAUTH2, RFC 7628 / Google's SASL string) and SMTP log in with the new token."""
    app = await create_app(server, tokens)
    access, refresh = tokens.grant()
    seen: list[str] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await answer_capability(reader, writer)
        tag, command, mechanism, argument = line.split()
        assert (command, mechanism) == (b"AUTHENTICATE", b"XOAUTH2"), line
        seen.append(base64.b64decode(argument).decode())
        writer.write(tag + b" OK authenticated\r\n")
        await answer_logout(reader, writer)

    async with stub_imap(script) as port:
        await register_connected(
            server,
            {
                "account": "oi",
                "name": "OAuth2 IMAP",
                "email": USER,
                "smtp": {"host": smtp_server.host, "port": smtp_server.port, "secure": False},
                "imap": {"host": "127.0.0.1", "port": port, "secure": False},
                "oauth2": oauth2_block(app, access, refresh, server.clock.now() - timedelta(seconds=1)),
            },
        )
    assert tokens.calls == 1
    assert seen == [f"user={USER}\x01auth=Bearer {tokens.access_token}\x01\x01"]
    assert tokens.access_token != access


async def test_two_nodes_on_postgresql_refresh_an_account_once(
    tmp_path: Path, pg_url: str, smtp_server: SmtpServer, tokens: TokenServer
) -> None:
    """Two gql-mail processes' worth of runtimes on one database: the claim on the token version lets
    one ask the provider while the other waits for its token."""
    async with (
        run_server(tmp_path / "a", database_url=pg_url) as a,
        run_server(tmp_path / "b", database_url=pg_url) as b,
    ):
        await register_oauth2(a, smtp_server, tokens)
        for node in (a, b):
            node.clock.advance(3600)
        got = await asyncio.gather(
            *(oauth2_tokens.access_token(node.runtime, "oa") for node in (a, b) for _ in range(10))
        )
    assert tokens.calls == 1
    assert set(got) == {tokens.access_token}


async def test_apps_in_graphql_never_show_the_secret_and_stay_while_used(
    server: Server, smtp_server: SmtpServer, tokens: TokenServer
) -> None:
    app, _ = await register_oauth2(server, smtp_server, tokens)
    listed = await server.post("{ oauth2Apps { id provider clientId clientSecretSet tokenUrl } }")
    assert listed.json()["data"]["oauth2Apps"] == [
        {
            "id": app,
            "provider": "gmail",
            "clientId": tokens.client_id,
            "clientSecretSet": True,
            "tokenUrl": tokens.url,
        }
    ]
    shown = await server.post('{ account(account: "oa") { oauth2 { app user expires } } }')
    assert shown.json()["data"]["account"]["oauth2"]["app"] == app
    everything = listed.text + shown.text
    assert tokens.client_secret not in everything
    assert all(token not in everything for token in tokens.issued)
    with pytest.raises(GraphQLErrors) as used:
        await server.gql("mutation D($id: ID!) { deleteOAuth2App(id: $id) }", {"id": app})
    assert used.value.codes == ["CONFLICT"]
    with pytest.raises(GraphQLErrors) as bad:
        await server.gql(CREATE_APP, {"input": {"name": "X", "provider": "generic", "clientId": "c"}})
    assert bad.value.codes == ["BAD_USER_INPUT"]
    assert bad.value.errors[0]["extensions"]["field"] == "tokenUrl"
    with pytest.raises(GraphQLErrors) as unknown:
        await server.gql(
            UPDATE,
            {"account": "oa", "input": {"oauth2": oauth2_block("nope", None, "r", None)}},
        )
    assert unknown.value.codes == ["BAD_USER_INPUT"]


@pytest.mark.parametrize("with_access_token", [True, False])
async def test_tokens_given_during_a_refresh_win_over_its_answer(
    server: Server, smtp_server: SmtpServer, tokens: TokenServer, with_access_token: bool
) -> None:
    """updateAccount stores new tokens while a refresh is waiting for the provider: the refresh's answer
    is not stored over them (compare-and-set on the token version), and its caller gets the new token, or
    one refreshed with the new refresh token when only that was given."""
    app, _ = await register_oauth2(server, smtp_server, tokens)
    server.clock.advance(3600)
    tokens.hold()
    refreshing = asyncio.ensure_future(oauth2_tokens.access_token(server.runtime, "oa"))
    assert await asyncio.to_thread(tokens.waiting.acquire, True, 10)  # the request reached the provider
    access, refresh = tokens.grant()
    expires = server.clock.now() + timedelta(hours=1)
    block = oauth2_block(app, access if with_access_token else None, refresh, expires)
    await server.gql(UPDATE, {"account": "oa", "input": {"oauth2": block}})
    tokens.release()
    got = await refreshing
    assert got == (access if with_access_token else tokens.access_token)
    assert await oauth2_tokens.access_token(server.runtime, "oa") == got
    assert tokens.calls == (1 if with_access_token else 2)


async def test_an_oauth2_account_is_paced_by_its_providers_preset(
    server: Server, smtp_server: SmtpServer, tokens: TokenServer
) -> None:
    """Its SMTP host is a local one (no preset by host): Google's preset comes from the app's provider,
    Workspace's for a mailbox outside gmail.com."""
    await register_oauth2(server, smtp_server, tokens, limits=None)
    query = "query A($a: ID!) { account(account: $a) { limits { preset perMinute perDay } } }"
    limits = (await server.gql(query, {"a": "oa"}))["account"]["limits"]
    assert limits == {"preset": "google-workspace", "perMinute": 60, "perDay": 2_000}
