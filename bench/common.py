"""What every benchmark needs: the sink and the server as real processes on 127.0.0.1, an access token, a
send-only account pointing at the sink, direct queue pre-filling, a small keep-alive HTTP client, a
graphql-transport-ws subscriber, and the one-line JSON result.

Processes: `SinkProcess` runs bench/sink.py; `ServerProcess` runs `python -m gql_mail serve` with a fresh
SQLite file in a temporary directory (log level warning, so uvicorn's access log is not part of the cost),
or, with `bench_server(…, database="postgresql")`, on a fresh PostgreSQL database (`BenchDatabase`) that is
dropped afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

SECRET = "bench-secret-" + "x" * 24
ACCOUNT = "bench"
SUBMIT = """mutation Submit($account: ID!, $input: SubmitMessageInput!) {
  submitMessage(account: $account, input: $input) { messageId queueId }
}"""
EVENTS = """subscription Ev($account: ID, $events: [String!]) {
  events(account: $account, events: $events) { event account date data }
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_loop(coro: Any) -> Any:
    """Run a benchmark's coroutine on uvloop, as the server does (uvicorn picks uvloop when installed)."""
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)


def emit(result: dict[str, Any]) -> dict[str, Any]:
    """The benchmark's summary: one line of JSON on stdout."""
    print(json.dumps(result), flush=True)
    return result


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the sink ---------------------------------------------------------------------------------------------


