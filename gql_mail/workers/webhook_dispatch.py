"""POSTs staged webhook deliveries with retries.

Each delivery is claimed like a job (so with several processes each event is POSTed once per webhook),
signed with the webhook's secret, and on a non-2xx answer or a network error rescheduled with backoff
until `GQL_MAIL_WEBHOOK_ATTEMPTS` is spent. Order per (webhook, message) is kept by the claim query.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Sequence

import httpx
from sqlalchemy import select, update
from sqlmodel import col

from gql_mail.mail.peer_text import peer_text
from gql_mail.models import Webhook, WebhookDelivery
from gql_mail.outbound_httpx import PolicyTransport
from gql_mail.queue import ClaimedDelivery, claim_webhook_deliveries
from gql_mail.runtime import Runtime
from gql_mail.workers.batcher import Batcher

log = logging.getLogger(__name__)


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookDispatcher:
    def __init__(self, rt: Runtime, *, concurrency: int = 16, batch: int = 200) -> None:
        self.rt = rt
        self._concurrency = concurrency
        self._batch = batch
        self._wanted = asyncio.Event()
        self._client: httpx.AsyncClient | None = None
        # A result that can't be recorded even alone ends its delivery `failed` (see `_record_unrecordable`).
        self._recorder: Batcher[tuple[ClaimedDelivery, str | None]] = Batcher(
            self._record, on_item_failed=self._record_unrecordable
        )

    def start(self) -> None:
        self._recorder.start()
        # Every connection through the outbound policy (a webhook URL must not reach cloud metadata); no
        # proxies from the environment, which would get transports the policy does not govern.
        limits = httpx.Limits(max_connections=self._concurrency * 2)
        self._client = httpx.AsyncClient(
            transport=PolicyTransport(self.rt.outbound, limits=limits),
            timeout=httpx.Timeout(self.rt.settings.webhook_timeout_seconds),
            headers={"User-Agent": "gql-mail"},
            follow_redirects=False,
            trust_env=False,
        )

    async def stop(self) -> None:
        await self._recorder.stop()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def wake(self) -> None:
        self._wanted.set()

    async def drain(self) -> None:
        """The scheduler's `dispatch_webhooks` job: deliver until nothing is due."""
        while True:
            self._wanted.clear()
            claimed = await claim_webhook_deliveries(self.rt, self._batch)
            if claimed:
                await self._deliver_all(claimed)
            elif not self._wanted.is_set():
                return

    async def _deliver_all(self, claimed: Sequence[ClaimedDelivery]) -> None:
        webhook_ids = {d.webhook_id for d in claimed}
        async with self.rt.db.read() as session:
            hooks = {
                h.id: h
                for h in (
                    await session.execute(select(Webhook).where(col(Webhook.id).in_(webhook_ids)))
                ).scalars()
            }
        limit = asyncio.Semaphore(self._concurrency)

        async def one(delivery: ClaimedDelivery) -> None:
            async with limit:
                error = await self._post(delivery, hooks.get(delivery.webhook_id))
            # Recorded as soon as it is known (batched with its neighbours), not after the whole claim:
            # a crash then re-POSTs only what was really in flight.
            await self._recorder.add((delivery, error))

        await asyncio.gather(*(one(d) for d in claimed))

    async def _post(self, delivery: ClaimedDelivery, hook: Webhook | None) -> str | None:
        """None on success, else the reason it failed."""
        if hook is None:
            return "webhook deleted"
        assert self._client is not None
        headers = {
            "Content-Type": "application/json",
            "X-GqlMail-Event": delivery.event,
            "X-GqlMail-Delivery": delivery.id,
        }
        if hook.secret_enc:
            headers["X-GqlMail-Signature"] = signature(
                self.rt.secrets.decrypt(hook.secret_enc), delivery.body
            )
        try:
            response = await self._client.post(hook.url, content=delivery.body, headers=headers)
        except httpx.HTTPError as exc:
            # httpx words what the receiver did (a protocol error quotes its bytes): the peer's text.
            return peer_text(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"

    async def _record(self, results: Sequence[tuple[ClaimedDelivery, str | None]]) -> None:
        now = self.rt.clock.now()
        async with self.rt.db.write() as session:
            for delivery, error in results:
                attempts = delivery.attempts_made + 1
                values: dict[str, object] = {"attempts_made": attempts, "claimed_by": None}
                if error is None:
                    values.update(status="delivered", delivered_at=now, last_error=None)
                else:
                    retry_at = self.rt.webhook_retry.next_attempt(
                        attempts_made=attempts,
                        attempts=self.rt.settings.webhook_attempts,
                        now=now,
                        rng=self.rt.rng,
                    )
                    values.update(last_error=error)
                    if retry_at is None or error == "webhook deleted":
                        values.update(status="failed")
                        log.warning("webhook delivery %s failed for good: %s", delivery.id, error)
                    else:
                        values.update(status="pending", next_attempt_at=retry_at)
                await session.execute(
                    update(WebhookDelivery)
                    # Still ours: a delivery handed back meanwhile (this worker was declared dead) is
                    # another worker's now.
                    .where(
                        col(WebhookDelivery.seq) == delivery.seq,
                        col(WebhookDelivery.claimed_by) == self.rt.worker_id,
                    )
                    .values(**values)
                    .execution_options(synchronize_session=False)
                )

    async def _record_unrecordable(
        self, result: tuple[ClaimedDelivery, str | None], error: Exception
    ) -> None:
        """End a delivery whose result could not be recorded, even alone: `failed`, with a constant error
        (left `sending`, it would be POSTed again each time its lease lapsed, its attempts never counted).
        Only a delivery still `sending` is touched."""
        delivery, _ = result
        text = f"INTERNAL: the delivery result could not be recorded ({type(error).__name__})"
        log.warning("webhook delivery %s failed for good: %s", delivery.id, text)
        async with self.rt.db.write() as session:
            await session.execute(
                update(WebhookDelivery)
                .where(
                    col(WebhookDelivery.seq) == delivery.seq,
                    col(WebhookDelivery.status) == "sending",
                    col(WebhookDelivery.claimed_by) == self.rt.worker_id,
                )
                .values(
                    status="failed",
                    attempts_made=delivery.attempts_made + 1,
                    claimed_by=None,
                    last_error=text,
                )
                .execution_options(synchronize_session=False)
            )
