"""EmailEngine's OAuth2 REST surface: `/v1/oauth2` apps, accounts registered with an `oauth2` object, and
the consent flow (`authorize: true`, then `/oauth`), in EmailEngine's shapes (validated against
`/v1/openapi.json`), secrets never shown."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import parse_qsl, urlsplit

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
    no_callback = await rest(
        server,
        "POST",
        "/account",
        json={"account": "x", "name": "X", "email": USER, "oauth2": {"provider": app, "authorize": True}},
    )
    assert no_callback.status_code == 400 and "no redirectUrl" in no_callback.text
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


async def test_the_consent_flow_registers_the_account_when_the_provider_sends_the_user_back(
    server: Server, smtp_server: SmtpServer, tokens: TokenServer
) -> None:
    document = await _document(server)
    callback = server.url + "/oauth"
    authorize = "https://accounts.example.test/o/oauth2/v2/auth"
    app = (
        await rest(
            server,
            "POST",
            "/oauth2",
            json={
                "name": "Gmail",
                "provider": "gmail",
                "clientId": tokens.client_id,
                "clientSecret": tokens.client_secret,
                "redirectUrl": callback,
                "tokenUrl": tokens.url,
                "authorizeUrl": authorize,
            },
        )
    ).json()["id"]
    body = {
        "account": "consent",
        "name": "Consented",
        "email": USER,
        "smtp": {"host": smtp_server.host, "port": smtp_server.port, "secure": False},
        "oauth2": {"provider": app, "authorize": True, "redirectUrl": "https://app.example.com/done?x=1"},
    }
    answer = await rest(server, "POST", "/account", json=body)
    _check(document, "/v1/account", "POST", "200", answer)
    url = urlsplit(answer.json()["redirect"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == authorize
    query = dict(parse_qsl(url.query))
    assert {k: query[k] for k in ("response_type", "client_id", "redirect_uri", "access_type", "prompt")} == {
        "response_type": "code",
        "client_id": tokens.client_id,
        "redirect_uri": callback,
        "access_type": "offline",
        "prompt": "consent",
    }
    assert query["scope"] == "https://mail.google.com/" and query["login_hint"] == USER
    assert (await rest(server, "GET", "/account/consent")).status_code == 404  # nothing registered yet

    # The provider's consent screen sends the browser back with a code (no token: it is the user's).
    code = tokens.issue_code(callback)
    back = await server.http.get(callback, params={"code": code, "state": query["state"]})
    assert back.status_code == 302, back.text
    assert back.headers["location"] == "https://app.example.com/done?x=1&account=consent&state=new"
    shown = await wait_state(server, "consent", "connected")
    assert shown["oauth2"]["auth"] == {"user": USER} and shown["oauth2"]["refreshToken"] == "******"
    assert tokens.requests[-1]["grant_type"] == "authorization_code"

    # A code works once; a forged state and a declined consent are refused.
    again = await server.http.get(callback, params={"code": code, "state": query["state"]})
    assert again.status_code == 400 and "invalid_grant" in again.text
    forged = await server.http.get(callback, params={"code": "c", "state": query["state"][:-4] + "AAAA"})
    assert forged.status_code == 400 and "invalid OAuth2 state" in forged.text
    declined = await server.http.get(callback, params={"error": "access_denied", "state": query["state"]})
    assert declined.status_code == 400 and "access_denied" in declined.text
    late = await rest(
        server, "PUT", "/account/consent", json={"oauth2": {"provider": app, "authorize": True}}
    )
    assert late.status_code == 400 and "POST /v1/account" in late.text