class SinkProcess:
    def __init__(self) -> None:
        self.port = free_port()
        self.control_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SinkProcess:
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "sink.py"), str(self.port), str(self.control_port)],
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"sink did not start: {line!r}")
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None

    def __enter__(self) -> SinkProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _ask(self, command: str) -> Any:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.control_port, limit=2**26)
        try:
            writer.write(command.encode() + b"\n")
            return json.loads(await reader.readline())
        finally:
            writer.close()

    async def count(self) -> int:
        return int((await self._ask("count"))["count"])

    async def reset(self) -> None:
        await self._ask("reset")

    async def turnaround(self) -> dict[str, Any]:
        """Percentiles of the clients' turnaround since the last reset (see bench/sink.py)."""
        answer: dict[str, Any] = await self._ask("turnaround")
        return answer

    async def records(self) -> list[tuple[str, float]]:
        return [(m, t) for m, t in await self._ask("records")]

    async def wait_count(self, n: int, timeout: float) -> float:  # noqa: ASYNC109
        """Wait until the sink has accepted n messages; returns time.time() of the n-th acceptance."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = await self._ask("count")
            if answer["count"] >= n:
                return float(answer["last"])
            await asyncio.sleep(0.02)
        raise TimeoutError(f"sink got {await self.count()} of {n} messages in {timeout}s")

    @asynccontextmanager
    async def watch(self) -> AsyncIterator[SinkWatch]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.control_port)
        writer.write(b"watch\n")
        assert (await reader.readline()).strip() == b"watching"
        w = SinkWatch()
        task = asyncio.create_task(w._read(reader))
        try:
            yield w
        finally:
            task.cancel()
            writer.close()


@dataclass
class SinkWatch:
    """Message-ID → acceptance time, as the sink streams them."""

    seen: dict[str, float] = field(default_factory=dict)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            message_id, _, at = line.decode().rstrip("\n").partition("\t")
            self.seen[message_id] = float(at)
            self._arrived.set()

    async def wait_for(self, message_id: str, timeout: float = 10.0) -> float:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while message_id not in self.seen:
                self._arrived.clear()
                await self._arrived.wait()
        return self.seen[message_id]


# -- the server -------------------------------------------------------------------------------------------


class ServerProcess:
    """`python -m gql_mail serve` on a fresh SQLite database in its own temporary directory."""

    def __init__(self, workdir: Path | None = None, database_url: str | None = None, **env: str) -> None:
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="gql-mail-bench-")
        self.dir = workdir or Path(self._tmp.name)  # type: ignore[union-attr]
        self.db_path = self.dir / "bench.db"
        self.database_url = database_url or f"sqlite+aiosqlite:///{self.db_path}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "GQL_MAIL_DATABASE_URL": self.database_url,
            "GQL_MAIL_SECRET": SECRET,
            "GQL_MAIL_DATA_DIR": str(self.dir / "data"),
            "GQL_MAIL_LOG_LEVEL": "warning",
            "GQL_MAIL_SERVICE_URL": self.url,
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = ""
        self.database: BenchDatabase | None = None  # set by bench_server

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "gql_mail", *args],
            env=self.env,
            cwd=self.dir,
            capture_output=True,
            check=True,
        )
        return done.stdout.decode().strip()

    def prepare(self) -> ServerProcess:
        """Migrate the database and create a token (before the first start)."""
        self.cli("migrate")
        self.token = self.cli("token", "create", "--description", "bench")
        return self

    def start(self, timeout: float = 30.0) -> ServerProcess:
        if not self.token:
            self.prepare()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gql_mail", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env,
            cwd=self.dir,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if b" 200 " in s.recv(1024):
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError("server did not answer /health")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_kib(self) -> tuple[int, int]:
        """(current RSS, peak RSS) of the server process in KiB, from /proc."""
        fields = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def client(self) -> GraphQLClient:
        return GraphQLClient("127.0.0.1", self.port, self.token)


# -- a small HTTP/1.1 keep-alive client (the load generator must cost far less than the server) ----------


class HttpConnection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> HttpConnection:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """Send one pre-built request; (status, body). Needs a Content-Length answer (Starlette sends one)."""
        assert self._reader is not None and self._writer is not None
        self._writer.write(raw)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        start = head.lower().find(b"\r\ncontent-length:")
        if start < 0:
            raise RuntimeError(f"no Content-Length in {head!r}")
        end = head.find(b"\r\n", start + 2)
        length = int(head[start + 17 : end])
        body = await self._reader.readexactly(length)
        return status, body


def post_request(port: int, token: str, query: str, variables: dict[str, Any] | None = None) -> bytes:
    body = orjson.dumps({"query": query, "variables": variables or {}})
    return (
        b"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n" % (port, token.encode(), len(body))
    ) + body


class GraphQLClient:
    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port, self.token = host, port, token
        self._conn: HttpConnection | None = None

    async def gql(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        if self._conn is None:
            self._conn = await HttpConnection(self.host, self.port).open()
        status, body = await self._conn.request(post_request(self.port, self.token, query, variables))
        answer = orjson.loads(body)
        if status != 200 or answer.get("errors"):
            raise RuntimeError(f"HTTP {status}: {body[:500]!r}")
        return answer["data"]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def submit_variables(n: int = 0, send_at: datetime | None = None) -> dict[str, Any]:
    """A small message (about 1 KB composed)."""
    body: dict[str, Any] = {
        "to": [{"name": "Bench Recipient", "address": "rcpt@sink.bench"}],
        "subject": f"Benchmark message {n}",
        "text": "Hello from the gql-mail benchmark.\n" * 10,
    }
    if send_at is not None:
        body["sendAt"] = send_at.isoformat()
    return {"account": ACCOUNT, "input": body}


async def register_account(client: GraphQLClient, sink: SinkProcess, account: str = ACCOUNT) -> None:
    """A send-only account pointing at the sink; waits until it is CONNECTED."""
    await client.gql(
        "mutation R($input: RegisterAccountInput!) { registerAccount(input: $input) { account state } }",
        {
            "input": {
                "account": account,
                "name": "Bench Sender",
                "email": "sender@bench.example",
                "imap": {"disabled": True},
                "smtp": {
                    "host": "127.0.0.1",
                    "port": sink.port,
                    "secure": False,
                    "auth": {"user": "u", "pass": "p"},
                },
            }
        },
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        state = (await client.gql("query A($a: ID!) { account(account: $a) { state } }", {"a": account}))[
            "account"
        ]
        if state["state"] == "CONNECTED":
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"account {account} is not CONNECTED")


# -- the queue, filled directly ---------------------------------------------------------------------------


def composed_message() -> tuple[bytes, str, str, list[str]]:
    """One message composed by gql-mail itself: (raw, message_id, envelope_from, envelope_to)."""
    from gql_mail.mail.compose import Address, Draft, compose

    draft = Draft(
        from_=Address("sender@bench.example", "Bench Sender"),
        to=(Address("rcpt@sink.bench", "Bench Recipient"),),
        subject="Benchmark message",
        text="Hello from the gql-mail benchmark.\n" * 10,
    )
    c = compose(draft, now=datetime.now(UTC), domain="bench.example")
    return c.raw, c.message_id, c.envelope_from, list(c.envelope_to)


def queued_copy(
    account: str,
    raw: bytes,
    template_id: str,
    env_from: str,
    env_to: list[str],
    *,
    due: datetime,
    now: datetime,
) -> dict[str, Any]:
    """An outbox_message row: a queued copy of a composed message (`composed_message`) with its own
    Message-ID, of the same length as the template's, so every copy has the same size."""
    from gql_mail.ids import time_ordered_id

    message_id = f"<{uuid.uuid4()}@bench.example>"
    return {
        "id": time_ordered_id(),
        "account_id": account,
        "message_id": message_id,
        "raw": raw.replace(template_id.encode(), message_id.encode()),
        "envelope_from": env_from,
        "envelope_to": env_to,
        "status": "queued",
        "attempts_made": 0,
        "attempts": 10,
        "copy_to_sent": False,
        "next_attempt_at": due,
        "created_at": now,
        "updated_at": now,
    }


