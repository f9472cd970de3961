"""The account endpoints of the REST API: each one's success and error shapes, in EmailEngine's JSON."""

from __future__ import annotations

import re
from typing import Any

from tests.conftest import REGISTER
from tests.harness import GraphQLErrors, Server
from tests.rest_client import boom, rest, wait_state
from tests.servers.smtp import SmtpServer

NOT_FOUND = boom(404, "Account record was not found for requested ID")


def _body(account: str | None, smtp: SmtpServer, **extra: Any) -> dict[str, Any]:
    return {
        "account": account,
        "name": "Example",
        "email": f"{account or 'anon'}@example.com",
        "smtp": {"host": smtp.host, "port": smtp.port, "auth": {"user": smtp.user, "pass": smtp.password}},
        **extra,
    }


async def test_post_account_is_an_upsert_and_graphql_register_still_conflicts(
    server: Server, smtp_server: SmtpServer
) -> None:
    first = await rest(server, "POST", "/account", json=_body("up", smtp_server))
    assert (first.status_code, first.json()) == (200, {"account": "up", "state": "new"})
    again = await rest(server, "POST", "/account", json=_body("up", smtp_server, name="Renamed"))
    assert (again.status_code, again.json()) == (200, {"account": "up", "state": "existing"})
    shown = await wait_state(server, "up", "connected")
    assert shown["name"] == "Renamed"
    # What an upsert leaves out (here email and smtp) keeps its stored value.
    only_name = await rest(server, "POST", "/account", json={"account": "up", "name": "Again"})
    assert only_name.json() == {"account": "up", "state": "existing"}
    shown = await wait_state(server, "up", "connected")
    assert (shown["name"], shown["email"], shown["smtp"]["port"]) == (
        "Again",
        "up@example.com",
        smtp_server.port,
    )
    assert shown["imap"] == {"disabled": True} and shown["sendOnly"] is True and shown["type"] == "sending"
    gql_body = _body("up", smtp_server)
    gql_body["smtp"]["auth"]["pass"] = smtp_server.password
    try:
        await server.gql(REGISTER, {"input": gql_body})
    except GraphQLErrors as exc:
        assert exc.codes == ["CONFLICT"]
    else:
        raise AssertionError("registerAccount accepted a taken id")


async def test_post_account_with_a_null_id_generates_one(server: Server, smtp_server: SmtpServer) -> None:
    answer = (await rest(server, "POST", "/account", json=_body(None, smtp_server))).json()
    assert answer["state"] == "new"
    assert re.fullmatch(r"[0-9a-z]{16}", answer["account"]), answer
    assert (await rest(server, "GET", f"/account/{answer['account']}")).status_code == 200


async def test_get_account_masks_secrets_and_spells_states_as_emailengine(
    server: Server, smtp_server: SmtpServer, closed_port: int
) -> None:
    await rest(server, "POST", "/account", json=_body("ok", smtp_server))
    shown = await wait_state(server, "ok", "connected")
    assert shown["account"] == "ok" and shown["email"] == "ok@example.com"
    assert shown["smtp"]["auth"] == {"user": smtp_server.user, "pass": "******"}
    assert smtp_server.password not in str(shown)

    refused_body = _body("refused", smtp_server)
    smtp_server.set_password("something-else")
    await rest(server, "POST", "/account", json=refused_body)
    refused = await wait_state(server, "refused", "authenticationError", "connected")
    smtp_server.reset()
    assert refused["state"] == "authenticationError"
    assert refused["lastError"]["response"] and refused["lastError"]["serverResponseCode"]

    down = _body("down", smtp_server)
    down["smtp"]["port"] = closed_port
    await rest(server, "POST", "/account", json=down)
    assert (await wait_state(server, "down", "connectError", "connected"))["state"] == "connectError"

    missing = await rest(server, "GET", "/account/nobody")
    assert (missing.status_code, missing.json()) == (404, NOT_FOUND)


async def test_list_accounts_pages_and_filters(
    server: Server, smtp_server: SmtpServer, closed_port: int
) -> None:
    for name in ("a1", "a2", "a3"):
        await rest(server, "POST", "/account", json=_body(name, smtp_server))
        await wait_state(server, name, "connected")
    down = _body("b-down", smtp_server)
    down["smtp"]["port"] = closed_port
    await rest(server, "POST", "/account", json=down)
    await wait_state(server, "b-down", "connectError")

    page = (await rest(server, "GET", "/accounts", params={"pageSize": 3})).json()
    assert (page["total"], page["page"], page["pages"], page["query"], page["state"]) == (4, 0, 2, False, "*")
    assert [a["account"] for a in page["accounts"]] == ["a1", "a2", "a3"]
    assert set(page["accounts"][0]) >= {"account", "name", "email", "type", "state", "lastError"}
    second = (await rest(server, "GET", "/accounts", params={"pageSize": 3, "page": 1})).json()
    assert [a["account"] for a in second["accounts"]] == ["b-down"]

    connected = (await rest(server, "GET", "/accounts", params={"state": "connected"})).json()
    assert [a["account"] for a in connected["accounts"]] == ["a1", "a2", "a3"]
    assert connected["state"] == "connected"
    found = (await rest(server, "GET", "/accounts", params={"query": "B-DOWN@"})).json()
    assert [a["account"] for a in found["accounts"]] == ["b-down"] and found["query"] == "B-DOWN@"

    too_big = await rest(server, "GET", "/accounts", params={"pageSize": 1001})
    assert too_big.status_code == 400
    assert too_big.json() == boom(
        400,
        "Invalid input",
        fields=[{"message": '"pageSize" must be less than or equal to 1000', "key": "pageSize"}],
    )
    bad_state = await rest(server, "GET", "/accounts", params={"state": "CONNECTED"})
    assert bad_state.status_code == 400 and bad_state.json()["fields"][0]["key"] == "state"
    unknown = await rest(server, "GET", "/accounts", params={"sort": "name"})
    assert unknown.json()["fields"] == [{"message": '"sort" is not allowed', "key": "sort"}]


