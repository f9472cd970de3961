"""Engines and units of work.

SQLite allows one writer at a time. Write transactions therefore go through `Database.write()`, which on
SQLite takes an in-process lock and starts with `BEGIN IMMEDIATE`: a deferred transaction that reads and
then writes can fail at once with "database is locked" (busy_timeout does not help a snapshot upgrade), an
immediate one just waits its turn. Reads use a separate engine and never block in WAL mode. On PostgreSQL
both are the same engine and row locks (`FOR UPDATE SKIP LOCKED`) do the work.

Round trips are the cost on SQLite: every aiosqlite call is a hand-off to its thread and back through a
loop that may be busy. Writes therefore run on the event loop itself (`sqlite_driver.run_on_event_loop`:
the write lock is held for the work alone), reads on aiosqlite's thread with one hand-off per statement.
A read runs in autocommit mode (no BEGIN: each statement is consistent on its own, and every read in
gql-mail is one statement or needs no snapshot across statements; `read(snapshot=True)` begins a
transaction for one that does), and a ROLLBACK is sent only when the connection really is in a
transaction: not after a commit, not after an autocommit read, and not again when the pool takes the
connection back.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson
from sqlalchemy import Executable, Row, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from gql_mail.sqlite_driver import await_, run_on_event_loop, use_one_handoff_cursor

log = logging.getLogger(__name__)

# How long a write waits for another process to release SQLite's write lock.
WRITE_LOCK_TIMEOUT_SECONDS = 30.0


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


# JSON columns (envelopes, recipients) through orjson: the standard library's encoder was a visible share of
# recording a batch of delivery outcomes. Reading stays compatible: both write plain JSON text.
JSON_CODEC: dict[str, Any] = {"json_serializer": _json_dumps, "json_deserializer": orjson.loads}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _in_transaction(dbapi_connection: Any) -> bool:
    """Whether SQLite has a transaction open on this connection (a plain attribute read, no hand-off)."""
    driver = getattr(dbapi_connection, "driver_connection", None)
    in_transaction = getattr(driver, "in_transaction", None)
    return in_transaction is not False  # unknown: assume it does


def _make_sqlite_engine(url: str, *, immediate: bool, inline: bool = False) -> AsyncEngine:
    # Reset on return is `_rollback_if_open`'s job (below): the pool's own reset would always send one.
    connect_args: dict[str, Any] = {"timeout": 30}
    if inline:
        connect_args["check_same_thread"] = False  # used from the event loop's thread (run_on_event_loop)
    engine = create_async_engine(url, connect_args=connect_args, pool_reset_on_return=None, **JSON_CODEC)
    dialect = engine.sync_engine.dialect
    plain_rollback = dialect.do_rollback

    def rollback_if_open(dbapi_connection: Any) -> None:
        # `in_transaction` is current here: nothing is left running on the connection's thread, because a
        # call a cancelled task stopped waiting for (BEGIN included, see `begin_immediate`) invalidates
        # the connection instead of leaving it to a rollback.
        if _in_transaction(dbapi_connection):
            plain_rollback(dbapi_connection)

    dialect.do_rollback = rollback_if_open  # type: ignore[method-assign]

    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, record: Any) -> None:
        # Take transaction control from the driver so we decide how each transaction begins.
        dbapi_connection.isolation_level = None
        _sqlite_pragmas(dbapi_connection, record)
        if inline:
            run_on_event_loop(dbapi_connection)
            # Never wait for the lock on the event loop: `begin_immediate` retries instead (see there).
            dbapi_connection.execute("PRAGMA busy_timeout=0")
        else:
            use_one_handoff_cursor(dbapi_connection)

    if immediate:

        def begin_immediate(dbapi_connection: Any) -> None:
            # Straight to aiosqlite's connection: no cursor of SQLAlchemy's to open and close. Another
            # process (a CLI command, say) may hold SQLite's write lock: this connection runs on the event
            # loop, so rather than let SQLite's busy timeout block the loop, it sleeps between attempts.
            # Once BEGIN IMMEDIATE succeeds, nothing in the transaction waits for a lock (WAL mode).
            #
            # This is the dialect's `do_begin`, not a "begin" event: SQLAlchemy handles what `do_begin`
            # raises as it does a statement's error, and a cancellation (BaseException) makes it
            # invalidate the connection. Raised from the event, it would bypass that handling and the
            # pooled connection would go back as it was; on aiosqlite's thread (bulk writes) the BEGIN
            # the cancelled task stopped waiting for still runs there afterwards, and that connection then
            # held SQLite's write lock with no one to release it: every later write waited for ever.
            # Invalidated, the connection is closed on its thread after that BEGIN, and closing rolls back.
            driver = dbapi_connection.driver_connection
            deadline = time.monotonic() + WRITE_LOCK_TIMEOUT_SECONDS
            delay = 0.001
            while True:
                try:
                    await_(driver.execute("BEGIN IMMEDIATE"))
                    return
                except sqlite3.OperationalError as error:
                    if "locked" not in str(error) or time.monotonic() > deadline:
                        raise DBAPIError.instance("BEGIN IMMEDIATE", None, error, sqlite3.Error) from error
                except sqlite3.Error as error:
                    raise DBAPIError.instance("BEGIN IMMEDIATE", None, error, sqlite3.Error) from error
                await_(asyncio.sleep(delay))
                delay = min(delay * 2, 0.05)

        dialect.do_begin = begin_immediate  # type: ignore[method-assign]

    return engine


class Database:
    """The engines plus the two ways to open a unit of work: `read()` and `write()`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = make_url(url).get_backend_name() == "sqlite"
        if self.is_sqlite:
            self.write_engine = _make_sqlite_engine(url, immediate=True, inline=True)
            self.read_engine = _make_sqlite_engine(url, immediate=False)
            self._small_read_engine = _make_sqlite_engine(url, immediate=False, inline=True)
            self._bulk_write_engine = _make_sqlite_engine(url, immediate=True)
        else:
            # No pre-ping: it costs a round trip per checkout (~15 % of a submission's CPU on PostgreSQL).
            # After a server restart the first query on a dead connection fails, and SQLAlchemy then
            # invalidates the whole pool, so one unit of work fails (and is retried by its caller).
            self.write_engine = create_async_engine(
                url, pool_size=10, max_overflow=20, pool_pre_ping=False, **JSON_CODEC
            )
            self.read_engine = self.write_engine
            self._small_read_engine = self.write_engine
            self._bulk_write_engine = self.write_engine
        self._bulk_write_sessions = async_sessionmaker(self._bulk_write_engine, expire_on_commit=False)
        self._write_sessions = async_sessionmaker(self.write_engine, expire_on_commit=False)
        self._read_sessions = async_sessionmaker(self.read_engine, expire_on_commit=False)
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        parsed = make_url(url)
        database = parsed.database or ""
        # The file behind a SQLite URL, for `lookup`'s direct connection (none for in-memory or URI names).
        self._sqlite_path = (
            database
            if self.is_sqlite
            and database
            and database != ":memory:"
            and not database.startswith("file:")
            and not parsed.query
            else None
        )
        self._lookup_connection: sqlite3.Connection | None = None

    def _lookup_sqlite(self, sql: str, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        if self._lookup_connection is None:
            assert self._sqlite_path is not None
            connection = sqlite3.connect(self._sqlite_path, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA query_only=ON")
            # Never wait on the event loop: a busy database sends the lookup down the ordinary path.
            connection.execute("PRAGMA busy_timeout=0")
            self._lookup_connection = connection
        row: tuple[Any, ...] | None = self._lookup_connection.execute(sql, params).fetchone()
        return row

    async def lookup(self, sql: str, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The first row of one small indexed read (named `:params`), read from the latest commit.

        On a SQLite file it runs right here on the event loop, through a read-only connection of its own:
        an indexed read of a few rows takes microseconds in WAL mode (readers never wait for the writer),
        far less than the hand-offs to aiosqlite's thread a session costs (~0.6 ms of CPU). Only for
        statements that touch a handful of rows through an index, such as the token check of every
        request; anything else belongs in `read()`."""
        if self._sqlite_path is not None:
            try:
                return self._lookup_sqlite(sql, params)
            except sqlite3.OperationalError as exc:  # busy (a WAL recovery), or a schema not yet there
                log.debug("direct lookup failed (%s); reading through the engine", exc)
        async with self.read_engine.connect() as connection:
            row = (await connection.execute(text(sql), dict(params))).first()
        return None if row is None else tuple(row)

    async def small_read(self, statement: Executable) -> Sequence[Row[Any]]:
        """All rows of one read of a few rows (the accounts, say): on SQLite right here on the event loop,
        like `lookup`, but through SQLAlchemy (the columns' types are converted as in any read).

        A hand-off to aiosqlite's thread cost more than such a read (its queue's wake-up of the thread was
        ~a quarter of a trivial query's CPU, py-spy); the rows' conversion happens on the loop either way.
        Busy (a WAL recovery), the read goes to aiosqlite's thread."""
        if self.is_sqlite:
            try:
                async with self._small_read_engine.connect() as connection:
                    return (await connection.execute(statement)).all()
            except OperationalError as exc:
                log.debug("small read on the event loop failed (%s); reading through the thread", exc)
        async with self.read_engine.connect() as connection:
            return (await connection.execute(statement)).all()

    @asynccontextmanager
    async def read(self, *, snapshot: bool = False) -> AsyncIterator[AsyncSession]:
        """A session for reading. On SQLite each statement sees the latest commit; with `snapshot=True`
        all its statements see the same one (PostgreSQL: always one transaction, as before)."""
        async with self._read_sessions() as session:
            if snapshot and self.is_sqlite:
                connection = await session.connection()
                await connection.exec_driver_sql("BEGIN")
            yield session

    @asynccontextmanager
    async def write(self, *, bulk: bool = False) -> AsyncIterator[AsyncSession]:
        """A session whose transaction commits on success and rolls back on error.

        On SQLite a write runs on the event loop (see `sqlite_driver`). `bulk=True` is for a transaction
        of many rows: it runs on aiosqlite's thread instead, so SQLite's own work (which releases the GIL)
        overlaps with the event loop's rather than stopping it for milliseconds."""
        sessions = self._bulk_write_sessions if bulk else self._write_sessions
        if self._write_lock is None:
            async with sessions() as session, session.begin():
                yield session
            return
        async with self._write_lock, sessions() as session, session.begin():
            yield session

    async def dispose(self) -> None:
        if self._lookup_connection is not None:
            self._lookup_connection.close()
            self._lookup_connection = None
        await self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            await self.read_engine.dispose()
            await self._small_read_engine.dispose()
            await self._bulk_write_engine.dispose()
