"""How gql-mail drives SQLite under SQLAlchemy's aiosqlite dialect: fewer trips to aiosqlite's thread.

Every aiosqlite call is a trip to its worker thread and back through the event loop, and on a busy loop
each trip also waits for the loop's current round of callbacks (a few milliseconds with hundreds of
websocket subscribers). SQLAlchemy's adapter makes up to four per statement (open the cursor, execute,
fetch, close). Two remedies, installed per connection from `gql_mail.db`, on gql-mail's engines only:

- `OneHandoffCursor` runs open + execute + fetch + close as one function on that thread and keeps what
  the statement produced (rows, description, rowcount, lastrowid) for SQLAlchemy to read afterwards.
- `run_on_event_loop` makes the write engine's connections execute right on the event loop. A write
  transaction holds SQLite's only write lock; with trips to the thread, each of its five or so statements
  waited for a loop round, so a transaction of well under a millisecond of work held the lock for tens of
  milliseconds and every writer queued behind it (measured: a delivery outcome waited ~50 ms, p99 ~290 ms,
  to be recorded at 100 messages/s with 500 subscribers). Inline, the lock is held for the work alone.
  The statements are small indexed writes (WAL mode: a commit appends to the log, no fsync), and
  reads, which can be large, stay on the thread.

This module is gql-mail's only use of SQLAlchemy's and aiosqlite's internals (hence the upper bounds on
both in pyproject: SQLAlchemy and aiosqlite 0.x change them in minor releases). It relies on:
SQLAlchemy's `sqlalchemy.util.await_` (2.1+; `gql_mail.db` takes it from here), the adapter classes
`AsyncAdapt_aiosqlite_connection` (`_cursor_cls`, `_connection`, `_handle_exception`, `driver_connection`)
and `AsyncAdapt_aiosqlite_cursor` (its slots `_adapt_connection`, `_connection`, `_rows`,
`_soft_closed_memoized`; every method of it that touches the driver cursor `_cursor` is overridden below);
aiosqlite's `Connection._execute(fn, *args, **kwargs)`, `_running`, `_connection` and `_conn`.
tests/test_sqlite_driver.py fails, naming what is missing, when a release lacks any of it, and when the
cursor or connection swap below does not happen (which would otherwise fall back silently).
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
)
from sqlalchemy.util import await_

__all__ = ["OneHandoffCursor", "await_", "run_on_event_loop", "use_one_handoff_cursor"]


class OneHandoffCursor(AsyncAdapt_aiosqlite_cursor):
    __slots__ = ("_description", "_rowcount", "_lastrowid", "_arraysize")

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection) -> None:
        # Deliberately not the base __init__: it opens a driver cursor (a hand-off of its own).
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._rows: collections.deque[Any] = collections.deque()
        self._soft_closed_memoized: Any = {}
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._arraysize = 1

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]

    def _run(self, call: Callable[[sqlite3.Cursor], object]) -> None:
        """On aiosqlite's thread: the whole statement, start to finish."""
        cursor = self._connection._conn.cursor()
        try:
            call(cursor)
            self._description = cursor.description
            if cursor.description is not None:
                self._rows = collections.deque(cursor.fetchall())
            self._rowcount = cursor.rowcount
            self._lastrowid = cursor.lastrowid
        finally:
            cursor.close()

    def _handoff(self, call: Callable[[sqlite3.Cursor], object]) -> None:
        try:
            await_(self._connection._execute(self._run, call))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    def execute(self, operation: Any, parameters: Any = None) -> None:
        if parameters is None:
            self._handoff(lambda cursor: cursor.execute(operation))
        else:
            self._handoff(lambda cursor: cursor.execute(operation, parameters))

    def executemany(self, operation: Any, seq_of_parameters: Sequence[Any]) -> None:
        self._handoff(lambda cursor: cursor.executemany(operation, seq_of_parameters))

    async def _async_soft_close(self) -> None:
        return None  # nothing is open on the driver's side

    def close(self) -> None:
        self._rows.clear()


class _OneHandoffConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = OneHandoffCursor  # type: ignore[assignment]


class _InlineConnection(aiosqlite.Connection):
    """aiosqlite's connection with every call run at once on the calling (event loop) thread. Opening and
    closing still go through its thread, which is otherwise idle."""

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        return fn(*args, **kwargs)


def use_one_handoff_cursor(dbapi_connection: Any) -> None:
    """Make this pooled aiosqlite connection hand out `OneHandoffCursor`s (SQLAlchemy's "connect" event)."""
    if type(dbapi_connection) is AsyncAdapt_aiosqlite_connection:
        dbapi_connection.__class__ = _OneHandoffConnection


def run_on_event_loop(dbapi_connection: Any) -> None:
    """Make this pooled aiosqlite connection execute on the event loop (its sqlite3 connection must have
    been opened with check_same_thread=False)."""
    use_one_handoff_cursor(dbapi_connection)
    driver = dbapi_connection.driver_connection
    if type(driver) is aiosqlite.Connection:
        driver.__class__ = _InlineConnection
