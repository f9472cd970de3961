"""/metrics after a real flow (register, submit, delivered to the SMTP sink, webhooks POSTed), scraped over
HTTP and read with prometheus-client's own parser; and who may scrape it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from gql_mail.config import Settings
from gql_mail.metrics import MAX_OPERATION_NAMES, Metrics, smtp_class
from gql_mail.services.tokens import create_token
from tests.conftest import account_input, register_connected
from tests.harness import Server, run_server, subscribe, wait_webhook, webhook_event
from tests.servers.smtp import SmtpServer
from tests.servers.webhook_receiver import WebhookReceiver

SUBMIT = """
mutation Submit($account: ID!, $input: SubmitMessageInput!) {
  submitMessage(account: $account, input: $input) { queueId }
}"""
HOOK = "mutation Hook($input: WebhookInput!) { createWebhook(input: $input) { id } }"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels` (0 when there are none)."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


async def scrape(server: Server, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await server.http.get(server.url + "/metrics", headers=headers)


async def test_metrics_after_a_real_flow(
    server: Server, smtp_server: SmtpServer, webhook_receiver: WebhookReceiver
) -> None:
    await server.gql(HOOK, {"input": {"url": webhook_receiver.url + "/hook"}})
    await register_connected(server, account_input("m1", smtp_server))
    message = {"from": {"address": "m1@example.com"}, "to": [{"address": "to@example.org"}], "text": "hi"}
    sent_id = (await server.gql(SUBMIT, {"account": "m1", "input": message}))["submitMessage"]["queueId"]
    await wait_webhook(webhook_receiver, webhook_event("messageSent", sent_id))
    smtp_server.fail_next(1, code=451, message="4.3.0 Try again later")
    deferred = (await server.gql(SUBMIT, {"account": "m1", "input": message}))["submitMessage"]["queueId"]
    await wait_webhook(webhook_receiver, webhook_event("messageDeliveryError", deferred))
    rest = await server.http.get(
        server.url + "/v1/accounts", headers={"Authorization": f"Bearer {server.token}"}
    )
    assert rest.status_code == 200
    assert (await server.http.get(server.url + "/v1/accounts")).status_code == 401
    _, metrics_token = await create_token(server.runtime, "metrics", "prometheus")

    async with subscribe(server, account="m1"):
        answer = await scrape(server, metrics_token)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    samples = parse(answer.text)

    # Process counters: one message sent, one attempt deferred (retried) with a 4xx reply.
    assert value(samples, "gql_mail_messages_total", result="sent") == 1
    assert value(samples, "gql_mail_messages_total", result="retried", smtp_class="4xx") == 1
    assert value(samples, "gql_mail_messages_total", result="failed") == 0
    assert value(samples, "gql_mail_delivery_latency_seconds_count") == 1
    assert value(samples, "gql_mail_smtp_transaction_seconds_count") == 2
    assert ("gql_mail_smtp_connections", frozenset()) in samples
    # Live gauges, read while the subscription above was open.
    assert value(samples, "gql_mail_websocket_connections") == 1
    assert value(samples, "gql_mail_event_subscribers") == 1
    # From the database: the sent message, the deferred one waiting for its retry, the account's state.
    assert value(samples, "gql_mail_queue_messages", status="sent") == 1
    assert value(samples, "gql_mail_queue_messages", status="scheduled") == 1
    assert value(samples, "gql_mail_queue_messages", status="queued") == 0
    assert value(samples, "gql_mail_queue_messages", status="failed") == 0
    assert value(samples, "gql_mail_accounts", state="CONNECTED") == 1
    assert value(samples, "gql_mail_accounts", state="AUTHENTICATION_ERROR") == 0
    assert value(samples, "gql_mail_webhook_deliveries", status="delivered") >= 2
    assert value(samples, "gql_mail_webhook_deliveries", status="failed") == 0
    assert value(samples, "gql_mail_workers_alive") == 1
    # HTTP requests by GraphQL operation name, REST route template and outcome.
    graphql = {"route": "/graphql", "status": "200", "outcome": "ok"}
    assert value(samples, "gql_mail_http_requests_total", operation="Submit", **graphql) == 2
    assert value(samples, "gql_mail_http_requests_total", operation="Hook", **graphql) == 1
    assert value(samples, "gql_mail_http_requests_total", route="/v1/accounts", status="200") == 1
    assert value(samples, "gql_mail_http_requests_total", route="/v1/accounts", outcome="error") == 1
    assert not any("m1" in str(labels) for _, labels in samples), "no account is named in a label"


async def test_the_deferred_message_fails_for_good_and_is_counted(
    server: Server, smtp_server: SmtpServer
) -> None:
    await register_connected(server, account_input("m2", smtp_server))
    smtp_server.fail_next(1, code=550, message="5.1.1 No such user")
    message = {"from": {"address": "m2@example.com"}, "to": [{"address": "to@example.org"}], "text": "hi"}
    await server.gql(SUBMIT, {"account": "m2", "input": message})
    await server.drain()
    samples = parse((await scrape(server, server.token)).text)  # an api token may scrape too
    assert value(samples, "gql_mail_messages_total", result="failed", smtp_class="5xx") == 1
    assert value(samples, "gql_mail_queue_messages", status="failed") == 1
    errors = {"route": "/graphql", "outcome": "BAD_USER_INPUT"}
    await server.post("query Broken { nope }")
    samples = parse((await scrape(server, server.token)).text)
    assert value(samples, "gql_mail_http_requests_total", **errors) == 1


async def test_who_may_scrape(server: Server) -> None:
    assert (await scrape(server, None)).status_code == 401
    _, read = await create_token(server.runtime, "read")
    assert (await scrape(server, read)).status_code == 401
    _, metrics_token = await create_token(server.runtime, "metrics")
    assert (await scrape(server, metrics_token)).status_code == 200
    # A metrics token opens nothing else.
    refused = await server.post("{ accounts { account } }", token=metrics_token)
    assert refused.status_code == 401
    rest = await server.http.get(
        server.url + "/v1/accounts", headers={"Authorization": f"Bearer {metrics_token}"}
    )
    assert rest.status_code == 401


async def test_an_allowed_network_scrapes_without_a_token(tmp_path: Path) -> None:
    async with run_server(tmp_path, metrics_allow=["127.0.0.0/8"]) as server:
        answer = await scrape(server, None)
        assert answer.status_code == 200
        assert "gql_mail_queue_messages" in answer.text
    (tmp_path / "other").mkdir()
    async with run_server(tmp_path / "other", metrics_allow=["10.0.0.0/8"]) as server:
        assert (await scrape(server, None)).status_code == 401


def test_operation_names_are_bounded() -> None:
    metrics = Metrics()
    assert metrics.operation_label(None) == "anonymous"
    assert metrics.operation_label("not a name!") == "other"
    for n in range(MAX_OPERATION_NAMES):
        assert metrics.operation_label(f"Op{n}") == f"Op{n}"
    assert metrics.operation_label("OneTooMany") == "other"
    assert metrics.operation_label("Op1") == "Op1"


def test_a_wrong_network_is_refused_at_start() -> None:
    with pytest.raises(ValidationError):
        Settings(metrics_allow=["10.0.0.300/8"])


def test_smtp_reply_classes() -> None:
    assert [smtp_class(c) for c in (250, 451, 550, None, 99)] == ["2xx", "4xx", "5xx", "none", "none"]


def test_two_runtimes_do_not_share_a_registry() -> None:
    first, second = Metrics(), Metrics()
    first.record_sent(1.0)
    assert value(parse(second.render(None).decode()), "gql_mail_messages_total") == 0
    assert value(parse(first.render(None).decode()), "gql_mail_messages_total", result="sent") == 1
