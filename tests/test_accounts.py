"""Registering mailboxes and watching them become usable, against real SMTP and IMAP servers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gql_mail.mail.errors import MailError
from gql_mail.services.accounts import get_account, record_account_state
from tests.conftest import ACCOUNT, REGISTER, account_input, imap_block, register_connected, smtp_block
from tests.databases import database_contents
from tests.harness import GraphQLErrors, Server, subscribe
from tests.servers.imap import ImapServer
from tests.servers.smtp import SmtpServer

STATE_EVENTS = ("accountConnected", "authenticationError", "connectError")


async def register_and_wait(server: Server, data: dict[str, Any]) -> dict[str, Any]:
    async with subscribe(server, account=data["account"]) as sub:
        answer = await server.gql(REGISTER, {"input": data})
        assert answer["registerAccount"] == {"account": data["account"], "state": "NEW"}
        event = await sub.wait_for(lambda e: e["event"] in STATE_EVENTS)
    account = (await server.gql(ACCOUNT, {"account": data["account"]}))["account"]
    return {"event": event, "account": account}


async def test_good_credentials_connect(
    server: Server, smtp_server: SmtpServer, imap_server: ImapServer
) -> None:
    seen = await register_and_wait(server, account_input("good", smtp_server, imap_server))
    assert seen["event"]["event"] == "accountConnected"
    assert seen["event"]["account"] == "good"
    assert seen["account"]["state"] == "CONNECTED"
    assert seen["account"]["lastError"] is None


async def test_send_only_account_connects(server: Server, smtp_server: SmtpServer) -> None:
    data = account_input("sendonly", smtp_server)
    seen = await register_and_wait(server, data)
    assert seen["account"]["state"] == "CONNECTED"
    # `imap` omitted entirely means the same.
    data2 = account_input("sendonly2", smtp_server)
    del data2["imap"]
    assert (await register_and_wait(server, data2))["account"]["state"] == "CONNECTED"


async def test_wrong_imap_password(server: Server, smtp_server: SmtpServer, imap_server: ImapServer) -> None:
    data = account_input("badimap", smtp_server, imap_server)
    data["imap"]["auth"]["pass"] = "wrong"
    seen = await register_and_wait(server, data)
    assert seen["event"]["event"] == "authenticationError"
    assert seen["account"]["state"] == "AUTHENTICATION_ERROR"
    assert seen["account"]["lastError"]["code"] == "EAUTH"


async def test_wrong_smtp_password(server: Server, smtp_server: SmtpServer) -> None:
    data = account_input(
        "badsmtp", smtp_server, smtp=smtp_block(smtp_server, auth={"user": "smtpuser", "pass": "no"})
    )
    seen = await register_and_wait(server, data)
    assert seen["event"]["event"] == "authenticationError"
    assert seen["account"]["state"] == "AUTHENTICATION_ERROR"
    assert "535" in seen["account"]["lastError"]["message"]


async def test_closed_port_is_connect_error(
    server: Server, smtp_server: SmtpServer, closed_port: int
) -> None:
    data = account_input("closed", smtp_server, smtp=smtp_block(smtp_server, port=closed_port))
    seen = await register_and_wait(server, data)
    assert seen["event"]["event"] == "connectError"
    assert seen["account"]["state"] == "CONNECT_ERROR"
    assert seen["account"]["lastError"]["code"] == "ECONNECTION"


async def test_duplicate_account_is_conflict(server: Server, smtp_server: SmtpServer) -> None:
    await register_connected(server, account_input("dup", smtp_server))
    with pytest.raises(GraphQLErrors) as err:
        await server.gql(REGISTER, {"input": account_input("dup", smtp_server)})
    assert err.value.codes == ["CONFLICT"]


BAD_INPUTS: list[tuple[str, Any, str]] = [
    ("email", lambda d: d.update(email="not-an-address"), "email"),
    ("name with newline", lambda d: d.update(name="a\r\nBcc: x@y.z"), "name"),
    ("empty account id", lambda d: d.update(account=""), "account"),
    ("smtp host", lambda d: d["smtp"].update(host="bad host!"), "smtp.host"),
    ("smtp port 0", lambda d: d["smtp"].update(port=0), "smtp.port"),
    ("smtp port 70000", lambda d: d["smtp"].update(port=70000), "smtp.port"),
    ("smtp no password", lambda d: d["smtp"].update(auth={"user": "u"}), "smtp.auth.pass"),
    ("smtp empty user", lambda d: d["smtp"].update(auth={"user": " ", "pass": "p"}), "smtp.auth.user"),
    ("imap no host", lambda d: d.update(imap={"port": 143, "auth": {"user": "u", "pass": "p"}}), "imap.host"),
    (
        "imap port",
        lambda d: d.update(imap={"host": "h.example", "port": -1, "auth": {"user": "u", "pass": "p"}}),
        "imap.port",
    ),
    ("imap no auth", lambda d: d.update(imap={"host": "h.example", "port": 143}), "imap.auth"),
]


@pytest.mark.parametrize(("case", "mutate", "field"), BAD_INPUTS, ids=[c for c, _, _ in BAD_INPUTS])
async def test_bad_input_names_the_field_and_stores_nothing(
    server: Server, smtp_server: SmtpServer, case: str, mutate: Any, field: str
) -> None:
    data = account_input("bad", smtp_server)
    mutate(data)
    with pytest.raises(GraphQLErrors) as err:
        await server.gql(REGISTER, {"input": data})
    assert err.value.codes == ["BAD_USER_INPUT"]
    assert err.value.errors[0]["extensions"]["field"] == field
    assert (await server.gql("{ accounts { account } }"))["accounts"] == []


async def test_missing_required_field_is_bad_user_input(server: Server, smtp_server: SmtpServer) -> None:
    data = account_input("bad", smtp_server)
    del data["smtp"]
    response = await server.post(REGISTER, {"input": data})
    body = response.json()
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_update_reverifies_and_reconnect(
    server: Server, smtp_server: SmtpServer, imap_server: ImapServer
) -> None:
    data = account_input("upd", smtp_server, imap_server)
    data["imap"]["auth"]["pass"] = "wrong"
    assert (await register_and_wait(server, data))["account"]["state"] == "AUTHENTICATION_ERROR"
    async with subscribe(server, account="upd") as sub:
        answer = await server.gql(
            "mutation U($a: ID!, $i: UpdateAccountInput!) "
            "{ updateAccount(account: $a, input: $i) { state } }",
            {"a": "upd", "i": {"imap": imap_block(imap_server)}},
        )
        assert answer["updateAccount"]["state"] == "CONNECTING"
        await sub.wait_for(lambda e: e["event"] == "accountConnected")
    async with subscribe(server, account="upd") as sub:
        smtp_server.set_password("changed")
        await server.gql('mutation { reconnectAccount(account: "upd") { state } }')
        event = await sub.wait_for(lambda e: e["event"] in STATE_EVENTS)
    assert event["event"] == "authenticationError"


async def test_delete_account(server: Server, smtp_server: SmtpServer) -> None:
    await register_connected(server, account_input("gone", smtp_server))
    async with subscribe(server) as sub:
        assert (await server.gql('mutation { deleteAccount(account: "gone") }'))["deleteAccount"] is True
        await sub.wait_for(lambda e: e["event"] == "accountDeleted" and e["account"] == "gone")
    with pytest.raises(GraphQLErrors) as err:
        await server.gql(ACCOUNT, {"account": "gone"})
    assert err.value.codes == ["NOT_FOUND"]


async def test_passwords_never_returned_nor_stored_in_plain_text(
    server: Server, smtp_server: SmtpServer, imap_server: ImapServer, tmp_path: Path
) -> None:
    smtp_server.set_password("smtp-Secret-4711")
    data = account_input("secret", smtp_server, imap_server)
    await register_connected(server, data)
    everything = await server.post(
        """{ accounts { account name email state lastError { message code }
              smtp { host port secure user } imap { host port secure user sentMailPath } } }"""
    )
    assert "smtp-Secret-4711" not in everything.text and "demopass" not in everything.text
    raw = await database_contents(server.settings.database_url, tmp_path)
    assert raw, "the database holds the account"
    assert b"smtp-Secret-4711" not in raw and b"demopass" not in raw


async def test_an_auth_failure_met_with_old_settings_does_not_overwrite_newer_ones(
    server: Server, smtp_server: SmtpServer
) -> None:
    """A delivery that met a 535 with the settings it loaded records it against their version; the user
    has updated the account meanwhile, so the newer settings' state stands."""
    await register_connected(server, account_input("stale", smtp_server))
    loaded_with = (await get_account(server.runtime, "stale")).version
    async with subscribe(server, account="stale") as sub:
        await server.gql(
            "mutation U($a: ID!, $i: UpdateAccountInput!) "
            "{ updateAccount(account: $a, input: $i) { state } }",
            {"a": "stale", "i": {"name": "Renamed"}},
        )
        await sub.wait_for(lambda e: e["event"] == "accountConnected")
    refused = MailError(
        "Invalid login: 535 5.7.8 no", code="EAUTH", smtp_code=535, permanent=True, auth_failure=True
    )
    assert await record_account_state(server.runtime, "stale", refused, version=loaded_with) is None
    account = (await server.gql(ACCOUNT, {"account": "stale"}))["account"]
    assert account["state"] == "CONNECTED" and account["lastError"] is None
