"""A write unit of work that also carries the events it causes.

Events are written as webhook_delivery rows inside the same transaction as the change they report, so a
crash can never keep the change and lose its webhooks (or the reverse). Live subscribers hear of them
only after the commit, so they never see an event for a change that was rolled back.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from sqlalchemy import exists, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from gql_mail.events import Event
from gql_mail.models import Webhook, WebhookDelivery, table
from gql_mail.runtime import Runtime

# True when any webhook is enabled. A caller that already runs a query in its unit of work can add this as a
# column and tell `UnitOfWork.no_webhooks()`, which saves staging its round trip when there are none.
ANY_ENABLED_WEBHOOK = exists().where(col(Webhook.enabled).is_(True))


@dataclass
class UnitOfWork:
    session: AsyncSession
    events: list[Event] = field(default_factory=list)
    # False once the caller has seen, inside this transaction, that no webhook is enabled.
    may_have_webhooks: bool = True

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def no_webhooks(self) -> None:
        """No webhook is enabled (read in this transaction, whose write lock keeps it so until the commit)."""
        self.may_have_webhooks = False


async def stage_webhook_deliveries(
    rt: Runtime, session: AsyncSession, events: Sequence[Event], *, may_have_webhooks: bool = True
) -> int:
    """Write one webhook_delivery row per (event, matching enabled webhook)."""
    if not events or not may_have_webhooks:
        return 0
    hooks = (await session.execute(select(Webhook).where(col(Webhook.enabled).is_(True)))).scalars().all()
    if not hooks:
        return 0
    now = rt.clock.now()
    rows = []
    for event in events:
        body: bytes | None = None
        for hook in hooks:
            if hook.account_id is not None and hook.account_id != event.account:
                continue
            if hook.events and "*" not in hook.events and event.event not in hook.events:
                continue
            body = body or event.webhook_body(rt.settings.service_url)
            rows.append(
                {
                    "id": uuid.uuid4().hex,
                    "webhook_id": hook.id,
                    "event": event.event,
                    "order_key": event.order_key or (event.account or ""),
                    "body": body,
                    "status": "pending",
                    "attempts_made": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                }
            )
    if rows:
        await session.execute(insert(table(WebhookDelivery)), rows)
    return len(rows)


@asynccontextmanager
async def unit_of_work(rt: Runtime, *, bulk: bool = False) -> AsyncIterator[UnitOfWork]:
    async with rt.db.write(bulk=bulk) as session:
        uow = UnitOfWork(session)
        yield uow
        staged = await stage_webhook_deliveries(
            rt, session, uow.events, may_have_webhooks=uow.may_have_webhooks
        )
    for event in uow.events:
        rt.bus.publish(event)
    if staged:
        rt.wake.webhooks()
