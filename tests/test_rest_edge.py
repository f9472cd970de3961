"""The REST API's door: tokens (header or `access_token`), scopes, and hostile bodies, answered in
EmailEngine's Boom shape before anything is read or stored that need not be."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from gql_mail.log_redaction import redact
from gql_mail.services.tokens import create_token, revoke_token
from tests.harness import Server, run_server
from tests.rest_client import boom, rest
from tests.server_log import server_log, tracebacks

MISSING = boom(401, "Missing authentication")
BAD = boom(401, "Bad token")


async def test_tokens_by_header_or_query_parameter(server: Server) -> None:
    none = await rest(server, "GET", "/accounts", token=None)
    assert (none.status_code, none.json()) == (401, MISSING)
    assert none.headers["WWW-Authenticate"] == "Bearer"
    for token in ("gqlm_not-a-token", "x" * 64):
        bad = await rest(server, "GET", "/accounts", token=token)
        assert (bad.status_code, bad.json()) == (401, BAD)
    by_query = await rest(server, "GET", "/accounts", token=None, params={"access_token": server.token})
    assert by_query.status_code == 200 and by_query.json()["accounts"] == []
    # The header wins over the query parameter, as in EmailEngine.
    both = await rest(server, "GET", "/accounts", token="gqlm_wrong", params={"access_token": server.token})
    assert (both.status_code, both.json()) == (401, BAD)
    row, token = await create_token(server.runtime, "api", "soon revoked")
    assert (await rest(server, "GET", "/accounts", token=token)).status_code == 200
    await revoke_token(server.runtime, row.id)
    assert (await rest(server, "GET", "/accounts", token=token)).json() == BAD


async def test_read_scope_tokens_read_but_never_write(server: Server) -> None:
    _, read = await create_token(server.runtime, "read", "reader")
    assert (await rest(server, "GET", "/accounts", token=read)).status_code == 200
    forbidden = boom(403, "Unauthorized scope", requestedScope="api")
    body = {"account": "x", "name": "X", "email": "x@example.com", "smtp": {"host": "h", "port": 1}}
    for method, path, payload in [
        ("POST", "/account", body),
        ("PUT", "/account/x", {"name": "y"}),
        ("DELETE", "/account/x", None),
        ("PUT", "/account/x/reconnect", {"reconnect": True}),
        ("POST", "/account/x/submit", {"to": [{"address": "a@example.org"}]}),
    ]:
        response = await rest(server, method, path, json=payload, token=read)
        assert (response.status_code, response.json()) == (403, forbidden), (method, path)
    assert (await rest(server, "GET", "/accounts")).json()["total"] == 0


async def test_unknown_paths_and_methods_answer_in_boom(server: Server) -> None:
    missing = await rest(server, "GET", "/nothing/here")
    assert (missing.status_code, missing.json()) == (404, boom(404, "Not Found"))
    wrong = await rest(server, "PATCH", "/account/x")
    assert wrong.status_code == 405 and wrong.json()["statusCode"] == 405
    assert wrong.headers["Allow"] == "DELETE, GET, PUT"


def test_access_token_in_a_logged_url_is_redacted() -> None:
    line = '127.0.0.1:5 - "GET /v1/accounts?page=1&access_token=gqlm_secretvalue&x=1 HTTP/1.1" 200'
    assert "gqlm_secretvalue" not in redact(line)
    assert "page=1" in redact(line) and "x=1" in redact(line)


async def test_no_token_leaks_to_the_access_log(server: Server) -> None:
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    access = logging.getLogger("uvicorn.access")
    keep, level = Keep(), access.level
    access.addHandler(keep)
    access.setLevel(logging.INFO)
    try:
        await rest(server, "GET", "/accounts", token=None, params={"access_token": server.token})
    finally:
        access.removeHandler(keep)
        access.setLevel(level)
    assert seen, "the access log saw no request"
    assert not any(server.token in line for line in seen), seen


async def _open(server: Server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    address = urlsplit(server.url)
    sock = socket.socket()
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (address.hostname, address.port))
    return await asyncio.open_connection(sock=sock)


async def _answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of one HTTP response."""
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return status, json.loads(await reader.readexactly(length))


async def _raw(server: Server, head: bytes) -> tuple[int, dict[str, Any]]:
    """Send only a request's head; the status and JSON body of the answer."""
    reader, writer = await _open(server)
    try:
        writer.write(head)
        await writer.drain()
        async with asyncio.timeout(10):  # a server waiting for the body would never answer
            return await _answer(reader)
    finally:
        writer.close()


