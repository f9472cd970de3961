"""POSTs staged webhook deliveries with retries, each webhook independently of the others.

Each delivery is claimed like a job (so with several processes each event is POSTed once per webhook),
signed with the webhook's secret, and on a non-2xx answer, a timeout or any other error rescheduled with
backoff until `GQL_MAIL_WEBHOOK_ATTEMPTS` is spent (see `webhook_post` for one POST). Order per (webhook,
message) is kept by the claim query: a delivery is claimable only when nothing earlier for its webhook and
order key is pending or in flight. Headers and signatures: `webhook_post`.

A receiver that hangs must delay only its own deliveries. So a drain does not claim a batch and wait for
all of it: each claimed delivery is POSTed by a task of its own, with at most `GQL_MAIL_WEBHOOK_CONCURRENCY`
POSTs in flight and at most `GQL_MAIL_WEBHOOK_CONCURRENCY_PER_WEBHOOK` per webhook (per process), and the
drain claims again whenever a POST ends (its result recorded) or new work is announced. A claim takes no more
than the free room and skips webhooks that have none; what one claim gives a webhook beyond its room is
handed back at once, so a hanging webhook holds at most its own share of the room.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from datetime import datetime

import httpx
from sqlalchemy import func, select, update
from sqlmodel import col

from gql_mail.models import Webhook, WebhookDelivery
from gql_mail.outbound_httpx import PolicyTransport
from gql_mail.queue import ClaimedDelivery, claim_webhook_deliveries, give_back_webhook_deliveries
from gql_mail.runtime import Runtime
from gql_mail.services.settings import service_secret
from gql_mail.workers.batcher import Batcher
from gql_mail.workers.webhook_post import USER_AGENT, Outgoing, post_webhook, reason, signature

__all__ = ["WebhookDispatcher", "signature"]

log = logging.getLogger(__name__)

WEBHOOK_DELETED = "webhook deleted"
# Never POSTed unsigned: a receiver written for EmailEngine would refuse it anyway, for no stated reason.
NO_SERVICE_SECRET = "ESECRET: the service secret that signs this webhook's POSTs could not be read"


class WebhookDispatcher:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._concurrency = rt.settings.webhook_concurrency
        self._per_webhook = rt.settings.webhook_concurrency_per_webhook
        self._client: httpx.AsyncClient | None = None
        # A result that can't be recorded even alone ends its delivery `failed` (see `_record_unrecordable`).
        self._recorder: Batcher[tuple[ClaimedDelivery, str | None]] = Batcher(
            self._record, on_item_failed=self._record_unrecordable
        )
        self._posts: set[asyncio.Task[None]] = set()
        self._in_flight: Counter[str] = Counter()  # webhook id -> POSTs in flight (claimed, not recorded)
        self._claiming = asyncio.Lock()  # one claim at a time, so the room it fills is still free
        # Something changed (a POST ended, work was announced): a drain waiting on `_changed` claims again.
        # Replaced on each change, so a drain that took it before its claim cannot miss one that came during.
        self._changed = asyncio.Event()
        self._stopping = False

    def start(self) -> None:
        self._stopping = False
        self._recorder.start()
        # Every connection through the outbound policy (a webhook URL must not reach cloud metadata); no
        # proxies from the environment, which would get transports the policy does not govern.
        limits = httpx.Limits(max_connections=self._concurrency * 2)
        self._client = httpx.AsyncClient(
            transport=PolicyTransport(self.rt.outbound, limits=limits),
            # Per phase; the deadline for the whole POST is `post_webhook`'s.
            timeout=httpx.Timeout(self.rt.settings.webhook_timeout_seconds),
            headers={"User-Agent": USER_AGENT},
            follow_redirects=False,
            trust_env=False,
        )

    async def stop(self) -> None:
        """POSTs in flight are cut off: their deliveries stay claimed and come back to the queue with this
        worker's heartbeat row (at-least-once, as after a crash)."""
        self._stopping = True
        for task in list(self._posts):
            task.cancel()
        await asyncio.gather(*self._posts, return_exceptions=True)
        self._posts.clear()
        self._in_flight.clear()
        await self._recorder.stop()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def wake(self) -> None:
        self._signal()

    def _signal(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def drain(self) -> None:
        """The scheduler's `dispatch_webhooks` job: POST everything due, and return once nothing is due or
        in flight. Another drain may run meanwhile (a test's, the scheduler's): they share the room."""
        while not self._stopping:
            changed = self._changed
            if await self._claim_and_post():
                continue
            if changed.is_set():
                continue
            if not self._posts:
                return
            # A retry falls due with no signal: while POSTs are in flight, look again each poll interval.
            try:
                async with asyncio.timeout(self.rt.settings.poll_interval_seconds):
                    await changed.wait()
            except TimeoutError:
                pass

    async def _claim_and_post(self) -> bool:
        """Claim what the free room allows and start its POSTs; False when nothing was claimed.

        Once rows are claimed nothing may stop their tasks from starting (a claimed row is only handed
        back when this worker dies): the webhooks are read before the claim, and one that failed to be
        handed back is POSTed anyway, a little over its webhook's room."""
        async with self._claiming:
            room = self._concurrency - len(self._posts)
            if room <= 0 or self._stopping:
                return False
            full = [hook for hook, n in self._in_flight.items() if n >= self._per_webhook]
            hooks = await self._webhooks()
            claimed = await claim_webhook_deliveries(self.rt, room, busy=full)
            if not claimed:
                return False
            fallback_key = (
                await self._service_secret()
            )  # never raises: read after the claim, not per idle poll
            taken: Counter[str] = Counter()
            kept: list[ClaimedDelivery] = []
            extra: list[ClaimedDelivery] = []
            for delivery in claimed:  # in seq order: each webhook keeps its earliest
                hook = delivery.webhook_id
                if self._in_flight[hook] + taken[hook] < self._per_webhook:
                    taken[hook] += 1
                    kept.append(delivery)
                else:
                    extra.append(delivery)
            if extra:
                try:
                    await give_back_webhook_deliveries(self.rt, [d.seq for d in extra])
                except Exception:
                    log.exception("claimed webhook deliveries could not be handed back; POSTing them")
                    kept.extend(extra)
            for delivery in kept:
                self._in_flight[delivery.webhook_id] += 1
                task = asyncio.create_task(
                    self._deliver(delivery, hooks.get(delivery.webhook_id), fallback_key), name="webhook-post"
                )
                self._posts.add(task)
                # Also removed when its coroutine ends (below); this covers one cancelled before it began.
                task.add_done_callback(self._posts.discard)
            return True

    async def _webhooks(self) -> dict[str, Webhook]:
        """Every webhook (a handful of rows): read before a claim, so that nothing after it can fail."""
        async with self.rt.db.read() as session:
            return {h.id: h for h in (await session.execute(select(Webhook))).scalars()}

    async def _service_secret(self) -> str | None:
        """EmailEngine's signing key for webhooks without a secret, read once per claim. None when it cannot
        be read (stored under a key this process lacks, the database gone): only the POSTs that need it fail,
        each a counted attempt with the reason; nothing stops the claimed deliveries' tasks from starting."""
        try:
            return await service_secret(self.rt)
        except Exception:
            log.exception("the service secret could not be read")
            return None

    async def _deliver(
        self, delivery: ClaimedDelivery, hook: Webhook | None, fallback_key: str | None
    ) -> None:
        """POST one delivery and record its result. Recorded as soon as it is known (batched with its
        neighbours): a crash then re-POSTs only what was really in flight."""
        try:
            error = await self._post(delivery, hook, fallback_key)
            await self._recorder.add((delivery, error))
        except Exception:
            log.exception("webhook delivery %s: its result could not be recorded", delivery.id)
        finally:
            self._in_flight[delivery.webhook_id] -= 1
            if self._in_flight[delivery.webhook_id] <= 0:
                del self._in_flight[delivery.webhook_id]
            # Now, not in the done callback: a drain woken below must not see this POST as in flight.
            task = asyncio.current_task()
            if task is not None:
                self._posts.discard(task)
            self._signal()

    async def _post(
        self, delivery: ClaimedDelivery, hook: Webhook | None, fallback_key: str | None
    ) -> str | None:
        """None on success, else the reason it failed."""
        assert self._client is not None
        try:
            if hook is None:  # created after the webhooks were read, or deleted since
                async with self.rt.db.read() as session:
                    hook = await session.get(Webhook, delivery.webhook_id)
                if hook is None:
                    return WEBHOOK_DELETED
            secret = self.rt.secrets.decrypt(hook.secret_enc) if hook.secret_enc else None
        except Exception as exc:
            return reason(exc)
        if secret is None and fallback_key is None:
            return NO_SERVICE_SECRET
        settings = self.rt.settings
        return await post_webhook(
            self._client,
            Outgoing(
                hook.url,
                delivery.body,
                delivery.event,
                delivery.id,
                secret,
                service_secret=fallback_key,
                attempts_made=delivery.attempts_made,
                queued_at=delivery.created_at,
            ),
            now=self.rt.clock.now(),
            seconds=settings.webhook_timeout_seconds,
            max_response_bytes=settings.webhook_max_response_bytes,
        )

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
                    if retry_at is None or error == WEBHOOK_DELETED:
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
            for webhook_id, outcomes in _by_webhook(results).items():
                await session.execute(
                    update(Webhook)
                    .where(col(Webhook.id) == webhook_id)
                    .values(**_webhook_health(outcomes, now))
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


def _by_webhook(results: Sequence[tuple[ClaimedDelivery, str | None]]) -> dict[str, list[str | None]]:
    """Each webhook's outcomes in this batch, in the order they came (a deleted webhook has no row)."""
    out: dict[str, list[str | None]] = {}
    for delivery, error in results:
        if error != WEBHOOK_DELETED:
            out.setdefault(delivery.webhook_id, []).append(error)
    return out


def _webhook_health(outcomes: Sequence[str | None], now: datetime) -> dict[str, object]:
    """A webhook's `last_error` (the last failure's reason, kept after a success), `last_delivered_at`, and
    `failing_since`: the first failed attempt after a success, None once one succeeds."""
    values: dict[str, object] = {}
    errors = [e for e in outcomes if e is not None]
    if errors:
        values["last_error"] = errors[-1]
    if len(errors) < len(outcomes):
        values["last_delivered_at"] = now
    if outcomes[-1] is None:
        values["failing_since"] = None
    elif len(errors) < len(outcomes):
        values["failing_since"] = now  # failed after a success of this very batch
    else:
        values["failing_since"] = func.coalesce(col(Webhook.failing_since), now)
    return values