def prefill(
    db_path: Path, count: int, *, due_in: timedelta = timedelta(0), account: str = ACCOUNT
) -> list[str]:
    """Insert `count` queued messages straight into outbox_message (one transaction), each a copy of one
    composed message with its own Message-ID; due `due_in` from now. Returns their Message-IDs."""
    from sqlalchemy import create_engine, insert

    from gql_mail.models import OutboxMessage

    raw, template_id, env_from, env_to = composed_message()
    now = datetime.now(UTC)
    due = now + due_in
    rows = [queued_copy(account, raw, template_id, env_from, env_to, due=due, now=now) for _ in range(count)]
    ids = [row["message_id"] for row in rows]
    engine = create_engine(f"sqlite:///{db_path}", connect_args={"timeout": 30})
    with engine.begin() as conn:
        for i in range(0, len(rows), 5000):
            conn.execute(insert(OutboxMessage.__table__), rows[i : i + 5000])  # type: ignore[attr-defined]
    engine.dispose()
    return ids


PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
# Rows per transaction when filling the queue in SQL (SQLite's WAL grows by a transaction's pages).
FILL_CHUNK = 100_000


class BenchDatabase:
    """The bench's own access to the server's database, SQLite or PostgreSQL: it fills the queue behind
    the server's back (as a backlog built up earlier would be), counts and deletes rows.

    `create("postgresql")` makes a fresh database at PG_ADMIN_URL's server (`BENCH_PG_URL`, default the
    local trust-auth cluster) and drops it afterwards, as tests/databases.py does for the suite. With
    `BENCH_PG_EXPLAIN_MS=N`, auto_explain logs every statement on it slower than N ms, with its plan, to
    the PostgreSQL server's log."""

    def __init__(self, kind: str, pg_dsn: str | None = None) -> None:
        self.kind = kind
        self.pg_dsn = pg_dsn
        self.db_path: Path | None = None
        self._pg: Any = None

    @property
    def is_sqlite(self) -> bool:
        return self.kind == "sqlite"

    @property
    def sqlalchemy_url(self) -> str | None:
        """The server's database URL; None for SQLite (the server's own temporary file)."""
        return None if self.pg_dsn is None else "postgresql+asyncpg://" + self.pg_dsn.split("://", 1)[1]

    def attach(self, server: ServerProcess) -> None:
        server.database = self
        self.db_path = server.db_path

    @classmethod
    @asynccontextmanager
    async def create(cls, kind: str) -> AsyncIterator[BenchDatabase]:
        if kind == "sqlite":
            yield cls(kind)
            return
        if kind != "postgresql":
            raise ValueError(f"unknown database {kind!r} (sqlite or postgresql)")
        import asyncpg

        name = f"bench_{uuid.uuid4().hex[:16]}"
        admin = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        explain = os.environ.get("BENCH_PG_EXPLAIN_MS")
        if explain:  # every slower statement with its plan in PostgreSQL's server log
            admin = await asyncpg.connect(PG_ADMIN_URL)
            try:
                await admin.execute(
                    f"ALTER DATABASE \"{name}\" SET session_preload_libraries = 'auto_explain'"
                )
                await admin.execute(
                    f"ALTER DATABASE \"{name}\" SET auto_explain.log_min_duration = '{int(explain)}ms'"
                )
                await admin.execute(f'ALTER DATABASE "{name}" SET auto_explain.log_analyze = on')
            finally:
                await admin.close()
        db = cls(kind, PG_ADMIN_URL.rpartition("/")[0] + "/" + name)
        try:
            yield db
        finally:
            if db._pg is not None:
                await db._pg.close()
            admin = await asyncpg.connect(PG_ADMIN_URL)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()

    async def _conn(self) -> Any:
        if self._pg is None:
            import asyncpg

            self._pg = await asyncpg.connect(self.pg_dsn)
        return self._pg

    async def count_status(self, status: str) -> int:
        if self.is_sqlite:
            assert self.db_path is not None
            return count_status(self.db_path, status)
        conn = await self._conn()
        return int(await conn.fetchval("SELECT count(*) FROM outbox_message WHERE status = $1", status))

    async def insert_due(self, count: int, *, due_in: timedelta = timedelta(0)) -> list[str]:
        """`count` queued messages, each with its own Message-ID, in one transaction (see `prefill`);
        their Message-IDs."""
        if self.is_sqlite:
            assert self.db_path is not None
            return prefill(self.db_path, count, due_in=due_in)
        raw, template_id, env_from, env_to = composed_message()
        now = datetime.now(UTC)
        rows = [
            queued_copy(ACCOUNT, raw, template_id, env_from, env_to, due=now + due_in, now=now)
            for _ in range(count)
        ]
        columns = list(rows[0])
        conn = await self._conn()
        await conn.copy_records_to_table(
            "outbox_message",
            columns=columns,
            records=[
                tuple(orjson.dumps(v).decode() if k == "envelope_to" else v for k, v in row.items())
                for row in rows
            ],
        )
        return [row["message_id"] for row in rows]

    async def fill_waiting(self, count: int, *, due_in: timedelta) -> None:
        """`count` queued messages due `due_in` from now, fast: one row is inserted, and the database copies
        it `count - 1` times itself (ids from the template's time prefix and a counter; the copies share
        its bytes and Message-ID: they are never sent). PostgreSQL is then vacuumed and analysed, as
        autovacuum would be after such a load, so the runs do not depend on when it wakes."""
        if count <= 0:
            return
        (message_id,) = await self.insert_due(1, due_in=due_in)
        from gql_mail.models import OutboxMessage

        columns = [c.name for c in OutboxMessage.__table__.columns if c.name != "id"]  # type: ignore[attr-defined]
        copied = ", ".join(f"t.{c}" for c in columns)
        into = "outbox_message (id, " + ", ".join(columns) + ")"
        template = "SELECT id FROM outbox_message WHERE message_id = ?"
        if self.is_sqlite:
            import sqlite3

            assert self.db_path is not None
            conn = sqlite3.connect(self.db_path, timeout=60, isolation_level=None)
            try:
                (tid,) = conn.execute(template, (message_id,)).fetchone()
                for lo in range(1, count, FILL_CHUNK):
                    hi = min(count - 1, lo + FILL_CHUNK - 1)
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute(
                        f"INSERT INTO {into} WITH RECURSIVE n(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM n "
                        f"WHERE i < ?) SELECT substr(t.id, 1, 12) || printf('%012x', n.i), {copied} "
                        "FROM outbox_message AS t, n WHERE t.id = ?",
                        (lo, hi, tid),
                    )
                    conn.execute("COMMIT")
                    await asyncio.sleep(0.05)  # the server's writers get the lock between chunks
            finally:
                conn.close()
            return
        conn = await self._conn()
        tid = await conn.fetchval(template.replace("?", "$1"), message_id)
        for lo in range(1, count, FILL_CHUNK):
            hi = min(count - 1, lo + FILL_CHUNK - 1)
            await conn.execute(
                f"INSERT INTO {into} SELECT left(t.id, 12) || lpad(to_hex(i), 12, '0'), {copied} "
                "FROM outbox_message AS t, generate_series($1::int, $2::int) AS i WHERE t.id = $3",
                lo,
                hi,
                tid,
            )
        await conn.execute("VACUUM ANALYZE outbox_message")

    async def delete_queued(self) -> int:
        """Delete every queued message. On SQLite in FILL_CHUNK-row transactions, each its own hold of the
        write lock, so that the server's periodic jobs are not locked out past their busy timeout."""
        if self.is_sqlite:
            import sqlite3

            deleted = 0
            conn = sqlite3.connect(self.db_path, timeout=60, isolation_level=None)  # type: ignore[arg-type]
            try:
                while True:
                    done = conn.execute(
                        "DELETE FROM outbox_message WHERE id IN (SELECT id FROM outbox_message "
                        "WHERE status = 'queued' LIMIT ?)",
                        (FILL_CHUNK,),
                    ).rowcount
                    deleted += done
                    if done < FILL_CHUNK:
                        return deleted
                    await asyncio.sleep(0.05)
            finally:
                conn.close()
        conn = await self._conn()
        done = await conn.execute("DELETE FROM outbox_message WHERE status = 'queued'")
        await conn.execute("VACUUM ANALYZE outbox_message")
        return int(done.split()[-1])


