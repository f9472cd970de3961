"""A cursor for SQLAlchemy's aiosqlite dialect that costs one hand-off to aiosqlite's thread per statement.

Every aiosqlite call is a trip to its worker thread and back through the event loop. SQLAlchemy's adapter
makes up to four per statement (open the cursor, execute, fetch the rows, close the cursor); under load
each trip also waits its turn on a busy event loop, so a short write transaction held SQLite's one write
lock for several milliseconds and writers queued behind it (measured: a one-row INSERT transaction held
it ~7 ms at 100 submissions/s with 500 websocket subscribers). This cursor runs open + execute + fetch +
close as one function on that thread and keeps what the statement produced (rows, description,
rowcount, lastrowid) for SQLAlchemy to read afterwards.

Installed per connection by `use_one_handoff_cursor` (see `gql_mail.db`), only on gql-mail's engines.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
)
from sqlalchemy.util import await_


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


def use_one_handoff_cursor(dbapi_connection: Any) -> None:
    """Make this pooled aiosqlite connection hand out `OneHandoffCursor`s (SQLAlchemy's "connect" event)."""
    if type(dbapi_connection) is AsyncAdapt_aiosqlite_connection:
        dbapi_connection.__class__ = _OneHandoffConnection