async def test_put_account_updates_and_refuses_what_it_cannot_honour(
    server: Server, smtp_server: SmtpServer
) -> None:
    await rest(server, "POST", "/account", json=_body("put", smtp_server))
    await wait_state(server, "put", "connected")
    changed = await rest(server, "PUT", "/account/put", json={"name": "New name"})
    assert (changed.status_code, changed.json()) == (200, {"account": "put"})
    assert (await wait_state(server, "put", "connected"))["name"] == "New name"

    missing = await rest(server, "PUT", "/account/nobody", json={"name": "x"})
    assert (missing.status_code, missing.json()) == (404, NOT_FOUND)
    unsupported = await rest(
        server, "PUT", "/account/put", json={"oauth2": {"provider": "x", "useAuthServer": True}, "foo": 1}
    )
    assert unsupported.status_code == 400
    assert unsupported.json()["fields"] == [
        {"message": '"oauth2.useAuthServer" is not supported by gql-mail', "key": "useAuthServer"},
        {"message": '"foo" is not allowed', "key": "foo"},
    ]
    bad_host = await rest(server, "PUT", "/account/put", json={"smtp": {"host": "bad host", "port": 25}})
    assert bad_host.status_code == 400
    assert bad_host.json()["fields"][0]["key"] == "host"
    assert (await wait_state(server, "put", "connected"))["name"] == "New name"  # nothing changed


async def test_post_account_validation_failures_name_the_fields(server: Server) -> None:
    empty = await rest(server, "POST", "/account", json={})
    assert empty.status_code == 400
    assert {f["key"] for f in empty.json()["fields"]} == {"account", "name"}
    no_smtp = await rest(
        server, "POST", "/account", json={"account": "x", "name": "X", "email": "x@example.com"}
    )
    assert no_smtp.status_code == 400
    assert no_smtp.json()["fields"] == [{"message": "smtp is required", "key": "smtp"}]
    no_host = await rest(
        server, "POST", "/account", json={"account": "x", "name": "X", "email": "x@example.com", "smtp": {}}
    )
    assert no_host.json()["fields"] == [{"message": "smtp.host is required", "key": "host"}]
    no_email = await rest(server, "POST", "/account", json={"account": "x", "name": "X", "smtp": {}})
    assert no_email.json()["fields"] == [{"message": "email is required", "key": "email"}]
    assert (await rest(server, "GET", "/accounts")).json()["total"] == 0


async def test_delete_account(server: Server, smtp_server: SmtpServer) -> None:
    await rest(server, "POST", "/account", json=_body("gone", smtp_server))
    deleted = await rest(server, "DELETE", "/account/gone")
    assert (deleted.status_code, deleted.json()) == (200, {"account": "gone", "deleted": True})
    assert (await rest(server, "GET", "/account/gone")).status_code == 404
    again = await rest(server, "DELETE", "/account/gone")
    assert (again.status_code, again.json()) == (404, NOT_FOUND)


async def test_reconnect(server: Server, smtp_server: SmtpServer) -> None:
    await rest(server, "POST", "/account", json=_body("re", smtp_server))
    await wait_state(server, "re", "connected")
    asked = await rest(server, "PUT", "/account/re/reconnect", json={"reconnect": True})
    assert (asked.status_code, asked.json()) == (200, {"reconnect": True})
    await wait_state(server, "re", "connected")
    not_asked = await rest(server, "PUT", "/account/re/reconnect", json={})
    assert not_asked.json() == {"reconnect": False}
    missing = await rest(server, "PUT", "/account/nobody/reconnect", json={"reconnect": True})
    assert (missing.status_code, missing.json()) == (404, NOT_FOUND)


async def test_put_partial_merges_into_the_stored_block(
    server: Server, smtp_server: SmtpServer, closed_port: int
) -> None:
    await rest(server, "POST", "/account", json=_body("merge", smtp_server))
    await wait_state(server, "merge", "connected")

    # Only the port changes: host and credentials are kept, so the check now fails to connect.
    moved = await rest(server, "PUT", "/account/merge", json={"smtp": {"partial": True, "port": closed_port}})
    assert (moved.status_code, moved.json()) == (200, {"account": "merge"})
    account = await wait_state(server, "merge", "connectError", "authenticationError")
    assert account["state"] == "connectError", account
    assert (account["smtp"]["host"], account["smtp"]["port"]) == (smtp_server.host, closed_port)
    assert account["smtp"]["auth"] == {"user": smtp_server.user, "pass": "******"}

    # Back to the right port, partially again: the stored password still logs in.
    back = await rest(
        server, "PUT", "/account/merge", json={"smtp": {"partial": True, "port": smtp_server.port}}
    )
    assert back.status_code == 200
    assert (await wait_state(server, "merge", "connected", "connectError"))["state"] == "connected"

    # Without `partial` the block is replaced whole: a block without auth is refused, nothing changes.
    replaced = await rest(server, "PUT", "/account/merge", json={"smtp": {"port": smtp_server.port}})
    assert replaced.status_code == 400
    assert (await wait_state(server, "merge", "connected"))["smtp"]["port"] == smtp_server.port
