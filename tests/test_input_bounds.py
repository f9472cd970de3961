"""Every list, map and text of the input has a limit, checked before any work on it, against a real server.

Each limit: at the bound the request passes the check, one over it is refused with its code and field, and
nothing is stored. A large message is composed off the event loop, correctly either way.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.message
import email.policy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from gql_mail.config import Settings
from gql_mail.mail.compose import Address
from gql_mail.queue import OUTBOX
from gql_mail.services import submission
from gql_mail.services.submission import AttachmentSpec, Sender, SubmitSpec, compose_message
from tests.conftest import Figures, account_input, register_connected
from tests.harness import EVENTS_SUBSCRIPTION, GraphQLErrors, Server, run_server, subscribe
from tests.servers.smtp import SmtpServer
from tests.test_fuzz import FUZZ
from tests.test_fuzz import _check as check_answer

SUBMIT = 'mutation($i: SubmitMessageInput!) { submitMessage(account: "lim", input: $i) { queueId } }'
WEBHOOK = "mutation($i: WebhookInput!) { createWebhook(input: $i) { id events } }"
EVENTS = [
    "messageSent",
    "messageDeliveryError",
    "messageFailed",
    "messageCopyError",
    "accountAdded",
    "accountDeleted",
    "accountConnected",
    "authenticationError",
    "connectError",
    "accountThrottled",
]


def later() -> str:
    return (datetime.now(UTC) + timedelta(days=1)).isoformat()  # queued, never delivered in the test


def message(**fields: Any) -> dict[str, Any]:
    return {"to": [{"address": "rcpt@example.org"}], "text": "hi", "sendAt": later(), **fields}


def addresses(n: int, prefix: str = "r") -> list[dict[str, str]]:
    return [{"address": f"{prefix}{i}@example.org"} for i in range(n)]


def headers_of(sizes: list[int], name_length: int = 4) -> dict[str, str]:
    """Headers whose names are `name_length` characters and whose values have the given lengths."""
    return {
        f"X-{i:0{name_length - 2}d}": ("word " * (n // 5 + 1))[:n].strip().ljust(n, "w")
        for i, n in enumerate(sizes)
    }


@dataclass(frozen=True)
class Limit:
    name: str
    make: Callable[[int], dict[str, Any]]  # the message with the limited thing at size n
    bound: int
    field: str
    code: str = "BAD_USER_INPUT"
    # Where the size check is wider than a rule compose applies (an address of 320 characters passes the
    # size check, then fails compose's 254): at the bound, that rule's error instead of a stored message.
    at_bound_refused_by: str | None = None


LIMITS = [
    Limit(
        "to+cc+bcc",
        lambda n: message(to=addresses(n - 60), cc=addresses(30, "c"), bcc=addresses(30, "b")),
        100,
        "to",
    ),
    Limit("replyTo", lambda n: message(replyTo=addresses(n)), 20, "replyTo"),
    Limit(
        "attachments",
        lambda n: message(attachments=[{"content": "aGk=", "filename": f"{i}.txt"} for i in range(n)]),
        50,
        "attachments",
    ),
    Limit("header count", lambda n: message(headers=headers_of([8] * n)), 100, "headers"),
    Limit(
        "header bytes",
        lambda n: message(headers=headers_of([16380, 16380, 16380, n - 3 * 16384 - 4])),
        64 * 1024,
        "headers",
    ),
    Limit("header name", lambda n: message(headers={"X-" + "n" * (n - 2): "v"}), 128, "headers"),
    Limit("header value", lambda n: message(headers=headers_of([n])), 16 * 1024, "headers"),
    Limit("subject", lambda n: message(subject=("subject " * n)[:n]), 16 * 1024, "subject"),
    Limit(
        "display name",
        lambda n: message(to=[{"address": "a@example.org", "name": ("name " * n)[:n].strip().ljust(n, "n")}]),
        998,
        "to",
    ),
    Limit(
        "address",
        lambda n: message(to=[{"address": "a" * (n - len("@example.org")) + "@example.org"}]),
        320,
        "to",
        at_bound_refused_by="not an email address",
    ),
    Limit(
        "messageId",
        lambda n: message(messageId="<" + "m" * (n - len("<@example.org>")) + "@example.org>"),
        998,
        "messageId",
        at_bound_refused_by="not a valid message id",
    ),
]


async def queued(server: Server) -> int:
    return len((await server.gql("{ outbox { queueId } }"))["outbox"])


async def refusal(server: Server, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(GraphQLErrors) as refused:
        await server.gql(query, variables)
    return refused.value.errors[0]


@pytest.mark.fault(
    "every list, map and text of submitMessage at its limit and one over",
    "at the bound accepted; one over: BAD_USER_INPUT naming the field, nothing stored",
)
async def test_each_submission_limit_at_bound_and_over(server: Server, smtp_server: SmtpServer) -> None:
    await register_connected(server, account_input("lim", smtp_server))
    stored = 0
    for limit in LIMITS:
        at_bound = limit.make(limit.bound)
        if limit.at_bound_refused_by is None:
            await server.gql(SUBMIT, {"i": at_bound})
            stored += 1
        else:
            error = await refusal(server, SUBMIT, {"i": at_bound})
            assert limit.at_bound_refused_by in error["message"], (limit.name, error)
        error = await refusal(server, SUBMIT, {"i": limit.make(limit.bound + 1)})
        assert error["extensions"]["code"] == limit.code, (limit.name, error)
        assert error["extensions"]["field"] == limit.field, (limit.name, error)
        assert limit.at_bound_refused_by is None or limit.at_bound_refused_by not in error["message"]
        assert await queued(server) == stored, limit.name


@pytest.mark.fault(
    "text, html and attachments over max_message_bytes",
    "PAYLOAD_TOO_LARGE naming the field before decoding or composing; nothing stored",
)
async def test_oversize_bodies_are_payload_too_large(tmp_path: Path, smtp_server: SmtpServer) -> None:
    limit = 64 * 1024
    async with run_server(tmp_path, max_message_bytes=limit) as small:
        await register_connected(small, account_input("lim", smtp_server))
        await small.gql(SUBMIT, {"i": message(text="t" * (limit // 2))})
        content = base64.b64encode(b"\0" * (limit + 3)).decode()
        for field, oversize in (
            ("text", message(text="t" * (limit + 1))),
            ("html", message(html="<p>" + "h" * limit)),
            ("attachments", message(attachments=[{"content": content}])),
        ):
            error = await refusal(small, SUBMIT, {"i": oversize})
            assert error["extensions"] == {"code": "PAYLOAD_TOO_LARGE", "field": field}, error
        assert await queued(small) == 1


@pytest.mark.fault(
    "20,000 extra headers, 20,000 recipients, a 101-item list literal in one request",
    "BAD_USER_INPUT before coercion (input_bounds.py), answered at once; nothing stored",
)
async def test_huge_lists_and_maps_are_refused_before_coercion(
    server: Server, smtp_server: SmtpServer, figures: Figures
) -> None:
    await register_connected(server, account_input("lim", smtp_server))
    started = time.perf_counter()
    error = await refusal(server, SUBMIT, {"i": message(headers={f"X-H{i}": "v" for i in range(20_000)})})
    figures["20,000 headers refused in (ms)"] = round((time.perf_counter() - started) * 1000)
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "headers"}, error
    assert "at most 100" in error["message"]

    error = await refusal(server, SUBMIT, {"i": message(to=addresses(20_000))})
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "to"}, error

    statuses = ", ".join('"queued"' for _ in range(101))
    for _ in range(2):  # the second verdict comes from the document cache, and is the same
        response = await server.post(f"{{ outbox(status: [{statuses}]) {{ queueId }} }}")
        assert response.json()["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "field": "status"}
    assert await queued(server) == 0


async def test_outbox_status_filter_is_bounded(server: Server) -> None:
    query = "query($s: [String!]) { outbox(status: $s) { queueId } }"
    all_five = ["queued", "sending", "sent", "failed", "cancelled"]
    assert (await server.gql(query, {"s": all_five}))["outbox"] == []
    for refused in (all_five + ["queued"], ["queued", "delivered"], ["x" * 10_000]):
        error = await refusal(server, query, {"s": refused})
        assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "status"}, error


@pytest.mark.fault(
    "event-name lists of 12 names or a 65-character name (webhooks, subscriptions)",
    "BAD_USER_INPUT from the one shared check; no webhook stored, no subscription opened",
)
async def test_event_name_lists_are_bounded(server: Server) -> None:
    url = "http://127.0.0.1:9/hook"
    hook = await server.gql(WEBHOOK, {"i": {"url": url, "events": [*EVENTS, "*"]}})  # 11 names
    assert hook["createWebhook"]["events"]
    for events, says in (
        ([*EVENTS, "*", "messageSent"], "at most 11"),
        (["m" * 65], "at most 64"),
        (["m" * 64], "unknown event"),
    ):
        error = await refusal(server, WEBHOOK, {"i": {"url": url, "events": events}})
        assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "events"}, error
        assert says in error["message"], error
    assert len((await server.gql("{ webhooks { id } }"))["webhooks"]) == 1

    async with subscribe(server, events=EVENTS) as sub:  # 10 names: subscribed
        assert sub.events == []
    before = server.runtime.bus.subscriber_count
    for events in ([*EVENTS, *EVENTS], ["m" * 65], ["m"] * 20_000):
        answer = await first_subscription_answer(server, events)
        assert answer["type"] in ("next", "error"), answer
        errors = answer["payload"] if answer["type"] == "error" else answer["payload"]["errors"]
        assert errors[0]["extensions"]["code"] == "BAD_USER_INPUT", answer
        assert server.runtime.bus.subscriber_count == before


async def first_subscription_answer(server: Server, events: list[str]) -> dict[str, Any]:
    """The first message the server sends for an `events` subscription with this filter."""
    async with websockets.connect(server.ws_url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {server.token}"}})
        )
        async with asyncio.timeout(10):
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            query = {"query": EVENTS_SUBSCRIPTION, "variables": {"events": events}}
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": query}))
            answer: dict[str, Any] = json.loads(await ws.recv())
    return answer


# --- composing off the event loop ------------------------------------------------------------------------

SENDER = Sender(email="from@example.com", name="From", state="connected", imap_disabled=True)
NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)


def big_spec(attachment: bytes) -> SubmitSpec:
    return SubmitSpec(
        to=[Address("rcpt@example.org")],
        subject="big",
        text="body",
        headers={f"X-Extra-{i}": f"value {i} ünïcödé" for i in range(100)},
        attachments=[AttachmentSpec(content=base64.encodebytes(attachment).decode(), filename="a.bin")],
        message_id="<big@example.com>",
    )


async def ticks_during(work: Any) -> tuple[Any, int]:
    """`work`'s result and how often a concurrent task got the event loop while it ran."""
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            await asyncio.sleep(0)
            ticks += 1

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    start = ticks
    try:
        result = await work
        end = ticks
    finally:
        done = True
        await task
    return result, end - start


