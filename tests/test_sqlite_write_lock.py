"""Another connection holding SQLite's write lock (a CLI command, a backup) must not stall the server.

The server's writes run on the event loop (gql_mail/db.py); while another connection holds the write
lock, BEGIN IMMEDIATE is retried with sleeps between attempts instead of SQLite's busy wait, so the
loop keeps serving reads, and the write goes through once the lock is free.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import account_input, register_connected
from tests.databases import use_postgresql
from tests.harness import Server
from tests.servers.smtp import SmtpServer

pytestmark = pytest.mark.skipif(
    use_postgresql(), reason="SQLite's file write lock; PostgreSQL has no database-wide write lock"
)

SUBMIT = """
mutation Submit($account: ID!, $input: SubmitMessageInput!) {
  submitMessage(account: $account, input: $input) { queueId messageId }
}"""
MESSAGE = "query M($q: ID!) { message(queueId: $q) { queueId account messageId envelope { to } } }"

# "Promptly" is a bound for a stall, not a timing. A read queued behind the held lock would wait until the
# test lets go, and a loop stalled by SQLite's busy wait would stall for its 30 s; a read that merely
# runs into a full garbage collection of a loaded test process does not (one took 0.6 s after the first
# test's server, on two busy cores, and a full run once took a read over the former 1 s bound that way).
PROMPTLY = 5.0


def database_file(server: Server) -> str:
    url = make_url(server.settings.database_url)
    assert url.get_backend_name() == "sqlite" and url.database, url
    return url.database


@asynccontextmanager
async def write_lock_held(path: str) -> AsyncIterator[sqlite3.Connection]:
    """Hold SQLite's write lock from a connection of our own (as another process would) until exit.

    Never waits inside SQLite (timeout=0): the server shares this event loop, so a busy wait here
    would stall it. If the server is writing right now, try again on the next turns."""
    connection = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        async with asyncio.timeout(5):
            while True:
                try:
                    connection.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError as error:
                    if "locked" not in str(error):
                        raise
                    await asyncio.sleep(0.002)
        try:
            yield connection
        finally:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
    finally:
        connection.close()


async def answered_and_stored(server: Server, submit: asyncio.Task[Any], account: str, to: str) -> Any:
    """Once the lock is free, the submission is answered and its message is stored as answered."""
    async with asyncio.timeout(5):
        answer = (await submit)["submitMessage"]
    async with asyncio.timeout(PROMPTLY):
        stored = (await server.gql(MESSAGE, {"q": answer["queueId"]}))["message"]
    assert stored["queueId"] == answer["queueId"]
    assert stored["messageId"] == answer["messageId"]
    assert stored["account"] == account
    assert stored["envelope"]["to"] == [to]
    return answer


async def test_a_write_lock_held_elsewhere_delays_the_write_but_not_the_server(
    server: Server, smtp_server: SmtpServer
) -> None:
    await register_connected(server, account_input("locked", smtp_server))
    message = {"to": [{"address": "r@example.org"}], "subject": "while locked", "text": "hi"}
    db = server.runtime.db

    async with write_lock_held(database_file(server)) as blocker:
        # The lock really is held: a second writer is refused at once.
        other = sqlite3.connect(database_file(server), isolation_level=None, timeout=0)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        other.close()

        submit = asyncio.create_task(server.gql(SUBMIT, {"account": "locked", "input": message}))
        # The submission reaches the database and waits for the lock: the server's write lock is taken
        # (its BEGIN IMMEDIATE keeps being retried) and stays taken.
        async with asyncio.timeout(5):
            while not db._write_lock.locked():  # type: ignore[union-attr]  # noqa: ASYNC110
                assert not submit.done(), submit
                await asyncio.sleep(0.005)

        # Meanwhile the server answers reads promptly, more than once.
        for _ in range(3):
            async with asyncio.timeout(PROMPTLY):
                answer = await server.gql("{ accounts { account state } }")
            assert answer["accounts"] == [{"account": "locked", "state": "CONNECTED"}]
        async with asyncio.timeout(PROMPTLY):
            assert (await server.gql("{ outbox { queueId } }"))["outbox"] == []
        assert not submit.done(), "the submission was answered while its row could not be written"
        assert db._write_lock.locked()  # type: ignore[union-attr]
        blocker.execute("ROLLBACK")

    answer = await answered_and_stored(server, submit, "locked", "r@example.org")
    # The write lock was handed back: a further write goes through at once.
    async with asyncio.timeout(PROMPTLY):
        again = (await server.gql(SUBMIT, {"account": "locked", "input": message}))["submitMessage"]
    assert again["queueId"] != answer["queueId"]


async def test_a_write_lock_held_elsewhere_with_a_commit_lets_the_write_through_after_it(
    server: Server, smtp_server: SmtpServer
) -> None:
    await register_connected(server, account_input("locked2", smtp_server))
    message = {"to": [{"address": "r2@example.org"}], "text": "hi"}
    db = server.runtime.db

    async with write_lock_held(database_file(server)) as blocker:
        # The other connection writes something of its own (a table the server does not know about).
        blocker.execute("CREATE TABLE elsewhere (x INTEGER)")
        blocker.execute("INSERT INTO elsewhere VALUES (1)")
        submit = asyncio.create_task(server.gql(SUBMIT, {"account": "locked2", "input": message}))
        async with asyncio.timeout(5):
            while not db._write_lock.locked():  # type: ignore[union-attr]  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        async with asyncio.timeout(PROMPTLY):
            await server.gql('{ account(account: "locked2") { account } }')
        assert not submit.done()
        blocker.execute("COMMIT")

    await answered_and_stored(server, submit, "locked2", "r2@example.org")
