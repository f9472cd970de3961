"""The webhook worker against hostile receivers and URLs, and replay-safe signatures (issue 14, 4 and 8).

Real receivers: a port that accepts TCP and never answers (`silent_port`), the scriptable
`WebhookReceiver` (slow answers, a body that never ends). Backoff is skipped with the manual clock; the one
real wait is a POST's own deadline, kept short here.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import col

from gql_mail.models import Webhook, WebhookDelivery
from tests.conftest import account_input, register_connected
from tests.faults.helpers import simple, submit
from tests.harness import GraphQLErrors, Server, run_server, wait_webhook, webhook_event
from tests.servers.smtp import SmtpServer
from tests.servers.webhook_receiver import WebhookReceiver

README = Path(__file__).resolve().parent.parent / "README.md"
HOOK = "mutation Hook($input: WebhookInput!) { createWebhook(input: $input) { id } }"
HOOKS = "{ webhooks { id url lastError { message code } failingSince lastDeliveredAt } }"
DEADLINE = 3.0


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with run_server(
        tmp_path,
        webhook_timeout_seconds=DEADLINE,
        webhook_attempts=3,
        webhook_max_response_bytes=4096,
        webhook_concurrency_per_webhook=3,
    ) as s:
        yield s


async def create_hook(server: Server, url: str, **extra: Any) -> str:
    return str((await server.gql(HOOK, {"input": {"url": url, **extra}}))["createWebhook"]["id"])


async def hook_view(server: Server, hook_id: str) -> dict[str, Any]:
    hooks: list[dict[str, Any]] = (await server.gql(HOOKS))["webhooks"]
    return next(h for h in hooks if h["id"] == hook_id)


async def deliveries(server: Server, hook_id: str) -> list[WebhookDelivery]:
    async with server.runtime.db.read() as session:
        rows = await session.execute(
            select(WebhookDelivery)
            .where(col(WebhookDelivery.webhook_id) == hook_id)
            .order_by(col(WebhookDelivery.seq))
        )
        return list(rows.scalars())


async def drain_webhooks(server: Server) -> None:
    """Until nothing is due or in flight: a hanging POST ends at its deadline, so this is bounded."""
    async with asyncio.timeout(DEADLINE * 4):
        await server.workers.webhooks.drain()


@pytest.mark.fault(
    "Webhook receiver that never answers",
    f"webhook A's port accepts TCP and never replies, B answers at once: all of B's events arrive while A's "
    f"POSTs still hang; A's attempt then fails at the {DEADLINE:g} s deadline, counted (attemptsMade 1, "
    "retried later) with webhooks { lastError ETIMEDOUT, failingSince }",
)
async def test_a_hanging_receiver_delays_only_its_own_webhook(
    server: Server, smtp_server: SmtpServer, webhook_receiver: WebhookReceiver, silent_port: int
) -> None:
    hanging = await create_hook(server, f"http://127.0.0.1:{silent_port}/never")
    fine = await create_hook(server, webhook_receiver.url)
    await register_connected(server, account_input("edge1", smtp_server))
    await register_connected(server, account_input("edge2", smtp_server))
    answers = [await submit(server, "edge1", simple(f"h{i}@example.org")) for i in range(3)]
    expected = 4 + len(answers)  # two accounts added and connected, three messages sent
    for answer in answers:
        await wait_webhook(webhook_receiver, webhook_event("messageSent", answer["queueId"]))
    assert len(webhook_receiver.received) == expected
    # Meanwhile A's first-in-line deliveries are still in flight, unanswered, no attempt counted yet.
    stuck = await deliveries(server, hanging)
    assert {d.status for d in stuck} <= {"sending", "pending"}
    assert "sending" in {d.status for d in stuck}
    assert all(d.attempts_made == 0 for d in stuck)

    await drain_webhooks(server)
    failed = [d for d in await deliveries(server, hanging) if d.attempts_made]
    assert failed and all(d.status == "pending" and d.attempts_made == 1 for d in failed)
    assert all(d.last_error == f"ETIMEDOUT: no complete answer within {DEADLINE:g} s" for d in failed)
    view = await hook_view(server, hanging)
    assert view["lastError"]["code"] == "ETIMEDOUT" and view["failingSince"] is not None
    assert view["lastDeliveredAt"] is None
    ok = await hook_view(server, fine)
    assert ok["lastError"] is None and ok["failingSince"] is None and ok["lastDeliveredAt"] is not None


@pytest.mark.fault(
    "Webhook receiver answers with an endless body",
    "200 and then a chunked body that never ends: gql-mail reads at most "
    "GQL_MAIL_WEBHOOK_MAX_RESPONSE_BYTES, hangs up, and the delivery counts as delivered (one attempt) "
    "well before the deadline",
)
async def test_an_endless_answer_is_read_only_up_to_the_cap(
    server: Server, smtp_server: SmtpServer, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.endless_body()
    hook = await create_hook(server, webhook_receiver.url, events=["accountAdded"])
    await register_connected(server, account_input("endless", smtp_server))
    sent = await webhook_receiver.endless_sent.wait_for(1, timeout=DEADLINE)
    await drain_webhooks(server)
    (delivery,) = await deliveries(server, hook)
    assert (delivery.status, delivery.attempts_made) == ("delivered", 1)
    # The receiver could write only what the sockets' buffers hold before gql-mail hung up: finite.
    assert sent[0] < 64 * 1024 * 1024
    assert (await hook_view(server, hook))["lastDeliveredAt"] is not None


@pytest.mark.fault(
    "Webhook receiver trickles its answer",
    f"200, then one byte of body every 0.5 s, forever (no read ever waits long enough for a per-read "
    f"timeout): the POST is cut at its total deadline ({DEADLINE:g} s), a counted attempt with ETIMEDOUT",
)
async def test_a_trickled_answer_ends_at_the_total_deadline(
    server: Server, smtp_server: SmtpServer, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.endless_body(pause=0.5)
    hook = await create_hook(server, webhook_receiver.url, events=["accountAdded"])
    await register_connected(server, account_input("trickle", smtp_server))
    await webhook_receiver.wait_for(1)
    await drain_webhooks(server)
    (delivery,) = await deliveries(server, hook)
    assert (delivery.status, delivery.attempts_made) == ("pending", 1)
    assert delivery.last_error == f"ETIMEDOUT: no complete answer within {DEADLINE:g} s"
    sent = await webhook_receiver.endless_sent.wait_for(1, timeout=DEADLINE)
    assert sent[0] < 4096, "far less than the cap came in the time"


@pytest.mark.fault(
    "Webhook URL the HTTP client cannot use",
    "createWebhook with http://xn--zz/ (invalid IDNA), a port past 65535, a 64-character DNS label, ftp:// "
    "or no host: BAD_USER_INPUT on field url, no webhook stored",
)
@pytest.mark.parametrize(
    "url",
    ["http://xn--zz/", "http://127.0.0.1:99999/", f"http://{'a' * 64}.example/", "ftp://x/", "http:///x"],
)
async def test_an_unusable_url_is_refused(server: Server, url: str) -> None:
    with pytest.raises(GraphQLErrors) as refused:
        await create_hook(server, url)
    assert refused.value.codes == ["BAD_USER_INPUT"]
    assert refused.value.errors[0]["extensions"]["field"] == "url"
    assert (await server.gql(HOOKS))["webhooks"] == []


@pytest.mark.fault(
    "Webhook POST raising something that is not an httpx error",
    "a webhook row with http://xn--zz/ stored before validation existed (the client raises UnicodeError): "
    "each try is a counted attempt with its reason, retried with backoff, failed once the attempts are spent",
)
async def test_any_exception_is_a_counted_attempt(server: Server, smtp_server: SmtpServer) -> None:
    async with server.runtime.db.write() as session:
        session.add(
            Webhook(
                id=uuid.uuid4().hex[:20],
                url="http://xn--zz/",
                events=["accountAdded"],
                created_at=server.clock.now(),
            )
        )
    await register_connected(server, account_input("legacy", smtp_server))
    (hook,) = (await server.gql(HOOKS))["webhooks"]
    for attempt in range(1, 4):
        await drain_webhooks(server)
        (delivery,) = await deliveries(server, hook["id"])
        assert delivery.attempts_made == attempt
        # The exception's own code (idna's), else its type's name, then its text.
        assert delivery.last_error == "invalid_alabel: Invalid A-label"
        server.clock.advance(3600)
    assert delivery.status == "failed"
    view = await hook_view(server, hook["id"])
    assert view["lastError"] == {"message": delivery.last_error, "code": "invalid_alabel"}
    assert view["failingSince"] is not None


@pytest.mark.fault(
    "Webhook order under concurrency",
    "20 messages, 8 of which fail once first (two events each), receiver answers after 50 ms: POSTs to the "
    "webhook overlap (at most GQL_MAIL_WEBHOOK_CONCURRENCY_PER_WEBHOOK at once), yet each message's events "
    "arrive in the order they happened",
)
async def test_order_per_message_is_kept_with_concurrency(
    server: Server, smtp_server: SmtpServer, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.delay_responses(0.05)
    await create_hook(server, webhook_receiver.url, events=["messageDeliveryError", "messageSent"])
    await register_connected(server, account_input("order", smtp_server))
    smtp_server.fail_next(8, code=451, message="4.3.0 Try again later")
    answers = [await submit(server, "order", simple(f"o{i}@example.org")) for i in range(20)]
    for answer in answers:
        server.advance(3600)
        await wait_webhook(webhook_receiver, webhook_event("messageSent", answer["queueId"]), timeout=20)
    events: dict[str, list[str]] = defaultdict(list)
    for request in webhook_receiver.received:
        body = request.json()
        events[body["data"]["queueId"]].append(body["event"])
    assert sum(e == ["messageDeliveryError", "messageSent"] for e in events.values()) == 8
    assert all(e in (["messageSent"], ["messageDeliveryError", "messageSent"]) for e in events.values())
    assert 1 < webhook_receiver.max_in_flight <= server.settings.webhook_concurrency_per_webhook


def readme_verifier() -> Any:
    """The README's Python verifier, run as written."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    (code,) = [b for b in blocks if "def verify(" in b]
    assert len(code.strip().splitlines()) <= 10
    namespace: dict[str, Any] = {}
    exec(code, namespace)  # noqa: S102 - the README's own example, the point of the test
    return namespace["verify"]


