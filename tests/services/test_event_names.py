"""One check of event names for every place a client names events: webhooks and event streams."""

from __future__ import annotations

import pytest

from gql_mail.events import ALL_EVENTS
from gql_mail.services.errors import BadInput
from gql_mail.services.event_stream import event_batches
from gql_mail.services.validation import MAX_EVENT_NAMES, event_names
from gql_mail.services.webhooks import WebhookSpec, create_webhook
from tests.harness import Server

KNOWN = sorted(ALL_EVENTS)[0]


def test_known_names_pass_deduplicated_in_order() -> None:
    assert event_names([KNOWN, KNOWN]) == [KNOWN]


def test_the_wildcard_is_for_webhooks_only() -> None:
    assert event_names(["*"], wildcard=True) == ["*"]
    with pytest.raises(BadInput, match="unknown event name"):
        event_names(["*"])


def test_too_many_names_are_refused_before_they_are_looked_at() -> None:
    with pytest.raises(BadInput, match=f"at most {MAX_EVENT_NAMES}"):
        event_names(["nope"] * (MAX_EVENT_NAMES + 1))


async def _first_batch(server: Server, events: list[str]) -> None:
    async for _ in event_batches(server.runtime, None, None, events):
        break


async def test_a_webhook_and_a_stream_refuse_an_unknown_name_alike(server: Server) -> None:
    with pytest.raises(BadInput) as webhook:
        await create_webhook(server.runtime, WebhookSpec(url="http://127.0.0.1:9/", events=["nope"]))
    with pytest.raises(BadInput) as stream:
        await _first_batch(server, ["nope"])
    assert webhook.value.field == stream.value.field == "events"
    assert "unknown event name(s) nope" in str(webhook.value)
    assert "unknown event name(s) nope" in str(stream.value)
