"""`GET /v1/stats`: EmailEngine's shape, counting what the server holds."""

from __future__ import annotations

from datetime import timedelta
from importlib.metadata import version

from gql_mail.events import iso
from tests.harness import Server
from tests.rest_client import boom, rest, wait_state
from tests.servers.smtp import SmtpServer


async def test_stats_count_accounts_by_state_and_messages_by_queue_state(
    server: Server, smtp_server: SmtpServer, closed_port: int
) -> None:
    empty = (await rest(server, "GET", "/stats")).json()
    assert empty["version"] == version("gql-mail") and empty["accounts"] == 0
    assert set(empty["connections"].values()) == {0}

    for account, port in (("up", smtp_server.port), ("down", closed_port)):
        body = {
            "account": account,
            "name": account,
            "email": f"{account}@example.com",
            "smtp": {
                "host": smtp_server.host,
                "port": port,
                "auth": {"user": smtp_server.user, "pass": smtp_server.password},
            },
        }
        assert (await rest(server, "POST", "/account", json=body)).status_code == 200
    await wait_state(server, "up", "connected")
    await wait_state(server, "down", "connectError")
    later = {
        "from": {"address": "up@example.com"},
        "to": [{"address": "to@example.com"}],
        "subject": "later",
        "text": "x",
        "sendAt": iso(server.runtime.clock.now() + timedelta(hours=1)),
    }
    assert (await rest(server, "POST", "/account/up/submit", json=later)).status_code == 200

    shown = (await rest(server, "GET", "/stats")).json()
    assert shown["accounts"] == 2
    assert (shown["connections"]["connected"], shown["connections"]["connectError"]) == (1, 1)
    assert shown["queues"]["submit"] == {"active": 0, "delayed": 1, "paused": 0, "waiting": 0, "failed": 0}
    assert set(shown["queues"]["notify"]) == {"active", "delayed", "paused", "waiting", "failed"}


async def test_stats_errors(server: Server) -> None:
    anonymous = await rest(server, "GET", "/stats", token=None)
    assert (anonymous.status_code, anonymous.json()) == (401, boom(401, "Missing authentication"))
    seconds = await rest(server, "GET", "/stats", params={"seconds": 3600})
    assert seconds.json() == boom(
        400, "Invalid input", fields=[{"message": '"seconds" is not supported by gql-mail', "key": "seconds"}]
    )
