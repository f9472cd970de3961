"""/health/live and /health/ready on a real server, and what makes a node not ready."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from gql_mail import health
from gql_mail.migrations import head_revisions
from gql_mail.runtime import Runtime
from tests.harness import Server


async def test_live_and_ready(server: Server) -> None:
    live = await server.http.get(server.url + "/health/live")
    assert live.status_code == 200 and live.json() == {"status": "ok"}
    ready = await server.http.get(server.url + "/health/ready")
    assert ready.status_code == 200 and ready.json() == {"status": "ok", "workers": "running"}
    assert (await server.http.get(server.url + "/health")).json() == {"status": "ok"}, "kept as it was"


async def test_not_ready_when_the_schema_is_not_at_head(server: Server) -> None:
    (head,) = head_revisions()
    async with server.runtime.db.write() as session:
        await session.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    try:
        answer = await server.http.get(server.url + "/health/ready")
        assert answer.status_code == 503
        assert "migrations" in answer.json()["reason"]
        assert answer.json()["database"] == ["0001"] and answer.json()["expected"] == [head]
        assert (await server.http.get(server.url + "/health/live")).status_code == 200
    finally:
        async with server.runtime.db.write() as session:
            await session.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": head})


async def test_not_ready_when_the_database_does_not_answer(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unreachable(rt: Runtime) -> frozenset[str]:
        raise ConnectionRefusedError("database down")

    monkeypatch.setattr(health, "schema_revisions", unreachable)
    answer = await server.http.get(server.url + "/health/ready")
    assert answer.status_code == 503
    assert answer.json() == {"status": "unavailable", "reason": "database unreachable"}
    assert (await server.http.get(server.url + "/health/live")).status_code == 200


async def test_not_ready_when_the_workers_stopped(server: Server) -> None:
    # Really stopped: this cancels whatever job is running, perhaps mid-write, and the server's own stop
    # (the fixture's teardown) then writes again (tests/test_cancelled_writes.py).
    server.workers.scheduler.shutdown()
    answer = await server.http.get(server.url + "/health/ready")
    assert answer.status_code == 503
    assert answer.json()["reason"] == "the scheduler is not running"
