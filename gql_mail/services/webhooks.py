"""Webhook subscriptions. Their deliveries are rows staged by `services.unit` and POSTed by a worker."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlmodel import col

from gql_mail.events import ALL_EVENTS
from gql_mail.models import Webhook
from gql_mail.runtime import Runtime
from gql_mail.services import validation as v
from gql_mail.services.errors import BadInput, NotFound


@dataclass(frozen=True)
class WebhookSpec:
    url: str
    events: Sequence[str] | None = None
    account: str | None = None
    secret: str | None = None


def _url(value: str) -> str:
    url = v.required_text(value, "url", max_length=2048).strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadInput("url must be an absolute http:// or https:// URL", field="url")
    return url


def _events(values: Sequence[str] | None) -> list[str]:
    if not values:
        return ["*"]
    return v.event_names(values, known=ALL_EVENTS | {"*"})


async def create_webhook(rt: Runtime, spec: WebhookSpec) -> Webhook:
    row = Webhook(
        id=uuid.uuid4().hex[:20],
        url=_url(spec.url),
        events=_events(spec.events),
        account_id=v.no_control_chars(spec.account, "account", max_length=256) if spec.account else None,
        secret_enc=rt.secrets.maybe_encrypt(spec.secret) if spec.secret else None,
        enabled=True,
        created_at=rt.clock.now(),
    )
    async with rt.db.write() as session:
        session.add(row)
    return row


async def list_webhooks(rt: Runtime) -> Sequence[Webhook]:
    async with rt.db.read() as session:
        return (await session.execute(select(Webhook).order_by(col(Webhook.created_at)))).scalars().all()


async def delete_webhook(rt: Runtime, webhook_id: str) -> bool:
    async with rt.db.write() as session:
        row = await session.get(Webhook, webhook_id)
        if row is None:
            raise NotFound(f"no webhook {webhook_id!r}", field="id")
        await session.delete(row)
    return True


def expand_events(events: list[str]) -> list[str]:
    """What a client sees: '*' shown as every event name."""
    return sorted(ALL_EVENTS) if "*" in events else events
