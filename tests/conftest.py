"""Shared fixtures. Real peers (SMTP, IMAP, webhook receiver) live in tests/servers/; a real gql-mail
server (uvicorn on 127.0.0.1, fresh SQLite file, manual clock) in tests/harness.py.

The `fault` marker makes a test a row of docs/reliability.md: each such test says what fault or attack it
injects and what it checks (`@pytest.mark.fault(name, checked)`); figures it measures (duplicates at a kill,
messages per second under load) go through the `figures` fixture. All of it travels on the test report's
`user_properties`, which `tests/faults/report.py` turns into the table.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gql_mail.migrations import upgrade
from tests.databases import drop_created, fresh_postgresql, pg_reachable
from tests.harness import Server, run_server
from tests.servers.imap import ImapServer
from tests.servers.smtp import SmtpServer

pytest_plugins = ["tests.servers.fixtures"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "fault(name, checked): a fault or attack test and its row in docs/reliability.md"
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("fault")
    if marker is not None:
        item.user_properties.append(("fault", marker.args[0]))
        item.user_properties.append(("checked", marker.args[1]))


class Figures:
    """Measured numbers a test reports (they appear in the Result column)."""

    def __init__(self, item: pytest.Item) -> None:
        self._item = item

    def __setitem__(self, name: str, value: Any) -> None:
        self._item.user_properties.append(("figure", (name, value)))


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    return Figures(request.node)


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


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh, migrated PostgreSQL database for tests that need PostgreSQL itself (the event relay),
    whatever GQL_MAIL_TEST_DATABASE says; skipped where none is reachable."""
    if not await pg_reachable():
        pytest.skip("no PostgreSQL reachable")
    async with fresh_postgresql() as url:
        await upgrade(url)
        yield url