def _head(path: str, length: int, token: str | None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines.append(f"Content-Length: {length}")
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.fault(
    "REST: announce a 30 MB body to /v1 without a valid token, send only the headers",
    "401 in EmailEngine's shape before any body byte is sent",
)
async def test_unauthenticated_upload_is_refused_before_its_body(server: Server) -> None:
    for path in ("/v1/account", "/v1/account/x/submit"):
        for token, expected in ((None, MISSING), ("gqlm_nope", BAD)):
            assert await _raw(server, _head(path, 30 * 1024 * 1024, token)) == (401, expected)


@pytest.mark.fault(
    "REST: announce a body over max_request_bytes with a valid token",
    "413 before any body byte is sent",
)
async def test_announced_oversized_body_is_refused_at_once(server: Server) -> None:
    limit = server.settings.max_request_bytes
    status, body = await _raw(server, _head("/v1/account/x/submit", limit + 1, server.token))
    assert (status, body["statusCode"], body["error"]) == (413, 413, "Request Entity Too Large")
    assert str(limit) in body["message"]


def _deep(levels: int) -> bytes:
    return b'{"to": ' + b"[" * levels + b"]" * levels + b"}"


@pytest.mark.fault(
    "REST: bodies nested 100,000 levels deep, malformed JSON, non-objects",
    "HTTP 400 in EmailEngine's shape, nothing stored, no traceback in the server's log",
)
async def test_deep_and_malformed_bodies_are_refused(server: Server) -> None:
    limit = server.settings.max_json_depth
    cases: list[tuple[bytes, str]] = [
        (_deep(100_000), f"deeper than {limit}"),
        (_deep(limit + 1), f"deeper than {limit}"),
        (b"{not json", "Invalid request payload JSON format"),
        (b'{"account": "\xff\xfe"}', "Invalid request payload JSON format"),
        (b"[1, 2]", "Invalid input"),
        (b"null", "Invalid input"),
        (b'"text"', "Invalid input"),
        (b'{"account": "x", "name": {"deep": [1]}}', "Invalid input"),
        (b'{"account": "\\ud800", "name": "x"}', "Invalid"),
    ]
    with server_log() as log:
        for raw, words in cases:
            for path in ("/v1/account", "/v1/account/x/submit"):
                response = await rest(server, "POST", path.removeprefix("/v1"), content=raw)
                assert response.status_code == 400, (raw[:60], path, response.text[:300])
                body = response.json()
                assert (body["statusCode"], body["error"]) == (400, "Bad Request"), body
                assert words in body["message"], (raw[:60], body)
    assert tracebacks(log) == [], log
    assert (await rest(server, "GET", "/accounts")).json()["total"] == 0


@pytest.mark.fault(
    "REST: a large authenticated upload to /v1 while max_large_bodies=1, then one to /graphql",
    "both APIs share one bound on large bodies: the /graphql upload waits unread until the REST one is read",
)
async def test_rest_and_graphql_share_the_large_body_bound(tmp_path: Path) -> None:
    async with run_server(tmp_path, large_body_bytes=4096, max_large_bodies=1) as server:
        gate = server.app.state.gate.bodies

        async def until(predicate: Any) -> None:
            async with asyncio.timeout(20):
                while not predicate():  # noqa: ASYNC110 (counters the server bumps; a bounded poll)
                    await asyncio.sleep(0.01)

        rest_body = json.dumps({"account": "big", "name": "x" * 200, "pad": "y" * 20_000}).encode()
        gql_body = json.dumps(
            {"query": "{ accounts { account } }", "variables": {"pad": "z" * 20_000}}
        ).encode()
        (rest_reader, rest_writer), (gql_reader, gql_writer) = await _open(server), await _open(server)
        try:
            rest_writer.write(_head("/v1/account", len(rest_body), server.token) + rest_body[:1000])
            await until(lambda: gate.reading_large == 1)
            gql_writer.write(_head("/graphql", len(gql_body), server.token) + gql_body)
            await until(lambda: gate.waiting_large == 1)
            rest_writer.write(rest_body[1000:])
            async with asyncio.timeout(10):
                status, answer = await _answer(rest_reader)
            assert status == 400 and answer["fields"] == [{"message": '"pad" is not allowed', "key": "pad"}]
            async with asyncio.timeout(10):
                status, answer = await _answer(gql_reader)
            assert (status, answer) == (200, {"data": {"accounts": []}})
            assert gate.reading_large == gate.waiting_large == 0
        finally:
            rest_writer.close()
            gql_writer.close()