def count_status(db_path: Path, status: str) -> int:
    import sqlite3

    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30) as conn:
        return int(
            conn.execute("SELECT count(*) FROM outbox_message WHERE status = ?", (status,)).fetchone()[0]
        )


# -- subscriptions ----------------------------------------------------------------------------------------


@asynccontextmanager
async def subscription(
    port: int, token: str, on_event: Callable[[dict[str, Any], float], None], events: list[str] | None = None
) -> AsyncIterator[None]:
    """One graphql-transport-ws subscription to `events`; on_event(event, time.time() at receipt)."""
    import websockets

    async with websockets.connect(
        f"ws://127.0.0.1:{port}/graphql",
        subprotocols=["graphql-transport-ws"],
        max_queue=None,  # type: ignore[list-item]
    ) as ws:
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        )
        ack = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert ack["type"] == "connection_ack", ack
        await ws.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": EVENTS, "variables": {"events": events}},
                }
            )
        )

        async def read() -> None:
            async for raw in ws:
                received = time.time()
                message = orjson.loads(raw)
                if message.get("type") == "next":
                    on_event(message["payload"]["data"]["events"], received)
                elif message.get("type") in ("error", "complete"):
                    raise RuntimeError(f"subscription ended: {message}")

        task = asyncio.create_task(read())
        try:
            yield
        finally:
            task.cancel()


