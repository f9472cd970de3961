"""Tables come only from migrations; the models must describe exactly what the migrations build."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

import gql_mail.models  # noqa: F401
from gql_mail.migrations import upgrade
from tests.databases import fresh_postgresql, pg_reachable


def _diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, SQLModel.metadata))


async def _assert_models_match(url: str) -> None:
    await upgrade(url)
    await upgrade(url)  # idempotent
    engine = create_async_engine(url)
    async with engine.connect() as connection:
        diff = await connection.run_sync(_diff)
    await engine.dispose()
    assert diff == []


async def test_models_match_migrations(tmp_path: Path) -> None:
    await _assert_models_match(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")


async def test_models_match_migrations_on_postgresql() -> None:
    """The same migrations build the same schema on PostgreSQL (runs whenever one is reachable)."""
    if not await pg_reachable():
        pytest.skip("no PostgreSQL reachable at GQL_MAIL_TEST_PG_URL")
    async with fresh_postgresql() as url:
        await _assert_models_match(url)
