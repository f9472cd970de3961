"""Shared fixtures. Real peers (SMTP, IMAP, webhook receiver) live in tests/servers/; a real gql-mail
server (uvicorn on 127.0.0.1, fresh SQLite file, manual clock) in tests/harness.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.databases import drop_created
from tests.harness import Server, run_server
from tests.servers.imap import ImapServer
from tests.servers.smtp import SmtpServer

pytest_plugins = ["tests.servers.fixtures"]


@pytest.fixture(scope="session", autouse=True)
async def _drop_test_databases() -> AsyncIterator[None]:
    """With GQL_MAIL_TEST_DATABASE=postgresql, drop the per-test databases when the session ends."""
    yield
    await drop_created()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with run_server(tmp_path) as s:
        yield s


def smtp_block(smtp: SmtpServer, **overrides: Any) -> dict[str, Any]:
    block: dict[str, Any] = {
        "host": smtp.host,
        "port": smtp.port,
        "secure": False,
        "auth": {"user": smtp.user, "pass": smtp.password},
    }
    block.update(overrides)
    return block


def imap_block(imap: ImapServer, **overrides: Any) -> dict[str, Any]:
    block: dict[str, Any] = {
        "host": imap.host,
        "port": imap.port,
        "secure": False,
        "auth": {"user": imap.user, "pass": imap.password},
        "sentMailPath": "Sent",
    }
    block.update(overrides)
    return block


def account_input(
    account: str, smtp_peer: SmtpServer, imap_peer: ImapServer | None = None, **overrides: Any
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "account": account,
        "name": "Example Sender",
        "email": f"{account}@example.com",
        "smtp": smtp_block(smtp_peer),
        "imap": imap_block(imap_peer) if imap_peer else {"disabled": True},
    }
    data.update(overrides)
    return data


REGISTER = """
mutation Register($input: RegisterAccountInput!) { registerAccount(input: $input) { account state } }"""
ACCOUNT = (
    "\nquery Acc($account: ID!) { account(account: $account) { account name email state "
    "lastError { message code } } }"
)


async def register_connected(server: Server, data: dict[str, Any]) -> None:
    """Register an account and wait (on the event, not by polling) until it is CONNECTED."""
    from tests.harness import subscribe

    async with subscribe(server, account=data["account"]) as sub:
        result = await server.gql(REGISTER, {"input": data})
        assert result["registerAccount"] == {"account": data["account"], "state": "NEW"}
        event = await sub.wait_for(
            lambda e: e["event"] in ("accountConnected", "authenticationError", "connectError")
        )
    assert event["event"] == "accountConnected", event