@pytest.mark.fault(
    "Replayed webhook POST",
    "the README's 10-line verifier, run as written, accepts a real delivered POST (X-GqlMail-Timestamp, "
    "X-GqlMail-Signature-V2), refuses it with a tampered body, and refuses a real POST signed 10 minutes "
    "ago; the old X-GqlMail-Signature is unchanged",
)
async def test_readme_verifier_checks_real_posts(
    server: Server, smtp_server: SmtpServer, webhook_receiver: WebhookReceiver
) -> None:
    verify = readme_verifier()
    secret = "whsec-edge"
    await create_hook(server, webhook_receiver.url, secret=secret, events=["accountAdded"])
    await register_connected(server, account_input("fresh", smtp_server))
    fresh = await wait_webhook(webhook_receiver, webhook_event("accountAdded"))
    assert fresh.header("X-GqlMail-Signature") == "sha256=" + (
        hmac.new(secret.encode(), fresh.body, hashlib.sha256).hexdigest()
    )
    assert int(fresh.header("X-GqlMail-Timestamp") or 0) == int(server.clock.now().timestamp())
    assert verify(secret.encode(), fresh.headers, fresh.body)
    assert not verify(secret.encode(), fresh.headers, fresh.body.replace(b"fresh", b"fresht"))
    assert not verify(b"another secret", fresh.headers, fresh.body)

    server.clock.set(server.clock.now() - timedelta(minutes=10))
    await register_connected(server, account_input("stale", smtp_server))
    stale = await wait_webhook(
        webhook_receiver, lambda r: r.json()["event"] == "accountAdded" and r.json()["account"] == "stale"
    )
    ts = stale.header("X-GqlMail-Timestamp") or ""
    signed = hmac.new(secret.encode(), f"{ts}.".encode() + stale.body, hashlib.sha256).hexdigest()
    assert stale.header("X-GqlMail-Signature-V2") == "sha256=" + signed, "a valid signature ..."
    assert not verify(secret.encode(), stale.headers, stale.body), "... on a POST too old to accept"


