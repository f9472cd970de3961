"""A real gql-mail server for tests: uvicorn on 127.0.0.1, a fresh database, a manual clock.

`Api` talks to it over real HTTP; `Subscriber` over a real websocket (graphql-transport-ws or the legacy
graphql-ws). Waiting is on events with timeouts, never on sleeps.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import websockets

from gql_mail.app import create_app
from gql_mail.clock import ManualClock
from gql_mail.config import Settings
from gql_mail.graphql.frame_writer import WS_PROTOCOL
from gql_mail.outbound import Resolver
from gql_mail.runtime import Runtime
from gql_mail.services.tokens import create_token
from tests.databases import fresh_database
from tests.servers.webhook_receiver import ReceivedRequest, WebhookReceiver


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GraphQLErrors(Exception):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(json.dumps(errors))
        self.errors = errors

    @property
    def codes(self) -> list[str]:
        return [e.get("extensions", {}).get("code") for e in self.errors]


@dataclass
class Server:
    url: str
    runtime: Runtime
    clock: ManualClock
    token: str
    http: httpx.AsyncClient
    settings: Settings
    app: Any = None

    @property
    def workers(self) -> Any:
        return self.app.state.workers

    async def drain(self) -> None:
        """Run one full delivery pass now and wait for every outcome to be recorded."""
        delivery = self.workers.delivery
        # A scheduled pass woken by the submission may be mid-claim: on PostgreSQL our claim would skip
        # its locked rows (SKIP LOCKED) and find nothing to wait for, so let it dispatch first. A pass only
        # claims and dispatches (ms); the bound is for a hang, not a timing.
        async with asyncio.timeout(30):
            await delivery.no_drain_running()
        await delivery.drain()
        await delivery.idle()

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/graphql"

    async def post(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = "default"
    ) -> httpx.Response:
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {self.token if token == 'default' else token}"
        return await self.http.post(
            self.url + "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )

    async def gql(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = "default"
    ) -> Any:
        """The data of a successful operation; raises GraphQLErrors otherwise."""
        response = await self.post(query, variables, token)
        body = response.json()
        if body.get("errors"):
            raise GraphQLErrors(body["errors"])
        assert response.status_code == 200, response.text
        return body["data"]

    def advance(self, seconds: float) -> None:
        """Move the manual clock and nudge the workers, so what became due starts now."""
        self.clock.advance(seconds)
        self.runtime.wake.delivery()
        self.runtime.wake.webhooks()
        self.runtime.wake.sent_copy()


@dataclass
class Subscriber:
    """A real websocket GraphQL client collecting events of one subscription."""

    ws: Any
    protocol: str
    events: list[dict[str, Any]] = field(default_factory=list)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None
    closed_code: int | None = None

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                message = json.loads(raw)
                if message.get("type") in ("next", "data"):
                    # A result without data (a field error) is recorded as its errors, never a crash of
                    # the reader that would leave wait_for to time out.
                    payload = message.get("payload") or {}
                    data = payload.get("data")
                    self.events.append(data["events"] if data else {"error": payload.get("errors")})
                    self._arrived.set()
                elif message.get("type") == "error":
                    self.events.append({"error": message.get("payload")})
                    self._arrived.set()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed_code = self.ws.close_code
            self._arrived.set()

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:  # noqa: ASYNC109 - a deadline for asyncio.timeout
        """The first collected event for which predicate(event) is true."""
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                if self.closed_code is not None:
                    raise AssertionError(f"websocket closed ({self.closed_code}) before the event arrived")
                self._arrived.clear()
                await self._arrived.wait()

    async def wait_count(self, predicate: Any, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:  # noqa: ASYNC109 - a deadline for asyncio.timeout
        async with asyncio.timeout(timeout):
            while True:
                found = [e for e in self.events if predicate(e)]
                if len(found) >= count:
                    return found
                if self.closed_code is not None:
                    raise AssertionError(
                        f"websocket closed ({self.closed_code}) with {len(found)}/{count} events"
                    )
                self._arrived.clear()
                await self._arrived.wait()


EVENTS_SUBSCRIPTION = """
subscription Ev($account: ID, $events: [String!]) {
  events(account: $account, events: $events) { event account date data }
}"""


@asynccontextmanager
async def subscribe(
    server: Server,
    *,
    account: str | None = None,
    events: list[str] | None = None,
    token: str | None = "default",
    protocol: str = "graphql-transport-ws",
) -> AsyncIterator[Subscriber]:
    before = server.runtime.bus.subscriber_count
    async with websockets.connect(server.ws_url, subprotocols=[protocol]) as ws:  # type: ignore[list-item]
        payload = (
            {}
            if token is None
            else {"Authorization": f"Bearer {server.token if token == 'default' else token}"}
        )
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        ack = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert ack["type"] == "connection_ack", ack
        start = "subscribe" if protocol == "graphql-transport-ws" else "start"
        await ws.send(
            json.dumps(
                {
                    "id": "1",
                    "type": start,
                    "payload": {
                        "query": EVENTS_SUBSCRIPTION,
                        "variables": {"account": account, "events": events},
                    },
                }
            )
        )
        sub = Subscriber(ws, protocol)
        sub._reader = asyncio.create_task(sub._read())
        # The subscription is live once the bus has one more subscriber (or it ended, or sent something).
        live = asyncio.ensure_future(server.runtime.bus.until_subscribers(lambda n: n > before))
        answered = asyncio.ensure_future(sub._arrived.wait())
        try:
            async with asyncio.timeout(5):
                await asyncio.wait([live, answered], return_when=asyncio.FIRST_COMPLETED)
        finally:
            live.cancel()
            answered.cancel()
        try:
            yield sub
        finally:
            sub._reader.cancel()


async def wait_webhook(receiver: WebhookReceiver, predicate: Any, timeout: float = 10.0) -> ReceivedRequest:  # noqa: ASYNC109 - a deadline for asyncio.timeout
    """The first request the receiver got for which predicate(request) is true."""
    async with asyncio.timeout(timeout):
        while True:
            seen = receiver.received
            for request in seen:
                if predicate(request):
                    return request
            await receiver.wait_for(len(seen) + 1, timeout=timeout)


def webhook_event(event: str, queue_id: str | None = None) -> Any:
    def match(request: ReceivedRequest) -> bool:
        if request.header("X-GqlMail-Event") != event:
            return False
        return queue_id is None or request.json()["data"].get("queueId") == queue_id

    return match


@asynccontextmanager
async def run_server(tmp_path: Path, **overrides: Any) -> AsyncIterator[Server]:
    """A fresh database (SQLite file, or PostgreSQL when GQL_MAIL_TEST_DATABASE=postgresql) and a server."""
    if "database_url" in overrides:
        async with _run_server(tmp_path, **overrides) as server:
            yield server
        return
    async with fresh_database(tmp_path) as url, _run_server(tmp_path, database_url=url, **overrides) as s:
        yield s


@asynccontextmanager
async def _run_server(
    tmp_path: Path, resolver: Resolver | None = None, **overrides: Any
) -> AsyncIterator[Server]:
    port = free_port()
    values: dict[str, Any] = {
        "secret": "test-secret-" + "x" * 20,
        "data_dir": tmp_path / "data",
        "service_url": f"http://127.0.0.1:{port}",
        "poll_interval_seconds": 0.2,
        "retry_base_seconds": 5,
        "smtp_timeout_seconds": 5,
        "imap_timeout_seconds": 5,
        "webhook_timeout_seconds": 5,
        "account_check_interval_seconds": 3600,
    }
    values.update(overrides)
    settings = Settings(**values)
    clock = ManualClock()
    app = create_app(settings, clock=clock, rng=random.Random(7), resolver=resolver)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", ws=WS_PROTOCOL
    )
    uv = uvicorn.Server(config)
    task = asyncio.create_task(uv.serve())
    async with asyncio.timeout(20):
        while not uv.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
    runtime: Runtime = app.state.runtime
    _, token = await create_token(runtime, "api", "tests")
    async with httpx.AsyncClient(timeout=20) as http:
        try:
            yield Server(f"http://127.0.0.1:{port}", runtime, clock, token, http, settings, app)
        finally:
            uv.should_exit = True
            await asyncio.wait_for(task, 20)
