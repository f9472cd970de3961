"""Which database a test server gets: a fresh SQLite file, or a fresh PostgreSQL database.

`GQL_MAIL_TEST_DATABASE=postgresql` runs the whole suite on PostgreSQL: every server (and every test that
asks for a database) gets its own `CREATE DATABASE test_<hash of its tmp_path>`, so tests never see each
other's rows and can run in any order, while a test that restarts a server finds its rows again. They
are dropped at the end of the session (tests/conftest.py). The server is found at `GQL_MAIL_TEST_PG_URL`
(default: the local trust-auth cluster at 127.0.0.1:5432, database `postgres`, used only to create and
drop).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]

ENV = "GQL_MAIL_TEST_DATABASE"
ADMIN_URL = os.environ.get("GQL_MAIL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def use_postgresql() -> bool:
    """True when this run of the suite targets PostgreSQL."""
    return os.environ.get(ENV, "sqlite").lower() in ("postgresql", "postgres", "pg")


def sqlalchemy_url(dsn: str) -> str:
    """The asyncpg DSN as SQLAlchemy spells it."""
    return "postgresql+asyncpg://" + dsn.split("://", 1)[1]


async def pg_reachable() -> bool:
    """Whether the PostgreSQL at ADMIN_URL answers (the multi-node tests run whenever it does)."""
    try:
        connection = await asyncpg.connect(ADMIN_URL, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await connection.close()
    return True


@asynccontextmanager
async def fresh_postgresql() -> AsyncIterator[str]:
    """A new, empty PostgreSQL database for one test; its SQLAlchemy URL. Dropped afterwards, even if
    a server still holds connections (`WITH (FORCE)`, PostgreSQL 13+)."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base, _, _ = ADMIN_URL.rpartition("/")
    try:
        yield sqlalchemy_url(f"{base}/{name}")
    finally:
        admin = await asyncpg.connect(ADMIN_URL)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


_created: set[str] = set()


async def database_for(tmp_path: Path, name: str = "gql_mail.db") -> str:
    """The PostgreSQL database that stands for the SQLite file `tmp_path / name`: created on first use and
    kept until `drop_created()`, so a test that stops a server and starts another one "on the same
    database" gets the same rows, as it would with the file."""
    db = "test_" + hashlib.sha1(str(tmp_path / name).encode()).hexdigest()[:20]
    if db not in _created:
        admin = await asyncpg.connect(ADMIN_URL)
        try:
            await admin.execute(f'CREATE DATABASE "{db}"')
        except asyncpg.DuplicateDatabaseError:
            pass
        finally:
            await admin.close()
        _created.add(db)
    base, _, _ = ADMIN_URL.rpartition("/")
    return sqlalchemy_url(f"{base}/{db}")


async def drop_created() -> None:
    """Drop every database `database_for` created (end of the test session)."""
    if not _created:
        return
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        for db in sorted(_created):
            await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    finally:
        await admin.close()
    _created.clear()


@asynccontextmanager
async def fresh_database(tmp_path: Path, name: str = "gql_mail.db") -> AsyncIterator[str]:
    """The database this run targets for `tmp_path` (new and empty on first use): its SQLAlchemy URL."""
    if use_postgresql():
        yield await database_for(tmp_path, name)
    else:
        yield f"sqlite+aiosqlite:///{tmp_path / name}"


async def database_contents(url: str, tmp_path: Path) -> bytes:
    """Every byte the database holds at rest, for tests that check no secret is stored in plain text:
    the SQLite files, or on PostgreSQL every row of every table as text."""
    if not url.startswith("postgresql"):
        files = sorted(tmp_path.glob("gql_mail.db*"))  # noqa: ASYNC240 (a test helper; tiny files)
        return b"".join(p.read_bytes() for p in files)
    connection = await asyncpg.connect("postgresql://" + url.split("://", 1)[1])
    try:
        tables = await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        chunks: list[bytes] = []
        for table in tables:
            rows = await connection.fetch(f'SELECT t::text AS row FROM "{table["tablename"]}" t')
            chunks.extend(r["row"].encode() for r in rows)
    finally:
        await connection.close()
    return b"\n".join(chunks)
