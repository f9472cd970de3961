"""The HTTP edge attacked with raw sockets: the token is checked before the body is read, bodies are read
within their bounds (per request, and how many large ones at once), and any malformed or deeply nested
body is a coded 400, never a 500 or a traceback in the server's log."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.harness import Server, run_server
from tests.server_log import server_log, tracebacks

QUERY = "{ accounts { account } }"


async def _connect(server: Server, *, send_buffer: int | None = None) -> tuple[Any, Any]:
    address = urlsplit(server.url)
    sock = socket.socket()
    if send_buffer is not None:  # a small fixed kernel buffer: what the server does not read stays with us
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (address.hostname, address.port))
    return await asyncio.open_connection(sock=sock)


def _head(length: int, token: str | None, *, chunked: bool = False) -> bytes:
    lines = ["POST /graphql HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {length}")
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _padded_body(length: int) -> bytes:
    """A valid request of exactly `length` bytes (the padding is an unused variable)."""
    empty = json.dumps({"query": QUERY, "variables": {"pad": ""}}).encode()
    return json.dumps({"query": QUERY, "variables": {"pad": "x" * (length - len(empty))}}).encode()


async def _response(reader: asyncio.StreamReader) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of one HTTP response."""
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return status, json.loads(await reader.readexactly(length))


@pytest.mark.fault(
    "announce a 30 MB body without a token, send only the headers",
    "401 UNAUTHENTICATED arrives before any body byte is sent",
)
async def test_unauthenticated_upload_is_refused_before_its_body(server: Server) -> None:
    for token in (None, "not-a-token"):
        reader, writer = await _connect(server)
        try:
            writer.write(_head(30 * 1024 * 1024, token))
            await writer.drain()
            async with asyncio.timeout(10):  # a server waiting for the body would never answer
                status, body = await _response(reader)
        finally:
            writer.close()
        assert status == 401
        assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