def parsed(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


async def test_large_message_is_composed_off_the_loop_and_correctly() -> None:
    settings = Settings()
    attachment = bytes(range(256)) * (8 * 1024)  # 2 MiB
    spec = big_spec(attachment)
    assert submission.compose_cost(spec) > submission.INLINE_COMPOSE_COST

    composed, ticks = await ticks_during(compose_message(settings, SENDER, spec, NOW))
    assert ticks >= 20, f"the event loop ran only {ticks} times during a large compose"

    msg = parsed(composed.raw)
    assert [msg[f"X-Extra-{i}"] for i in range(100)] == [f"value {i} ünïcödé" for i in range(100)]
    [part] = list(msg.iter_attachments())
    assert part.get_filename() == "a.bin" and part.get_content() == attachment
    # The same bytes as composing on the loop (the message id fixes the MIME boundaries).
    assert composed.raw == submission._composed(settings, SENDER, spec, NOW).raw


async def test_small_message_is_composed_inline_and_correctly() -> None:
    settings = Settings()
    spec = SubmitSpec(
        to=[Address("rcpt@example.org")],
        text="hello",
        headers={"X-One": "1", "X-Two": "zwei"},
        attachments=[AttachmentSpec(content=base64.b64encode(b"tiny").decode(), filename="t.txt")],
        message_id="<small@example.com>",
    )
    assert submission.compose_cost(spec) <= submission.INLINE_COMPOSE_COST
    composed, ticks = await ticks_during(compose_message(settings, SENDER, spec, NOW))
    assert ticks == 0  # no hand-off: composed before the loop ran anything else
    msg = parsed(composed.raw)
    assert (msg["X-One"], msg["X-Two"]) == ("1", "zwei")
    assert [p.get_payload(decode=True) for p in msg.iter_attachments()] == [b"tiny"]


async def test_hundred_headers_and_large_attachment_through_the_server(
    server: Server, smtp_server: SmtpServer
) -> None:
    await register_connected(server, account_input("lim", smtp_server))
    attachment = bytes(range(256)) * (12 * 1024)  # 3 MiB
    headers = {f"X-Extra-{i}": f"value {i}" for i in range(100)}
    content = base64.b64encode(attachment).decode()
    answer = await server.gql(
        SUBMIT, {"i": message(headers=headers, attachments=[{"content": content, "filename": "a.bin"}])}
    )
    async with server.runtime.db.read() as session:
        raw = (
            await session.execute(
                select(OUTBOX.c.raw).where(OUTBOX.c.id == answer["submitMessage"]["queueId"])
            )
        ).scalar_one()
    msg = parsed(raw)
    assert all(msg[name] == value for name, value in headers.items())
    assert [p.get_payload(decode=True) for p in msg.iter_attachments()] == [attachment]


# --- fuzzing with huge and many-keyed input ------------------------------------------------------------

HUGE = st.one_of(
    st.integers(90, 20_000).map(lambda n: {"to": addresses(n)}),
    st.integers(15, 5_000).map(lambda n: {"replyTo": addresses(n)}),
    st.integers(40, 3_000).map(lambda n: {"attachments": [{"content": "aGk="}] * n}),
    st.integers(90, 20_000).map(lambda n: {"headers": {f"X-H{i}": "v" for i in range(n)}}),
    st.dictionaries(
        st.text(max_size=8), st.dictionaries(st.text(max_size=5), st.integers(), max_size=150), max_size=150
    ).map(lambda h: {"headers": h}),
    st.tuples(st.sampled_from(["subject", "messageId", "text", "html"]), st.integers(900, 200_000)).map(
        lambda f: {f[0]: "x" * f[1]}
    ),
)


def _fuzz_huge(url: str, token: str) -> int:
    sent = 0
    with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {token}"}) as client:

        @settings(FUZZ, max_examples=30)
        @given(fields=HUGE)
        def run(fields: dict[str, Any]) -> None:
            nonlocal sent
            sent += 1
            variables = {"i": message(**fields)}
            response = client.post(url, json={"query": SUBMIT, "variables": variables})
            check_answer(response, SUBMIT, list(fields))
            for error in response.json().get("errors") or []:
                assert error["extensions"]["code"] in ("BAD_USER_INPUT", "PAYLOAD_TOO_LARGE"), error

        run()
    return sent


@pytest.mark.fault(
    "fuzzed huge lists, many-keyed and nested maps, long texts in submitMessage",
    "always a coded BAD_USER_INPUT / PAYLOAD_TOO_LARGE or a stored message; never a 5xx",
)
async def test_fuzz_huge_and_many_keyed_input(server: Server, smtp_server: SmtpServer) -> None:
    await register_connected(server, account_input("lim", smtp_server))
    assert await asyncio.to_thread(_fuzz_huge, server.url + "/graphql", server.token) >= 30
