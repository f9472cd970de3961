"""Applying alembic migrations from code: `serve` and `migrate` both call `upgrade`.

Migrations are the only way tables come to exist, so tests run them too (never `create_all`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

ROOT = Path(__file__).resolve().parent.parent


def alembic_config(database_url: str) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "alembic"))
    cfg.attributes["database_url"] = database_url
    return cfg


# Any constant shared by every gql-mail process: the key of the advisory lock below.
_MIGRATION_LOCK = 0x67716C6D61696C  # "gqlmail"


def _upgrade(connection: Connection, cfg: Config) -> None:
    if connection.dialect.name == "postgresql":
        # Several nodes starting at once on a new database would race to create the same tables; the
        # first takes this lock (held until its transaction commits), the others then find the schema
        # at head and do nothing.
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


async def upgrade(database_url: str) -> None:
    """Bring the database to the newest schema (idempotent)."""
    cfg = alembic_config(database_url)
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade, cfg)
    finally:
        await engine.dispose()


def upgrade_sync(database_url: str) -> None:
    asyncio.run(upgrade(database_url))