@pytest.mark.fault(
    "announce a body over max_request_bytes with a valid token",
    "413 PAYLOAD_TOO_LARGE before any body byte is sent",
)
async def test_announced_oversized_body_is_refused_at_once(server: Server) -> None:
    reader, writer = await _connect(server)
    try:
        writer.write(_head(server.settings.max_request_bytes + 1, server.token))
        await writer.drain()
        async with asyncio.timeout(10):
            status, body = await _response(reader)
    finally:
        writer.close()
    assert status == 413
    assert body["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"


@pytest.mark.fault(
    "three parallel authenticated 16 MB uploads with max_large_bodies=2",
    "two are read, the third waits unread (its bytes stay in the client's buffer) until a slot frees",
)
async def test_large_bodies_are_read_a_few_at_a_time(tmp_path: Path) -> None:
    size = 16 * 1024 * 1024
    body = _padded_body(size)
    half = size // 2
    async with run_server(tmp_path, large_body_bytes=64 * 1024, max_large_bodies=2) as server:
        gate = server.app.state.gate.bodies

        async def until(predicate: Any) -> None:
            async with asyncio.timeout(20):
                while not predicate():  # noqa: ASYNC110 (counters the server bumps; a bounded poll)
                    await asyncio.sleep(0.01)

        uploads = [await _connect(server, send_buffer=64 * 1024) for _ in range(3)]
        try:
            (_, first), (_, second), (_, third) = uploads
            for writer in (first, second):
                writer.write(_head(size, server.token) + body[:half])
            await until(lambda: gate.reading_large == 2)
            third.write(_head(size, server.token) + body[:half])
            await until(lambda: gate.waiting_large == 1)
            # The two admitted uploads' halves are taken by the server; the third's are not read at all.
            await first.drain()
            await second.drain()
            assert gate.reading_large == 2 and gate.waiting_large == 1
            assert third.transport.get_write_buffer_size() > half // 2
            # One admitted upload finishes: its slot goes to the waiting one, and all three are answered.
            first.write(body[half:])
            await until(lambda: gate.waiting_large == 0)
            third.write(body[half:])
            second.write(body[half:])
            for reader, _ in uploads:
                async with asyncio.timeout(30):
                    status, answer = await _response(reader)
                assert status == 200, answer
                assert answer == {"data": {"accounts": []}}
            assert gate.reading_large == 0
        finally:
            for _, writer in uploads:
                writer.close()


@pytest.mark.fault(
    "a chunked body (no Content-Length) streamed past max_request_bytes",
    "413 PAYLOAD_TOO_LARGE as soon as it passes the bound, not after the whole stream",
)
async def test_chunked_body_past_the_bound_is_refused(tmp_path: Path) -> None:
    async with run_server(tmp_path, max_request_bytes=64 * 1024) as server:
        reader, writer = await _connect(server)
        try:
            writer.write(_head(0, server.token, chunked=True))
            chunk = b"x" * 16384
            for _ in range(5):  # 80 KiB: past the bound on the fifth chunk
                writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            await writer.drain()
            async with asyncio.timeout(10):
                status, body = await _response(reader)
        finally:
            writer.close()
        assert status == 413 and body["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"


@pytest.mark.fault(
    "an authenticated body that stops, or trickles a byte at a time",
    "408 (GraphQL: BAD_USER_INPUT; REST: Boom) once it pauses past GQL_MAIL_BODY_IDLE_SECONDS or is not "
    "complete within GQL_MAIL_BODY_READ_SECONDS; its large-body slot is free again",
)
async def test_a_stalled_or_trickling_body_is_cut_off(tmp_path: Path) -> None:
    size = 256 * 1024
    settings = {"large_body_bytes": 64 * 1024, "body_idle_seconds": 0.5, "body_read_seconds": 2.0}
    async with run_server(tmp_path, **settings) as server:
        gate = server.app.state.gate.bodies
        stalled_reader, stalled = await _connect(server)
        trickle_reader, trickle = await _connect(server)
        rest_reader, rest = await _connect(server)
        try:
            stalled.write(_head(size, server.token) + b"{")  # then nothing
            rest.write(_head(size, server.token).replace(b"/graphql", b"/v1/account") + b"{")
            trickle.write(_head(size, server.token))
            async with asyncio.timeout(10):
                status, body = await _response(stalled_reader)
                assert status == 408 and body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", body
                status, body = await _response(rest_reader)
                assert (status, body["statusCode"], body["error"]) == (408, 408, "Request Timeout"), body

                async def drip() -> None:  # a byte every 0.1 s: never idle, never done
                    while True:
                        trickle.write(b" ")
                        await asyncio.sleep(0.1)

                dripping = asyncio.create_task(drip())
                try:
                    status, body = await _response(trickle_reader)
                finally:
                    dripping.cancel()
            assert status == 408, body
            assert gate.reading_large == 0
        finally:
            for writer in (stalled, trickle, rest):
                writer.close()


def _deep(depth: int) -> bytes:
    return b'{"query": "{ accounts { account } }", "variables": {"x": ' + b"[" * depth + b"]" * depth + b"}}"


@pytest.mark.fault(
    "request bodies nested 100,000 levels deep, and malformed bodies of every kind",
    "HTTP 400 BAD_USER_INPUT, no traceback in the server's log",
)
async def test_deep_and_malformed_bodies_are_bad_user_input(server: Server) -> None:
    limit = server.settings.max_json_depth
    malformed: list[tuple[bytes, str]] = [
        (_deep(100_000), f"deeper than {limit}"),
        (_deep(limit + 1), f"deeper than {limit}"),
        (b'{"query": "{ accounts { account } }", "variables": {"x": "' + b"[" * 100_000 + b'"}}', ""),
        (b"{not json", "invalid JSON"),
        (b'{"query": "\xff\xfe"}', "invalid JSON"),
        (b"", "invalid JSON"),
        (b"[1, 2]", "object"),
        (b'"a string"', "object"),
        (b"42", "object"),
        (b"null", "object"),
        (b'{"query": 5}', "query"),
        (b'{"query": "{ accounts { account } }", "variables": [1]}', "variables"),
        (b'{"query": "{ accounts { account } }", "variables": "x"}', "variables"),
        (b'{"query": "{ accounts { account } }", "operationName": ["x"]}', "operationName"),
        (b'{"query": "{ accounts { account } }", "extensions": 3}', "extensions"),
        (b'{"variables": {}}', ""),
        (b'{"query": "\\ud800"}', ""),
    ]
    headers = {"Authorization": f"Bearer {server.token}", "Content-Type": "application/json"}
    with server_log() as log:
        for raw, words in malformed:
            response = await server.http.post(server.url + "/graphql", content=raw, headers=headers)
            body = response.json()
            if raw.startswith(b'{"query": "{ accounts { account } }", "variables": {"x": "'):
                # Brackets inside a string are no nesting: a fine request.
                assert response.status_code == 200 and body == {"data": {"accounts": []}}, raw[:80]
                continue
            code = body["errors"][0]["extensions"]["code"]
            assert (response.status_code, code) == (400, "BAD_USER_INPUT"), (raw[:80], response.text[:300])
            assert words in body["errors"][0]["message"], (raw[:80], body)
        # Nesting up to the limit is fine.
        within = _deep(limit - 3)
        response = await server.http.post(server.url + "/graphql", content=within, headers=headers)
        assert response.status_code == 200, response.text[:300]
        # GET's variables are held to the same rules.
        response = await server.http.get(
            server.url + "/graphql",
            params={"query": QUERY, "variables": "[" * 10_000 + "]" * 10_000},
            headers={"Authorization": f"Bearer {server.token}"},
        )
        assert response.status_code == 400 and response.json()["errors"][0]["extensions"]["code"] == (
            "BAD_USER_INPUT"
        )
    assert tracebacks(log) == []
    assert not any("RecursionError" in line for line in log)
