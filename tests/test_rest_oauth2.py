"""EmailEngine's OAuth2 REST surface: `/v1/oauth2` apps and accounts registered with an `oauth2` object,
in EmailEngine's shapes (validated against `/v1/openapi.json`), secrets never shown."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from tests.harness import Server
from tests.rest_client import rest, wait_state
from tests.servers.oauth2_token_server import TokenServer
from tests.servers.smtp import SmtpServer
from tests.test_rest_openapi import _check, _document

USER = "rest-mailbox@example.com"


@pytest.fixture
def tokens(smtp_server: SmtpServer) -> Iterator[TokenServer]:
    smtp_server.set_credentials(USER, "unused-password")
    with TokenServer(on_issue=smtp_server.set_access_token) as server:
        yield server


async def test_apps_and_an_oauth2_account_in_emailengine_shapes(
    server: Server, smtp_server: SmtpServer, tokens: TokenServer
) -> None:
    document = await _document(server)
    body = {
        "name": "Gmail",
        "provider": "gmail",
        "clientId": tokens.client_id,
        "clientSecret": tokens.client_secret,
        "baseScopes": "imap",
        "redirectUrl": "https://app.example.com/oauth",
        "tokenUrl": tokens.url,
    }
    created = await rest(server, "POST", "/oauth2", json=body)
    _check(document, "/v1/oauth2", "POST", "200", created)
    app = created.json()["id"]
    assert created.json() == {"id": app, "created": True}

    listed = await rest(server, "GET", "/oauth2")
    _check(document, "/v1/oauth2", "GET", "200", listed)
    assert [a["id"] for a in listed.json()["apps"]] == [app]
    one = await rest(server, "GET", f"/oauth2/{app}")
    _check(document, "/v1/oauth2/{app}", "GET", "200", one)
    assert one.json()["clientSecret"] == "******"
    assert tokens.client_secret not in listed.text + one.text

    access, refresh = tokens.grant()
    expires = (server.clock.now() + timedelta(hours=1)).isoformat()
    account = {
        "account": "rest-oa",
        "name": "REST OAuth2",
        "email": USER,
        "smtp": {"host": smtp_server.host, "port": smtp_server.port, "secure": False},
        "oauth2": {
            "provider": app,
            "auth": {"user": USER},
            "accessToken": access,
            "refreshToken": refresh,
            "expires": expires,
        },
    }
    answer = await rest(server, "POST", "/account", json=account)
    _check(document, "/v1/account", "POST", "200", answer)
    assert answer.json() == {"account": "rest-oa", "state": "new"}
    shown = await wait_state(server, "rest-oa", "connected")
    details = await rest(server, "GET", "/account/rest-oa")
    _check(document, "/v1/account/{account}", "GET", "200", details)
    assert shown["oauth2"] == {
        "provider": app,
        "auth": {"user": USER},
        "accessToken": "******",
        "refreshToken": "******",
        "expires": shown["oauth2"]["expires"],
    }
    assert shown["app"] == app and shown["smtp"]["auth"] == {"user": USER}
    assert access not in details.text and refresh not in details.text

    # An app in use is kept: its accounts could not refresh any more.
    refused = await rest(server, "DELETE", f"/oauth2/{app}")
    assert refused.status_code == 409, refused.text
    assert (await rest(server, "DELETE", "/account/rest-oa")).status_code == 200
    deleted = await rest(server, "DELETE", f"/oauth2/{app}")
    _check(document, "/v1/oauth2/{app}", "DELETE", "200", deleted)
    assert deleted.json() == {"id": app, "deleted": True, "accounts": 0}
    missing = await rest(server, "GET", f"/oauth2/{app}")
    assert missing.status_code == 404


async def test_refusals_name_the_field(server: Server, tokens: TokenServer) -> None:
    app = (
        await rest(
            server,
            "POST",
            "/oauth2",
            json={"name": "G", "provider": "gmail", "clientId": "c", "clientSecret": "s"},
        )
    ).json()["id"]
    consent = await rest(
        server,
        "POST",
        "/account",
        json={"account": "x", "name": "X", "email": USER, "oauth2": {"provider": app, "authorize": True}},
    )
    assert consent.status_code == 400, consent.text
    (field,) = consent.json()["fields"]
    assert field["key"] == "authorize" and "consent flow" in field["message"], field
    unknown = await rest(
        server,
        "POST",
        "/account",
        json={
            "account": "x",
            "name": "X",
            "email": USER,
            "oauth2": {"provider": "nope", "auth": {"user": USER}, "refreshToken": "r"},
        },
    )
    assert unknown.status_code == 400
    assert "Invalid or missing OAuth2 provider" in unknown.text, unknown.text
    generic = await rest(
        server, "POST", "/oauth2", json={"name": "G", "provider": "generic", "clientId": "c"}
    )
    assert generic.status_code == 400 and "tokenUrl" in generic.text
    service = await rest(
        server, "POST", "/oauth2", json={"name": "G", "provider": "gmailService", "clientId": "c"}
    )
    assert service.status_code == 400 and "provider" in service.text
