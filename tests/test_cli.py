"""The real CLI, as a user runs it: `python -m gql_mail …` in a subprocess."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlmodel import SQLModel

from gql_mail.config import Settings
from gql_mail.crypto import SecretBox
from gql_mail.db import Database
from gql_mail.models import Account, ServiceSetting, table
from gql_mail.rotation import ENCRYPTED_COLUMNS
from tests.faults.process import ServerProcess
from tests.harness import free_port


def cli(
    tmp_path: Path, *args: str, secret: str = "old-secret-0123456789", stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "GQL_MAIL_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        "GQL_MAIL_SECRET": secret,
        "GQL_MAIL_DATA_DIR": str(tmp_path / "data"),
        "GQL_MAIL_LOG_LEVEL": "warning",
    }
    return subprocess.run(
        [sys.executable, "-m", "gql_mail", *args],
        capture_output=True,
        text=True,
        input=stdin,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )


def test_token_lifecycle(tmp_path: Path) -> None:
    created = cli(tmp_path, "token", "create", "--description", "ci")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("gqlm_") and "\n" not in token
    listed = cli(tmp_path, "token", "list")
    assert "ci" in listed.stdout and token not in listed.stdout and "active" in listed.stdout
    token_id = listed.stdout.split("\t")[0]
    assert cli(tmp_path, "token", "revoke", token_id).returncode == 0
    assert "revoked" in cli(tmp_path, "token", "list").stdout
    assert cli(tmp_path, "token", "revoke", "nope").returncode == 2


def test_schema_command_prints_sdl(tmp_path: Path) -> None:
    result = cli(tmp_path, "schema")
    assert result.returncode == 0 and "submitMessage" in result.stdout


def test_serve_answers_health_and_graphql(tmp_path: Path) -> None:
    token = cli(tmp_path, "token", "create").stdout.strip()
    port = free_port()
    env = {
        **os.environ,
        "GQL_MAIL_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        "GQL_MAIL_SECRET": "old-secret-0123456789",
        "GQL_MAIL_DATA_DIR": str(tmp_path / "data"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "gql_mail", "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        with httpx.Client(timeout=2) as client:
            for _ in range(200):
                try:
                    health = client.get(f"http://127.0.0.1:{port}/health")
                    break
                except httpx.TransportError:
                    if proc.poll() is not None:
                        raise AssertionError(proc.stderr.read().decode() if proc.stderr else "") from None
                    time.sleep(0.05)  # waiting for the process to bind its port, not for a result
            assert health.json() == {"status": "ok"}
            answer = client.post(
                f"http://127.0.0.1:{port}/graphql",
                json={"query": "{ accounts { account } }"},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert answer.json() == {"data": {"accounts": []}}
            assert (
                client.get(f"http://127.0.0.1:{port}/graphql", headers={"Accept": "text/html"}).status_code
                == 200
            )
    finally:
        proc.terminate()
        proc.wait(10)


def test_service_secret_is_printed_generated_once_and_replaced_from_stdin(tmp_path: Path) -> None:
    first = cli(tmp_path, "service-secret")
    assert first.returncode == 0, first.stderr
    generated = first.stdout.strip()
    assert len(generated) == 32 and int(generated, 16) >= 0
    assert cli(tmp_path, "service-secret").stdout.strip() == generated, "generated once"
    replaced = cli(tmp_path, "service-secret", "--set", stdin="receiver-knows-this-one\n")
    assert replaced.returncode == 0, replaced.stderr
    assert cli(tmp_path, "service-secret").stdout.strip() == "receiver-knows-this-one"
    refused = cli(tmp_path, "service-secret", "--set", stdin="short\n")
    assert refused.returncode == 2 and "at least 16" in refused.stderr
    assert cli(tmp_path, "service-secret").stdout.strip() == "receiver-knows-this-one"


def test_rotate_secret_reencrypts(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    assert cli(tmp_path, "migrate").returncode == 0
    old = SecretBox("old-secret-0123456789")

    async def seed() -> None:
        now = datetime.now(UTC)
        db = Database(url)
        async with db.write() as session:
            session.add(
                Account(
                    id="a",
                    name="A",
                    email="a@example.com",
                    smtp_host="h",
                    smtp_port=25,
                    smtp_user="u",
                    smtp_pass_enc=old.encrypt("pw-1"),
                    created_at=now,
                    updated_at=now,
                )
            )
            session.add(ServiceSetting(key="serviceSecret", value_enc=old.encrypt("svc-1"), updated_at=now))
        await db.dispose()

    async def read() -> tuple[str | None, str | None]:
        db = Database(url)
        async with db.read() as session:
            row = await session.get(Account, "a")
            setting = await session.get(ServiceSetting, "serviceSecret")
        await db.dispose()
        return (row.smtp_pass_enc if row else None), (setting.value_enc if setting else None)

    asyncio.run(seed())
    result = cli(tmp_path, "rotate-secret", "--new-secret", "new-secret-9876543210")
    assert result.returncode == 0, result.stderr
    assert "re-encrypted 2" in result.stderr
    stored, service_secret = asyncio.run(read())
    assert stored is not None and service_secret is not None
    assert SecretBox("new-secret-9876543210").decrypt(stored) == "pw-1"
    assert SecretBox("new-secret-9876543210").decrypt(service_secret) == "svc-1"
    # Running it again changes nothing.
    assert "re-encrypted 0" in cli(tmp_path, "rotate-secret", "--new-secret", "new-secret-9876543210").stderr


def test_rotation_covers_every_encrypted_column() -> None:
    """A secret column (`*_enc`) left out of the rotation would be unreadable after `rotate-secret`."""
    stored = {
        (model, column.name)
        for model in (m for m in SQLModel.__subclasses__() if hasattr(m, "__table__"))
        for column in table(model).columns
        if column.name.endswith("_enc")
    }
    rotated = {(model, name) for model, names in ENCRYPTED_COLUMNS.items() for name in names}
    assert stored == rotated


def test_serve_keeps_idle_connections_longer_than_clients_do() -> None:
    """Equal idle timers on both ends reset a request sent just as the server closes (seen under load as
    httpx ReadError); the server's default outlasts the usual client pools' expiry."""
    assert Settings().http_keep_alive_seconds > httpx.Limits().keepalive_expiry  # type: ignore[operator]
    assert Settings().http_keep_alive_seconds >= 60  # behind a load balancer (60 s idle is common)


async def test_serve_closes_idle_connections_after_the_setting(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path, GQL_MAIL_HTTP_KEEP_ALIVE_SECONDS="1").start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.readuntil(b'{"status":"ok"}'), 10)
        assert answer.startswith(b"HTTP/1.1 200")
        # The server closes the idle connection by itself (EOF), well before the default 75 s.
        assert await asyncio.wait_for(reader.read(), 20) == b""
        writer.close()
    finally:
        proc.stop()
