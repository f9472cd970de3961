"""Several real `gql-mail serve` processes on one PostgreSQL database, for the multi-node test and the
benchmark (bench/multinode.py).

`Cluster` starts N server subprocesses (the real CLI, `python -m gql_mail serve --port P`) sharing one
database, creates a token with the real `token create`, and offers the few client calls the scenarios
need: register a send-only account, submit many messages fast (several aliased mutations per request,
requests spread over the processes), subscribe to events over a websocket, and read the outbox.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import websockets

from gql_mail.pg_events import asyncpg_dsn

ROOT = Path(__file__).resolve().parent.parent
MESSAGE_ID = re.compile(rb"^Message-ID:\s*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)


def message_id_of(raw: bytes) -> str:
    """The Message-ID header of a delivered message (what the sink counts)."""
    match = MESSAGE_ID.search(raw)
    assert match, raw[:500]
    return match.group(1).decode()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Node:
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        """`kill -9`: no shutdown, no lease released, no event flushed."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@dataclass
class Subscription:
    events: list[dict[str, Any]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_count(self, count: int, timeout: float) -> list[dict[str, Any]]:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while len(self.events) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.events


@dataclass
class Cluster:
    database_url: str
    env: dict[str, str]
    tmp: Path
    nodes: list[Node] = field(default_factory=list)
    token: str = ""
    http: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient(timeout=60))

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "gql_mail", *args],
            env=self.env,
            cwd=self.tmp,
            capture_output=True,
            check=True,
            timeout=60,
        )
        return result.stdout.decode().strip()

    async def start_node(self) -> Node:
        port = free_port()
        log_path = self.tmp / f"node-{port}.log"
        # Starting a process blocks the loop for a moment; acceptable in a test helper.
        with open(log_path, "wb") as log:  # noqa: ASYNC230
            process = subprocess.Popen(  # noqa: ASYNC220
                [sys.executable, "-m", "gql_mail", "serve", "--port", str(port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.tmp,
            )
        node = Node(port, process, log_path)
        async with asyncio.timeout(30):
            while True:
                if process.poll() is not None:
                    raise AssertionError(f"node on {port} exited:\n{node.log_tail()}")
                try:
                    if (await self.http.get(node.url + "/health")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        self.nodes.append(node)
        return node

    def alive(self) -> list[Node]:
        return [n for n in self.nodes if n.process.poll() is None]

    async def gql(self, node: Node, query: str, variables: dict[str, Any] | None = None) -> Any:
        response = await self.http.post(
            node.url + "/graphql",
            json={"query": query, "variables": variables or {}},
            headers={"Authorization": f"Bearer {self.token}"},
        )
        body = response.json()
        assert not body.get("errors"), body["errors"]
        return body["data"]

    async def register_send_only(self, node: Node, account: str, smtp_host: str, smtp_port: int) -> None:
        data = {
            "account": account,
            "name": "Bulk Sender",
            "email": f"{account}@example.com",
            "smtp": {
                "host": smtp_host,
                "port": smtp_port,
                "secure": False,
                "auth": {"user": "smtpuser", "pass": "smtppass"},
            },
            "imap": {"disabled": True},
        }
        await self.gql(
            node, "mutation($i: RegisterAccountInput!) { registerAccount(input: $i) { state } }", {"i": data}
        )
        async with asyncio.timeout(20):
            while True:
                query = "query($a: ID!) { account(account: $a) { state } }"
                acc = await self.gql(node, query, {"a": account})
                if acc["account"]["state"] == "CONNECTED":
                    return
                await asyncio.sleep(0.1)

    async def submit_many(
        self,
        account: str,
        ids: Sequence[str],
        *,
        send_at: datetime | None = None,
        text: str = "hello from a cluster",
        per_request: int = 25,
        concurrency: int = 6,
    ) -> None:
        """Submit one message per Message-ID: `per_request` aliased mutations in one HTTP request,
        requests round-robin over the live processes. With `send_at`, they wait in the queue (see
        `make_due`)."""
        chunks = [ids[i : i + per_request] for i in range(0, len(ids), per_request)]
        limit = asyncio.Semaphore(concurrency)

        async def one(n: int, chunk: Sequence[str]) -> None:
            fields = []
            variables: dict[str, Any] = {}
            for k, message_id in enumerate(chunk):
                fields.append(f"m{k}: submitMessage(account: $a, input: $i{k}) {{ queueId }}")
                variables[f"i{k}"] = {
                    "to": [{"address": "sink@example.org"}],
                    "subject": f"bulk {message_id}",
                    "text": text,
                    "messageId": message_id,
                }
                if send_at is not None:
                    variables[f"i{k}"]["sendAt"] = send_at.isoformat()
            params = ", ".join(f"$i{k}: SubmitMessageInput!" for k in range(len(chunk)))
            query = f"mutation Bulk($a: ID!, {params}) {{ {' '.join(fields)} }}"
            variables["a"] = account
            nodes = self.alive()
            async with limit:
                await self.gql(nodes[n % len(nodes)], query, variables)

        await asyncio.gather(*(one(n, chunk) for n, chunk in enumerate(chunks)))

    @asynccontextmanager
    async def subscribe(self, node: Node, events: list[str]) -> AsyncIterator[Subscription]:
        """Events over graphql-transport-ws, collected in the background."""
        sub = Subscription()
        url = node.url.replace("http://", "ws://") + "/graphql"
        async with websockets.connect(url, subprotocols=["graphql-transport-ws"], max_queue=None) as ws:  # type: ignore[list-item]
            init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {self.token}"}}
            await ws.send(json.dumps(init))
            ack = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert ack["type"] == "connection_ack", ack
            query = "subscription($e: [String!]) { events(events: $e) { event account data } }"
            await ws.send(
                json.dumps(
                    {"id": "1", "type": "subscribe", "payload": {"query": query, "variables": {"e": events}}}
                )
            )

            async def read() -> None:
                async for raw in ws:
                    message = json.loads(raw)
                    if message.get("type") == "next":
                        sub.events.append(message["payload"]["data"]["events"])
                        sub.arrived.set()

            reader = asyncio.create_task(read())
            # The server registers the subscription on its bus right after `subscribe`; there is no
            # acknowledgement in the protocol, so give it a moment before producing events.
            await asyncio.sleep(0.5)
            try:
                yield sub
            finally:
                reader.cancel()

    async def make_due(self) -> int:
        """Make every scheduled message due now, straight in the database: the queue is full before
        delivery starts, whatever the submission rate (the next poll picks them up)."""
        statement = "UPDATE outbox_message SET next_attempt_at = created_at WHERE status = 'queued'"
        if self.database_url.startswith("postgresql"):
            connection = await asyncpg.connect(asyncpg_dsn(self.database_url))
            try:
                result: str = await connection.execute(statement)
            finally:
                await connection.close()
            return int(result.split()[-1])
        path = self.database_url.split(":///", 1)[1]
        with sqlite3.connect(path, timeout=30) as db:
            return db.execute(statement).rowcount

    async def outbox_statuses(self, node: Node, account: str) -> dict[str, int]:
        data = await self.gql(
            node, "query($a: ID) { outbox(account: $a, limit: 10000) { status } }", {"a": account}
        )
        counts: dict[str, int] = {}
        for row in data["outbox"]:
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        return counts

    async def close(self) -> None:
        for node in self.nodes:
            if node.process.poll() is None:
                node.process.terminate()
        for node in self.nodes:
            try:
                node.process.wait(15)
            except subprocess.TimeoutExpired:
                node.kill()
        await self.http.aclose()


@asynccontextmanager
async def cluster(
    database_url: str,
    tmp: Path,
    nodes: int,
    *,
    lease_seconds: float | None = 30,
    extra_env: dict[str, str] | None = None,
) -> AsyncIterator[Cluster]:
    """`nodes` server processes on one database, and a token. `lease_seconds=None`: the default."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "GQL_MAIL_DATABASE_URL": database_url,
        "GQL_MAIL_SECRET": "multinode-secret-" + "x" * 20,
        "GQL_MAIL_DATA_DIR": str(tmp / "data"),
        **({} if lease_seconds is None else {"GQL_MAIL_LEASE_SECONDS": str(lease_seconds)}),
        "GQL_MAIL_POLL_INTERVAL_SECONDS": "0.2",
        "GQL_MAIL_LOG_LEVEL": "warning",
        **(extra_env or {}),
    }
    env.pop("GQL_MAIL_SERVICE_URL", None)
    c = Cluster(database_url, env, tmp)
    try:
        c.cli("migrate")
        c.token = c.cli("token", "create", "--description", "multinode")
        await asyncio.gather(*(c.start_node() for _ in range(nodes)))
        yield c
    finally:
        await c.close()
