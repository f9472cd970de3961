"""The periodic account check does not flap: a CONNECTED account whose server is unreachable for one round
stays CONNECTED (and keeps sending); only `account_check_failures_before_error` failed rounds in a row move
it to CONNECT_ERROR. A refused login, and any check asked for (register, update, reconnect), still record
what they found at once.

The server is made unreachable for real: the account talks to a real SMTP server through a fault proxy
whose listener is closed (connection refused). A round is the scheduler's job, `check_all()`, called by
hand; the clock moves one check interval between rounds, as it would between the scheduler's runs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from gql_mail.models import Account
from tests.conftest import ACCOUNT, account_input, register_connected, smtp_block
from tests.faults.helpers import message, of, simple, submit
from tests.harness import Server, Subscriber, subscribe
from tests.servers.proxy import FaultProxy
from tests.servers.smtp import SmtpServer

STATE_EVENTS = ("accountConnected", "authenticationError", "connectError")


@pytest.fixture
def proxy(smtp_server: SmtpServer) -> Iterator[FaultProxy]:
    with FaultProxy(smtp_server.host, smtp_server.port) as p:
        yield p


async def connected_via(server: Server, account: str, smtp: SmtpServer, proxy: FaultProxy) -> None:
    data = account_input(account, smtp)
    data["smtp"] = smtp_block(smtp, host=proxy.host, port=proxy.port)
    await register_connected(server, data)


async def round_of_checks(server: Server) -> None:
    """One run of the scheduler's `check_accounts` job, one check interval after the last."""
    server.clock.advance(server.settings.account_check_interval_seconds)
    await server.workers.accounts.check_all()


async def shown(server: Server, account: str) -> dict[str, Any]:
    result: dict[str, Any] = (await server.gql(ACCOUNT, {"account": account}))["account"]
    return result


async def failures(server: Server, account: str) -> int:
    async with server.runtime.db.read() as session:
        row = await session.get(Account, account)
    assert row is not None
    return row.check_failures


def state_events(sub: Subscriber) -> list[str]:
    return [e["event"] for e in sub.events if e["event"] in STATE_EVENTS]


async def test_one_failed_round_leaves_the_account_connected_and_sending(
    server: Server, smtp_server: SmtpServer, proxy: FaultProxy
) -> None:
    await connected_via(server, "blip", smtp_server, proxy)
    async with subscribe(server, account="blip") as sub:
        later = (server.clock.now() + timedelta(days=1)).isoformat()
        answer = await submit(server, "blip", simple(sendAt=later))
        proxy.down()
        await round_of_checks(server)
        # The same round seen by a second node (same moment) is the same blip: counted once.
        await server.workers.accounts.check_all()

        account = await shown(server, "blip")
        assert account["state"] == "CONNECTED"
        assert account["lastError"]["code"] == "ECONNECTION", "the failed check is shown, not hidden"
        assert await failures(server, "blip") == 1

        proxy.up()
        server.advance(24 * 3600)  # the message is due, the account still CONNECTED: it goes out
        await sub.wait_for(of("messageSent", answer["queueId"]))
        assert (await message(server, answer["queueId"]))["attemptsMade"] == 1
        assert state_events(sub) == []

    await round_of_checks(server)
    account = await shown(server, "blip")
    assert (account["state"], account["lastError"]) == ("CONNECTED", None)
    assert await failures(server, "blip") == 0


async def test_consecutive_failed_rounds_move_it_to_connect_error(
    server: Server, smtp_server: SmtpServer, proxy: FaultProxy
) -> None:
    threshold = server.settings.account_check_failures_before_error
    assert threshold == 3, "the default"
    await connected_via(server, "down", smtp_server, proxy)
    async with subscribe(server, account="down") as sub:
        proxy.down()
        for _ in range(threshold - 1):
            await round_of_checks(server)
            assert (await shown(server, "down"))["state"] == "CONNECTED"
        await round_of_checks(server)
        error = await sub.wait_for(of("connectError"))
        assert error["data"]["errorCode"] == "ECONNECTION"
        account = await shown(server, "down")
        assert (account["state"], account["lastError"]["code"]) == ("CONNECT_ERROR", "ECONNECTION")

        await round_of_checks(server)  # still down: no second event
        proxy.up()
        await round_of_checks(server)  # back: one accountConnected, after which the stream is complete
        await sub.wait_for(of("accountConnected"))
    assert state_events(sub) == ["connectError", "accountConnected"]
    assert await failures(server, "down") == 0


async def test_a_good_round_between_failures_resets_the_count(
    server: Server, smtp_server: SmtpServer, proxy: FaultProxy
) -> None:
    await connected_via(server, "flaky", smtp_server, proxy)
    proxy.down()
    await round_of_checks(server)
    await round_of_checks(server)
    assert await failures(server, "flaky") == 2
    proxy.up()
    await round_of_checks(server)
    assert await failures(server, "flaky") == 0
    proxy.down()
    await round_of_checks(server)
    await round_of_checks(server)
    account = await shown(server, "flaky")
    assert account["state"] == "CONNECTED", "two failures after a success are not three in a row"
    assert await failures(server, "flaky") == 2


async def test_a_refused_login_in_a_round_records_at_once(server: Server, smtp_server: SmtpServer) -> None:
    await register_connected(server, account_input("rotated", smtp_server))
    smtp_server.set_password("changed-at-the-provider")
    async with subscribe(server, account="rotated") as sub:
        await round_of_checks(server)
        await sub.wait_for(of("authenticationError"))
    account = await shown(server, "rotated")
    assert (account["state"], account["lastError"]["code"]) == ("AUTHENTICATION_ERROR", "EAUTH")


async def test_reconnect_with_the_server_down_records_at_once(
    server: Server, smtp_server: SmtpServer, proxy: FaultProxy
) -> None:
    await connected_via(server, "asked", smtp_server, proxy)
    proxy.down()
    async with subscribe(server, account="asked") as sub:
        await server.gql('mutation { reconnectAccount(account: "asked") { state } }')
        error = await sub.wait_for(lambda e: e["event"] in STATE_EVENTS)
    assert error["event"] == "connectError"
    account = await shown(server, "asked")
    assert (account["state"], account["lastError"]["code"]) == ("CONNECT_ERROR", "ECONNECTION")