def event_time(event: dict[str, Any]) -> float:
    """The event's `date` (ms precision) as a Unix time."""
    return datetime.fromisoformat(event["date"].replace("Z", "+00:00")).timestamp()


async def wait_until(
    predicate: Callable[[], bool],
    timeout: float,  # noqa: ASYNC109
    what: str,
    step: float = 0.01,
) -> float:
    """Poll predicate; time.time() when it first held."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(step)
    return time.time()


@asynccontextmanager
async def bench_server(
    sink: SinkProcess, database: str = "sqlite", **env: str
) -> AsyncIterator[ServerProcess]:
    """A started server with the sink's account registered and CONNECTED; `database` "postgresql" puts it
    on a fresh PostgreSQL database (PG_ADMIN_URL), dropped when the server has stopped."""
    async with BenchDatabase.create(database) as db:
        server = ServerProcess(database_url=db.sqlalchemy_url, **env)
        db.attach(server)
        server.start()
        spy = profile(server.pid, "server")
        client = server.client()
        try:
            await register_account(client, sink)
            yield server
        finally:
            client.close()
            server.close()
            if spy is not None:
                spy.wait(30)


def profile(pid: int, name: str) -> subprocess.Popen[bytes] | None:
    """With BENCH_PROFILE=DIR, py-spy samples the process until it exits, into DIR/<name>-<pid>.txt
    (collapsed stacks; summarise with `python bench/profile_report.py FILE`)."""
    directory = os.environ.get("BENCH_PROFILE")
    if not directory:
        return None
    Path(directory).mkdir(parents=True, exist_ok=True)
    out = Path(directory) / f"{name}-{pid}.txt"
    spy = Path(sys.executable).parent / "py-spy"
    return subprocess.Popen(
        [
            str(spy),
            "record",
            "-p",
            str(pid),
            "-o",
            str(out),
            "-f",
            "raw",
            "-r",
            "250",
            "--gil",
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
