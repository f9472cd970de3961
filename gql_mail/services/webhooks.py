"""Webhook subscriptions. Their deliveries are rows staged by `services.unit` and POSTed by a worker."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
from sqlalchemy import select
from sqlmodel import col

from gql_mail.events import ALL_EVENTS
from gql_mail.models import Webhook
from gql_mail.outbound import OutboundPolicy
from gql_mail.runtime import Runtime
from gql_mail.services import validation as v
from gql_mail.services.errors import BadInput, NotFound


@dataclass(frozen=True)
class WebhookSpec:
    url: str
    events: Sequence[str] | None = None
    account: str | None = None
    secret: str | None = None


def check_url(value: str, policy: OutboundPolicy, field: str = "url") -> str:
    """A URL the webhook worker's HTTP client can POST to, or BAD_USER_INPUT. Checked here, once: a URL that
    only fails when used (an invalid IDNA label such as `http://xn--zz/`, a port past 65535, a 64-character
    DNS label, an address the outbound policy refuses) would fail every delivery of the webhook."""
    url = v.required_text(value, field, max_length=2048).strip()
    try:
        parsed = httpx.URL(url)
        httpx.Request("POST", parsed)
    except Exception as exc:  # httpx.InvalidURL, or the idna codec's UnicodeError
        raise BadInput(f"{field} is not a usable URL: {exc}", field=field) from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise BadInput(f"{field} must be an absolute http:// or https:// URL", field=field)
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise BadInput(f"{field} has no valid port: {parsed.port}", field=field)
    if (fault := v.host_fault(parsed.raw_host.decode("ascii", "replace"))) is not None:
        raise BadInput(f"{field} has no valid host name: {parsed.host!r} ({fault})", field=field)
    if (rule := policy.literal_refusal(parsed.host)) is not None:
        raise BadInput(f"{field} is an address outbound connections may not reach ({rule})", field=field)
    return url


def _events(values: Sequence[str] | None) -> list[str]:
    if not values:
        return [v.EVENT_WILDCARD]
    return v.event_names(values, wildcard=True)


async def create_webhook(rt: Runtime, spec: WebhookSpec) -> Webhook:
    row = Webhook(
        id=uuid.uuid4().hex[:20],
        url=check_url(spec.url, rt.outbound),
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
    return sorted(ALL_EVENTS) if v.EVENT_WILDCARD in events else events
