"""Webhook POSTs that a receiver written for EmailEngine verifies unchanged (issue 15, point 5).

A real gql-mail server POSTs to a real HTTP receiver; the receiver checks `X-EE-Wh-Signature` with the very
function EmailEngine's documentation gives receivers (docs/api-reference/webhooks-api.md, "Verify
Signature", Python tab: HMAC-SHA256 of the raw body, base64url without padding, constant-time compare).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from gql_mail.app import build_runtime
from gql_mail.config import Settings
from gql_mail.crypto import SecretBox
from gql_mail.migrations import upgrade
from gql_mail.models import ServiceSetting, WebhookDelivery
from gql_mail.services.errors import BadInput
from gql_mail.services.settings import service_secret, set_service_secret
from gql_mail.workers.webhook_dispatch import NO_SERVICE_SECRET
from tests.conftest import account_input, register_connected
from tests.databases import database_contents, fresh_database
from tests.harness import Server, run_server, wait_webhook
from tests.rest_client import verify_webhook
from tests.servers.smtp import SmtpServer
from tests.servers.webhook_receiver import ReceivedRequest, WebhookReceiver

HOOK = "mutation Hook($input: WebhookInput!) { createWebhook(input: $input) { id } }"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with run_server(tmp_path, webhook_attempts=3) as s:
        yield s


async def hook(server: Server, url: str, **extra: Any) -> str:
    created = await server.gql(HOOK, {"input": {"url": url, "events": ["accountAdded"], **extra}})
    return str(created["createWebhook"]["id"])


def added(account: str) -> Any:
    def match(request: ReceivedRequest) -> bool:
        body = request.json()
        return bool(body["event"] == "accountAdded" and body["account"] == account)

    return match


def signature_of(request: ReceivedRequest) -> str:
    value = request.header("X-EE-Wh-Signature")
    assert value is not None and "=" not in value, "base64url without padding, as Node's digest('base64url')"
    return value


async def test_a_webhook_with_a_secret_is_signed_with_it(
    server: Server, smtp_server: SmtpServer, webhook_receiver: WebhookReceiver
) -> None:
    await hook(server, webhook_receiver.url, secret="whsec-ee-compatible")
    await register_connected(server, account_input("signed", smtp_server))
    post = await wait_webhook(webhook_receiver, added("signed"))

    assert verify_webhook(post.body, signature_of(post), "whsec-ee-compatible")
    assert not verify_webhook(
        post.body.replace(b"signed", b"signet"), signature_of(post), "whsec-ee-compatible"
    )
    assert not verify_webhook(post.body, signature_of(post), await service_secret(server.runtime))
    # Today's headers are kept beside EmailEngine's.
    assert post.header("X-GqlMail-Event") == "accountAdded"
    assert (post.header("X-GqlMail-Signature") or "").startswith("sha256=")
    assert post.header("X-EE-Wh-Id") == post.header("X-GqlMail-Delivery") and post.header("X-EE-Wh-Id")
    assert post.header("X-EE-Wh-Event-Id") == str(uuid.UUID(hex=post.header("X-EE-Wh-Id")))
    assert post.header("X-EE-Wh-Attempts-Made") == "0"
    assert post.header("X-EE-Wh-Queued-Time") == "0s"  # the manual clock stood still
    assert post.header("User-Agent") == f"gql-mail/{version('gql-mail')}"
    assert post.header("Content-Type") == "application/json"


async def test_a_webhook_without_a_secret_is_signed_with_the_service_secret(
    server: Server, smtp_server: SmtpServer, webhook_receiver: WebhookReceiver
) -> None:
    await hook(server, webhook_receiver.url)
    await register_connected(server, account_input("unkeyed", smtp_server))
    post = await wait_webhook(webhook_receiver, added("unkeyed"))
    assert post.header("X-GqlMail-Signature") is None, "gql-mail's own signature needs the webhook's secret"

    generated = await service_secret(server.runtime)
    assert re.fullmatch(r"[0-9a-f]{32}", generated), "EmailEngine's form: 16 random bytes, hex"
    assert await service_secret(server.runtime) == generated, "generated once"
    assert verify_webhook(post.body, signature_of(post), generated)

    # Set to a value the receiver knows (EmailEngine: POST /v1/settings {serviceSecret}).
    await set_service_secret(server.runtime, "receiver-knows-this-one")
    await register_connected(server, account_input("rekeyed", smtp_server))
    post = await wait_webhook(webhook_receiver, added("rekeyed"))
    assert verify_webhook(post.body, signature_of(post), "receiver-knows-this-one")
    assert not verify_webhook(post.body, signature_of(post), generated)


async def test_attempts_made_and_queued_time_count_up_on_a_retry(
    server: Server, smtp_server: SmtpServer, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.fail_next(1, status=503)
    await hook(server, webhook_receiver.url, secret="whsec-retry")
    await register_connected(server, account_input("retried", smtp_server))
    first = await wait_webhook(webhook_receiver, added("retried"))
    assert first.status == 503 and first.header("X-EE-Wh-Attempts-Made") == "0"
    async with asyncio.timeout(10):  # the failure recorded (its retry scheduled) before the clock moves
        await server.workers.webhooks.drain()

    server.advance(3600)  # past the backoff
    second = await wait_webhook(webhook_receiver, lambda r: added("retried")(r) and r.status == 200)
    assert second.header("X-EE-Wh-Attempts-Made") == "1"
    assert second.header("X-EE-Wh-Queued-Time") == "3600s"
    assert second.header("X-EE-Wh-Id") == first.header("X-EE-Wh-Id"), "one id across retries"
    assert second.header("X-EE-Wh-Event-Id") == first.header("X-EE-Wh-Event-Id"), "EmailEngine's dedup key"
    assert second.body == first.body
    assert verify_webhook(second.body, signature_of(second), "whsec-retry")


async def test_the_service_secret_refuses_what_a_receiver_could_not_hold(server: Server) -> None:
    before = await service_secret(server.runtime)
    for bad in ("short", "x" * 257, "line\r\nbreak-in-a-secret"):
        with pytest.raises(BadInput) as refused:
            await set_service_secret(server.runtime, bad)
        assert refused.value.field == "serviceSecret"
    assert await service_secret(server.runtime) == before, "a refused value changes nothing"


async def test_an_unreadable_service_secret_fails_only_the_posts_it_signs(
    server: Server, smtp_server: SmtpServer, webhook_receiver: WebhookReceiver
) -> None:
    """Stored under a key this process lacks (GQL_MAIL_SECRET changed without rotate-secret): POSTs of
    webhooks without a secret fail with the reason, never go out unsigned; the others are delivered."""
    await service_secret(server.runtime)
    async with server.runtime.db.write() as session:
        foreign = SecretBox("another-deployment-secret-000").encrypt("not ours")
        await session.execute(update(ServiceSetting).values(value_enc=foreign))
    unsigned = await hook(server, webhook_receiver.url + "/unsigned")
    keyed_hook = await hook(server, webhook_receiver.url + "/keyed", secret="whsec-own")
    await register_connected(server, account_input("foreign", smtp_server))
    keyed = await wait_webhook(webhook_receiver, added("foreign"))
    assert keyed.path == "/webhook/keyed" and verify_webhook(keyed.body, signature_of(keyed), "whsec-own")
    async with asyncio.timeout(10):
        await server.workers.webhooks.drain()
    async with server.runtime.db.read() as session:
        rows = (await session.execute(select(WebhookDelivery))).scalars().all()
    outcomes = {(row.webhook_id, row.status, row.attempts_made, row.last_error) for row in rows}
    assert outcomes == {(keyed_hook, "delivered", 1, None), (unsigned, "pending", 1, NO_SERVICE_SECRET)}
    assert all(r.path != "/webhook/unsigned" for r in webhook_receiver.received)


async def test_nodes_asking_for_the_first_time_at_once_agree(tmp_path: Path) -> None:
    """Several processes on one new database (each its own engine and pool; no server running, whose
    webhook worker would ask first) generate the secret at the same moment: one insert wins, the others
    read its value (on PostgreSQL their inserts fail on the primary key)."""
    async with fresh_database(tmp_path) as url:
        await upgrade(url)
        settings = Settings(database_url=url, secret="test-secret-" + "x" * 20, data_dir=tmp_path / "data")
        nodes = [build_runtime(settings) for _ in range(4)]
        try:
            for rt in nodes:  # connected, so that no node's first query waits for a connection
                async with rt.db.write() as session:
                    await session.execute(select(1))
            secrets = await asyncio.gather(*(service_secret(rt) for rt in nodes))
        finally:
            for rt in nodes:
                await rt.db.dispose()
    assert len(set(secrets)) == 1


async def test_the_service_secret_is_stored_encrypted(server: Server, tmp_path: Path) -> None:
    generated = await service_secret(server.runtime)
    await set_service_secret(server.runtime, "set-by-operator-0123456789")
    stored = await database_contents(server.settings.database_url, tmp_path)
    assert stored, "the database was read"
    assert generated.encode() not in stored and b"set-by-operator-0123456789" not in stored
