"""EmailEngine's webhook settings through `/v1/settings`: a webhook set there receives real POSTs signed
with the service secret (checked as EmailEngine's documentation tells receivers to), `webhooksEnabled`
false stops them, and refused settings change nothing."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlmodel import col

from gql_mail.models import WebhookDelivery
from gql_mail.services.tokens import create_token
from tests.harness import Server, wait_webhook
from tests.rest_client import boom, connected_account, rest, verify_webhook
from tests.servers.smtp import SmtpServer
from tests.servers.webhook_receiver import ReceivedRequest, WebhookReceiver

SECRET = "receiver-knows-this-one"
ALL = {"webhooks": "true", "webhooksEnabled": "true", "webhookEvents": "true", "serviceSecret": "true"}
GRAPHQL_WEBHOOKS = "query { webhooks { id url events enabled hasSecret } }"


def added(account: str) -> Any:
    def match(request: ReceivedRequest) -> bool:
        body = request.json()
        return bool(body["event"] == "accountAdded" and body["account"] == account)

    return match


async def test_settings_webhook_is_signed_with_the_service_secret_and_can_be_switched_off(
    server: Server, smtp_server: SmtpServer, webhook_receiver: WebhookReceiver
) -> None:
    unset = await rest(server, "GET", "/settings", params=ALL)
    assert unset.json() == {
        "webhooks": None,
        "webhooksEnabled": False,
        "webhookEvents": [],
        "serviceSecret": True,
    }
    assert (await rest(server, "GET", "/settings")).json() == {}
    kinds = (await rest(server, "GET", "/settings", params={"eventTypes": "true"})).json()["eventTypes"]
    assert "accountAdded" in kinds and "messageSent" in kinds

    settings = {
        "webhooks": webhook_receiver.url,
        "webhooksEnabled": True,
        "webhookEvents": ["accountAdded"],
        "serviceSecret": SECRET,
    }
    updated = await rest(server, "POST", "/settings", json=settings)
    assert (updated.status_code, updated.json()) == (200, {"updated": sorted(settings)})
    assert (await rest(server, "GET", "/settings", params=ALL)).json() == {**settings, "serviceSecret": True}
    hooks = (await server.gql(GRAPHQL_WEBHOOKS))["webhooks"]
    assert hooks == [
        {
            "id": "settings",
            "url": webhook_receiver.url,
            "events": ["accountAdded"],
            "enabled": True,
            "hasSecret": False,
        }
    ]

    await connected_account(server, smtp_server, "first")
    post = await wait_webhook(webhook_receiver, added("first"))
    signature = post.header("X-EE-Wh-Signature")
    assert signature is not None and verify_webhook(post.body, signature, SECRET)

    assert (await rest(server, "POST", "/settings", json={"webhooksEnabled": False})).json() == {
        "updated": ["webhooksEnabled"]
    }
    await connected_account(server, smtp_server, "quiet")
    assert (await rest(server, "POST", "/settings", json={"webhooksEnabled": True})).status_code == 200
    await connected_account(server, smtp_server, "loud")
    await wait_webhook(webhook_receiver, added("loud"))
    accounts = [r.json()["account"] for r in webhook_receiver.received if r.json()["event"] == "accountAdded"]
    assert accounts == ["first", "loud"], "nothing was sent for the account added while disabled"
    async with server.runtime.db.read() as session:
        staged = (await session.execute(select(col(WebhookDelivery.order_key)))).scalars().all()
    assert "quiet" not in staged, "nothing was even staged for it"

    # No events: EmailEngine sends none (a gql-mail webhook without events would get all); null clears.
    await rest(server, "POST", "/settings", json={"webhookEvents": []})
    assert (await server.gql(GRAPHQL_WEBHOOKS))["webhooks"][0]["enabled"] is False
    await rest(server, "POST", "/settings", json={"webhooks": None})
    assert (await server.gql(GRAPHQL_WEBHOOKS))["webhooks"] == []
    assert (await rest(server, "GET", "/settings", params={"webhooks": "true"})).json() == {"webhooks": None}


async def test_refused_settings_name_the_field_and_change_nothing(
    server: Server, webhook_receiver: WebhookReceiver
) -> None:
    good = {"webhooks": webhook_receiver.url, "webhooksEnabled": True, "webhookEvents": ["*"]}
    assert (await rest(server, "POST", "/settings", json=good)).status_code == 200
    before = (await rest(server, "GET", "/settings", params=ALL)).json()
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"webhooks": "not a url"}, "webhooks", "webhooks must be an absolute http:// or https:// URL"),
        ({"webhookEvents": ["messageNew"]}, "webhookEvents", "unknown event name(s) messageNew"),
        ({"serviceSecret": "short", "webhooksEnabled": False}, "serviceSecret", "at least 16 characters"),
        ({"serviceUrl": "https://x.example"}, "serviceUrl", '"serviceUrl" is not supported by gql-mail'),
        ({"smtpServerPort": 2525}, "smtpServerPort", '"smtpServerPort" is not allowed'),
    ]
    for body, key, message in cases:
        refused = await rest(server, "POST", "/settings", json=body)
        assert refused.status_code == 400, body
        [field] = refused.json()["fields"]
        assert field["key"] == key and message in field["message"], field
    assert (await rest(server, "GET", "/settings", params=ALL)).json() == before
    unknown = await rest(server, "GET", "/settings", params={"smtpServerPort": "true"})
    assert unknown.json()["fields"] == [
        {"message": '"smtpServerPort" is not allowed', "key": "smtpServerPort"}
    ]


async def test_settings_need_a_token_and_writing_them_an_api_one(server: Server) -> None:
    _, read = await create_token(server.runtime, "read", "reader")
    assert (await rest(server, "GET", "/settings", params=ALL, token=read)).status_code == 200
    refused = await rest(server, "POST", "/settings", json={"webhooksEnabled": True}, token=read)
    assert (refused.status_code, refused.json()) == (
        403,
        boom(403, "Unauthorized scope", requestedScope="api"),
    )
    anonymous = await rest(server, "GET", "/settings", token=None)
    assert (anonymous.status_code, anonymous.json()) == (401, boom(401, "Missing authentication"))
    assert (await rest(server, "GET", "/settings", params={"webhooksEnabled": "true"})).json() == {
        "webhooksEnabled": False
    }
