"""A write cut off by a cancellation must leave no transaction behind (gql_mail/db.py).

The scheduler's shutdown cancels a running job's task wherever it is, and so does a timeout: inside a
write that may be while BEGIN, a statement or COMMIT is in flight. A transaction left open on a pooled
connection would hold SQLite's only write lock for ever (every later write, the server's own stop
included, would then wait for it) or, on PostgreSQL, the rows it updated. So after each cancellation a
fresh write of the same row must go through; the bound on it is for a hang, not a timing. And the
cancelled write is all or nothing: its two rows are both there or neither is.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from gql_mail.db import Database
from tests.databases import fresh_database

# Only a transaction left holding a lock makes a write wait this long.
HANG_SECONDS = 10.0

PATHS = [pytest.param(False, id="on-loop"), pytest.param(True, id="bulk")]


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with fresh_database(tmp_path) as url:
        database = Database(url)
        try:
            async with database.write() as session:
                await session.execute(text("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER)"))
                await session.execute(text("CREATE TABLE counted (trial INTEGER NOT NULL)"))
                await session.execute(text("INSERT INTO counter VALUES (1, 0)"))
            # A pooled connection in each engine, so a write's first await is its BEGIN (no connect).
            async with database.write(bulk=True) as session:
                await session.execute(text("SELECT 1"))
            yield database
        finally:
            await database.dispose()


async def count(db: Database, trial: int, *, bulk: bool, progress: list[str] | None = None) -> None:
    """One write of two statements: the counter's row (PostgreSQL: locked until the transaction ends)
    and a row of its own."""
    async with db.write(bulk=bulk) as session:
        await session.execute(text("UPDATE counter SET n = n + 1 WHERE id = 1"))
        if progress is not None:
            progress.append("updated")
        # A turn of the loop inside the transaction, as a writer awaiting anything else would make: a
        # cancellation can land here on every path.
        await asyncio.sleep(0)
        await session.execute(text("INSERT INTO counted (trial) VALUES (:trial)"), {"trial": trial})
        if progress is not None:
            progress.append("inserted")


async def assert_nothing_left_open(db: Database, trial: int) -> None:
    """Fresh writes on both paths go through (they update the row the cancelled write updated), and the
    cancelled write is all or nothing."""
    try:
        async with asyncio.timeout(HANG_SECONDS):
            await count(db, -trial, bulk=False)
            await count(db, -trial, bulk=True)
    except TimeoutError:
        raise AssertionError(f"trial {trial}: a write cancelled earlier left its transaction open") from None
    async with db.read() as session:
        n = (await session.execute(text("SELECT n FROM counter WHERE id = 1"))).scalar_one()
        rows = (await session.execute(text("SELECT count(*) FROM counted"))).scalar_one()
    assert n == rows, f"trial {trial}: a cancelled write was committed in part ({n} updates, {rows} rows)"


async def cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("bulk", PATHS)
async def test_a_write_cancelled_at_any_await_leaves_no_transaction_open(db: Database, bulk: bool) -> None:
    """Cancel the write after 0, 1, 2, ... turns of the event loop until it finishes first: every await
    it makes (checkout, BEGIN, each statement, COMMIT, the connection's return) is cut at in some trial."""
    cut_after: set[str] = set()
    for trial in itertools.count(1):
        progress: list[str] = []
        task = asyncio.create_task(count(db, trial, bulk=bulk, progress=progress))
        for _ in range(trial - 1):
            await asyncio.sleep(0)
        if task.done():
            await task
            break
        await cancelled(task)
        cut_after.add(progress[-1] if progress else "start")
        await assert_nothing_left_open(db, trial)
    # Cut before its first statement was done (at the start, in BEGIN or that statement), between its
    # statements, and after them (at COMMIT or the connection's return). On the bulk path the statements
    # run on aiosqlite's thread, whose progress per turn of the loop depends on the machine's load (on a
    # busy one every cut fell before the first statement until a trial finished): there, only that cuts
    # happened is certain; the lock-waiting test below cuts it in BEGIN for sure.
    expected = {"start"} if bulk and db.is_sqlite else {"start", "updated", "inserted"}
    assert expected <= cut_after, cut_after


@contextlib.asynccontextmanager
async def lock_held_elsewhere(db: Database) -> AsyncIterator[Callable[[], Awaitable[bool]]]:
    """Hold, from a connection of our own, the lock `count` needs first: SQLite's write lock (the write
    then waits in BEGIN IMMEDIATE) or, on PostgreSQL, the counter's row (it waits in its UPDATE). Yields
    a check of whether the write is waiting there now; lets go on exit."""
    url = make_url(db.url)
    if db.is_sqlite:
        assert url.database
        holder = sqlite3.connect(url.database, isolation_level=None, timeout=0)
        holder.execute("BEGIN IMMEDIATE")

        async def sqlite_waiting() -> bool:
            # The pools are warm (see `db`): once it has the in-process lock, its first await is BEGIN.
            return db._write_lock is not None and db._write_lock.locked()

        try:
            yield sqlite_waiting
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        return
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    holder, watcher = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        holder_transaction = holder.transaction()
        await holder_transaction.start()
        await holder.execute("SELECT n FROM counter WHERE id = 1 FOR UPDATE")

        async def postgresql_waiting() -> bool:
            waiting = await watcher.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            )
            return bool(waiting)

        try:
            yield postgresql_waiting
        finally:
            await holder_transaction.rollback()
    finally:
        await holder.close()
        await watcher.close()


@pytest.mark.parametrize("bulk", PATHS)
async def test_a_write_cancelled_while_it_waits_for_a_lock_leaves_no_transaction_open(
    db: Database, bulk: bool
) -> None:
    """Deterministically cut where the lock is waited for: on SQLite's thread path BEGIN IMMEDIATE is
    still waiting there when the task is cancelled, and takes the lock once the other connection lets
    go."""
    async with lock_held_elsewhere(db) as waiting:
        task = asyncio.create_task(count(db, 1, bulk=bulk))
        async with asyncio.timeout(HANG_SECONDS):
            while not await waiting():
                assert not task.done(), task
                await asyncio.sleep(0.001)
        task.cancel()
        # The cancellation reaches the write while the lock is still held (its cleanup may then wait for
        # the thread's BEGIN, which ends once the lock is let go: so the task is awaited after that).
        for _ in range(3):
            await asyncio.sleep(0)
    async with asyncio.timeout(HANG_SECONDS):
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await assert_nothing_left_open(db, 1)
