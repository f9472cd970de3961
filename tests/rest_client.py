"""Talking to a test server's REST API (`/v1`) over real HTTP, as an EmailEngine client does."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from typing import Any

import httpx

from tests.harness import Server
from tests.servers.smtp import SmtpServer


async def rest(
    server: Server,
    method: str,
    path: str,
    *,
    json: Any = None,
    content: bytes | None = None,
    token: str | None = "default",
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """One request to `/v1{path}`; `token` None sends none, "default" the server's api-scope token."""
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {server.token if token == 'default' else token}"
    if content is not None:
        sent.setdefault("Content-Type", "application/json")
    return await server.http.request(
        method, server.url + "/v1" + path, json=json, content=content, params=params, headers=sent
    )


async def wait_state(server: Server, account: str, *states: str, timeout: float = 15.0) -> dict[str, Any]:  # noqa: ASYNC109 - a deadline for asyncio.timeout
    """Poll `GET /v1/account/{account}` (bounded) until its state is one of `states`, as the seed's text
    tells a client to; the account's last answer."""
    async with asyncio.timeout(timeout):
        while True:
            response = await rest(server, "GET", f"/account/{account}")
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            if body["state"] in states:
                return body
            await asyncio.sleep(0.05)


def boom(status: int, message: str, **extra: Any) -> dict[str, Any]:
    """The Boom body EmailEngine answers with."""
    error = {
        400: "Bad Request",
        401: "Unauthorized",
        403: "Forbidden",
        404: "Not Found",
        503: "Service Unavailable",
    }
    return {"statusCode": status, "error": error[status], "message": message, **extra}


def verify_webhook(payload: bytes, signature: str, secret: str) -> bool:
    """EmailEngine's documented receiver check, as written there."""
    # Compute HMAC-SHA256 and encode as base64url (no padding)
    computed = hmac.new(
        secret.encode(),
        payload,  # raw bytes
        hashlib.sha256,
    ).digest()
    expected = base64.urlsafe_b64encode(computed).rstrip(b"=").decode()

    return hmac.compare_digest(signature, expected)


async def connected_account(server: Server, smtp: SmtpServer, account: str = "sender") -> None:
    """Register a send-only account on `smtp` through `POST /v1/account` and wait until it is connected."""
    body = {
        "account": account,
        "name": account.capitalize(),
        "email": f"{account}@example.com",
        "smtp": {"host": smtp.host, "port": smtp.port, "auth": {"user": smtp.user, "pass": smtp.password}},
    }
    assert (await rest(server, "POST", "/account", json=body)).status_code == 200
    await wait_state(server, account, "connected")