def when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


async def test_webhook_health_follows_its_outcomes(
    server: Server, smtp_server: SmtpServer, webhook_receiver: WebhookReceiver
) -> None:
    """failingSince is the first failure after a success and stays through later failures; a success clears
    it and sets lastDeliveredAt; lastError keeps the last failure's reason."""
    webhook_receiver.fail_next(2, status=503)
    hook = await create_hook(server, webhook_receiver.url, events=["accountAdded"])
    await register_connected(server, account_input("health", smtp_server))
    await drain_webhooks(server)
    first_failure = server.clock.now()
    view = await hook_view(server, hook)
    # The test receiver sends no reason phrase; a receiver's own ("Service Unavailable") would stand there.
    assert view["lastError"] == {"message": "HTTP 503: not a 2xx answer", "code": "HTTP 503"}
    assert when(view["failingSince"]) == first_failure and view["lastDeliveredAt"] is None

    server.clock.advance(3600)
    await drain_webhooks(server)
    view = await hook_view(server, hook)
    assert (await deliveries(server, hook))[0].attempts_made == 2
    assert when(view["failingSince"]) == first_failure, "still failing since the first failure"

    server.clock.advance(3600)
    await drain_webhooks(server)
    view = await hook_view(server, hook)
    assert (await deliveries(server, hook))[0].status == "delivered"
    assert view["failingSince"] is None and when(view["lastDeliveredAt"]) == server.clock.now()
    assert view["lastError"]["code"] == "HTTP 503", "the last failure stays visible"
