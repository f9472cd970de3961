"""gql_mail/sqlite_driver.py leans on SQLAlchemy's and aiosqlite's internals: these tests name what a new
release took away, and prove the fast paths are really installed (a failed swap would fall back silently).
"""

from __future__ import annotations

import inspect
import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite
import sqlalchemy.util
from sqlalchemy import text
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
)
from sqlalchemy.exc import OperationalError

from gql_mail.db import Database
from gql_mail.sqlite_driver import OneHandoffCursor, _InlineConnection, _OneHandoffConnection

# Base methods that use the driver cursor but are never reached through OneHandoffCursor: the first two
# are called only by execute/executemany (overridden); SQLAlchemy's SQLite dialect calls neither of the
# others.
NOT_REACHED = {"__init__", "_execute_async", "_executemany_async", "nextset", "setinputsizes"}


def test_sqlalchemy_still_has_what_the_driver_relies_on() -> None:
    assert callable(getattr(sqlalchemy.util, "await_", None)), "sqlalchemy.util.await_ is gone"
    slots = {
        name for klass in AsyncAdapt_aiosqlite_cursor.__mro__ for name in getattr(klass, "__slots__", ())
    }
    relied = {"_adapt_connection", "_connection", "_rows", "_soft_closed_memoized"}
    assert relied <= slots, f"AsyncAdapt_aiosqlite_cursor lacks the slots {sorted(relied - slots)}"
    unknown = slots - relied - {"_cursor"} - set(OneHandoffCursor.__slots__)
    assert not unknown, f"AsyncAdapt_aiosqlite_cursor has new state OneHandoffCursor never sets: {unknown}"
    for name in ("_cursor_cls", "_handle_exception", "driver_connection"):
        assert hasattr(AsyncAdapt_aiosqlite_connection, name), f"AsyncAdapt_aiosqlite_connection lacks {name}"


def test_every_cursor_method_that_uses_the_driver_cursor_is_overridden() -> None:
    """OneHandoffCursor never opens a driver cursor (`_cursor`): any base method reading it must be ours."""
    missing = []
    for klass in AsyncAdapt_aiosqlite_cursor.__mro__[:-1]:
        for name, member in vars(klass).items():
            function: Any = member.fget if isinstance(member, property) else member
            try:
                source = inspect.getsource(function)
            except (TypeError, OSError):
                continue
            if "self._cursor" in source and name not in NOT_REACHED and name not in vars(OneHandoffCursor):
                missing.append(f"{klass.__name__}.{name}")
    assert not missing, f"OneHandoffCursor must override {missing} (they read the driver cursor)"


def test_aiosqlite_still_has_what_the_driver_relies_on() -> None:
    execute = getattr(aiosqlite.Connection, "_execute", None)
    assert execute is not None, "aiosqlite.Connection._execute is gone"
    parameters = list(inspect.signature(execute).parameters.values())
    assert [p.kind for p in parameters[1:]] == [
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.VAR_POSITIONAL,
        inspect.Parameter.VAR_KEYWORD,
    ], f"aiosqlite.Connection._execute is no longer (fn, *args, **kwargs): {inspect.signature(execute)}"
    assert isinstance(inspect.getattr_static(aiosqlite.Connection, "_conn", None), property), (
        "aiosqlite.Connection._conn is gone"
    )


async def test_the_fast_paths_are_installed(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'driver.db'}")
    try:
        async with db.write() as session:
            connection = await session.connection()
            adapted: Any = (await connection.get_raw_connection()).dbapi_connection
            assert type(adapted) is _OneHandoffConnection, type(adapted)
            driver = adapted.driver_connection
            assert type(driver) is _InlineConnection, type(driver)
            for name in ("_running", "_connection"):
                assert hasattr(driver, name), f"aiosqlite.Connection instances lack {name}"
            await session.execute(text("CREATE TABLE t (x INTEGER)"))
            await session.execute(text("INSERT INTO t VALUES (1), (2)"))
        async with db.read() as session:
            connection = await session.connection()
            adapted = (await connection.get_raw_connection()).dbapi_connection
            assert type(adapted) is _OneHandoffConnection, type(adapted)
            assert type(adapted.driver_connection) is aiosqlite.Connection
            assert (await session.execute(text("SELECT sum(x) FROM t"))).scalar() == 3
    finally:
        await db.dispose()


async def test_small_read_runs_on_the_loop_and_falls_back_to_the_thread(tmp_path: Path) -> None:
    """`small_read` reads through the event-loop engine; when SQLite refuses there (busy), the same read
    goes through aiosqlite's thread and still answers."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'small.db'}")
    try:
        async with db.write() as session:
            await session.execute(text("CREATE TABLE t (x INTEGER)"))
            await session.execute(text("INSERT INTO t VALUES (1), (2)"))
        statement = text("SELECT x FROM t ORDER BY x")
        assert [row.x for row in await db.small_read(statement)] == [1, 2]
        async with db._small_read_engine.connect() as connection:
            adapted: Any = (await connection.get_raw_connection()).dbapi_connection
            assert type(adapted.driver_connection) is _InlineConnection

        class Busy:
            def connect(self) -> Any:
                raise OperationalError("SELECT", None, sqlite3.OperationalError("database is locked"))

        engine, db._small_read_engine = db._small_read_engine, Busy()  # type: ignore[assignment]
        try:
            assert [row.x for row in await db.small_read(statement)] == [1, 2]
        finally:
            db._small_read_engine = engine
    finally:
        await db.dispose()
