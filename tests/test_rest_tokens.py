"""Token management through the REST API: EmailEngine's paths (2.79's /v1/tokens and the older
/v1/token), shapes and errors, and a token revoked through REST stops working at once."""

from __future__ import annotations

from gql_mail.services.tokens import create_token
from tests.harness import Server
from tests.rest_client import boom, rest

FORBIDDEN = boom(403, "Unauthorized scope", requestedScope="api")


async def test_create_list_and_delete_tokens(server: Server) -> None:
    for path in ("/tokens", "/token"):
        made = await rest(server, "POST", path, json={"description": f"via {path}", "scopes": ["api"]})
        assert made.status_code == 200, made.text
        assert set(made.json()) == {"token", "id"}
    read = (await rest(server, "POST", "/tokens", json={"description": "reader", "scopes": "read"})).json()
    made = made.json()

    # The new token works, and the read one only reads.
    assert (await rest(server, "GET", "/accounts", token=made["token"])).status_code == 200
    assert (await rest(server, "GET", "/accounts", token=read["token"])).status_code == 200
    assert (await rest(server, "POST", "/account", json={}, token=read["token"])).status_code == 403

    listed = (await rest(server, "GET", "/tokens", params={"pageSize": 2})).json()
    assert (listed["account"], listed["total"], listed["page"], listed["pages"]) == (None, 4, 0, 2)
    second = (await rest(server, "GET", "/tokens", params={"pageSize": 2, "page": 1})).json()
    entries = listed["tokens"] + second["tokens"]
    by_description = {e["description"]: e for e in entries}
    assert sorted(by_description) == ["reader", "tests", "via /token", "via /tokens"]
    assert by_description["reader"]["scopes"] == ["read"]
    assert by_description["via /token"] == {
        "id": made["id"],
        "account": None,
        "description": "via /token",
        "scopes": ["api"],
        "created": by_description["via /token"]["created"],
    }
    assert made["token"] not in str(entries)

    # By id (the new path), then by the token itself (the old one); again: false, as EmailEngine.
    deleted = await rest(server, "DELETE", f"/tokens/{made['id']}")
    assert (deleted.status_code, deleted.json()) == (200, {"deleted": True})
    assert (await rest(server, "GET", "/accounts", token=made["token"])).json() == boom(401, "Bad token")
    assert (await rest(server, "DELETE", f"/token/{read['token']}")).json() == {"deleted": True}
    assert (await rest(server, "GET", "/accounts", token=read["token"])).status_code == 401
    assert (await rest(server, "DELETE", f"/tokens/{made['id']}")).json() == {"deleted": False}
    assert (await rest(server, "DELETE", "/token/gqlm_nothing")).json() == {"deleted": False}
    assert (await rest(server, "GET", "/tokens")).json()["total"] == 2


async def test_token_management_needs_an_api_token(server: Server) -> None:
    _, read = await create_token(server.runtime, "read", "reader")
    assert (await rest(server, "GET", "/tokens", token=read)).json() == FORBIDDEN
    assert (await rest(server, "POST", "/tokens", json={"description": "x"}, token=read)).json() == FORBIDDEN
    assert (await rest(server, "DELETE", "/tokens/whatever", token=read)).json() == FORBIDDEN
    anonymous = await rest(server, "GET", "/tokens", token=None)
    assert (anonymous.status_code, anonymous.json()) == (401, boom(401, "Missing authentication"))
    assert (await rest(server, "GET", "/tokens")).json()["total"] == 2  # nothing made


async def test_refused_token_bodies_name_the_field(server: Server) -> None:
    cases = [
        ({}, [{"message": '"description" is required', "key": "description"}]),
        (
            {"description": "x", "account": "a", "permissions": {}},
            [
                {"message": '"account" is not supported by gql-mail', "key": "account"},
                {"message": '"permissions" is not supported by gql-mail', "key": "permissions"},
            ],
        ),
        (
            {"description": "x", "scopes": ["smtp"]},
            [{"message": "scope must be one of api, read, metrics", "key": "scopes"}],
        ),
        (
            {"description": "x", "scopes": ["api", "read"]},
            [{"message": "scopes must hold one scope: gql-mail's tokens have one", "key": "scopes"}],
        ),
        (
            {"description": "line\r\nbreak"},
            [{"message": "description must not contain a line break (CR or LF)", "key": "description"}],
        ),
        ({"description": "x", "foo": 1}, [{"message": '"foo" is not allowed', "key": "foo"}]),
    ]
    for body, fields in cases:
        refused = await rest(server, "POST", "/tokens", json=body)
        assert refused.status_code == 400, body
        assert refused.json() == boom(400, "Invalid input", fields=fields), refused.json()
    bad_page = await rest(server, "GET", "/tokens", params={"page": -1})
    assert bad_page.status_code == 400 and bad_page.json()["fields"][0]["key"] == "page"
    assert (await rest(server, "GET", "/tokens")).json()["total"] == 1  # nothing made
