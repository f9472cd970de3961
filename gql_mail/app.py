"""The ASGI application. The lifespan starts things in dependency order (database, bus, workers,
scheduler) and stops them in reverse."""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, Route, WebSocketRoute

from gql_mail import health
from gql_mail.clock import Clock, SystemClock
from gql_mail.config import Settings
from gql_mail.crypto import SecretBox, load_or_create_secret
from gql_mail.db import Database
from gql_mail.graphiql import graphiql_html, graphiql_static_app
from gql_mail.graphql.endpoint import GraphQLEndpoint
from gql_mail.graphql.input_bounds import input_bound
from gql_mail.graphql.schema import build_schema
from gql_mail.graphql.server_send import KeepServerSend
from gql_mail.graphql.view import GqlMailView
from gql_mail.http_edge.gate import RequestGate
from gql_mail.http_edge.request_metrics import RequestMetrics
from gql_mail.log_redaction import install as install_log_redaction
from gql_mail.log_redaction import register_secret
from gql_mail.metrics_endpoint import metrics_endpoint
from gql_mail.migrations import upgrade
from gql_mail.outbound import OutboundPolicy, Resolver
from gql_mail.pg_events import EventRelay, relay_for
from gql_mail.rest.consent import oauth_callback
from gql_mail.rest.routes import rest_app
from gql_mail.runtime import Runtime, Wakers
from gql_mail.services.connection_quota import ConnectionQuota
from gql_mail.services.delivery import recover_stalled
from gql_mail.services.retention import prune
from gql_mail.workers.account_check import AccountChecker
from gql_mail.workers.delivery import DeliveryWorker
from gql_mail.workers.heartbeat import Heartbeat, beat_interval
from gql_mail.workers.scheduler import Scheduler
from gql_mail.workers.sent_copy import SentCopier
from gql_mail.workers.webhook_dispatch import WebhookDispatcher

log = logging.getLogger(__name__)


def build_runtime(
    settings: Settings,
    *,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    resolver: Resolver | None = None,
) -> Runtime:
    secret, generated = load_or_create_secret(settings.secret_value(), settings.data_dir)
    register_secret(secret)
    if generated:
        log.warning(
            "GQL_MAIL_SECRET is not set: generated one into %s; back it up, secrets at rest need it",
            settings.data_dir / "secret.key",
        )
    return Runtime(
        settings=settings,
        db=Database(settings.database_url),
        secrets=SecretBox(secret),
        outbound=OutboundPolicy.from_settings(settings, resolver),
        clock=clock or SystemClock(),
        rng=rng or random.Random(),
    )


class Workers:
    """Everything that runs in the background, wired to the runtime's wake-up hooks (and, on PostgreSQL,
    through the relay to the other processes' workers).

    `background=False` is an API-only node (`gql-mail serve --no-workers`): no delivery, webhook, Sent-copy
    or periodic jobs and no heartbeat (it claims nothing), only the account checks its own requests ask
    for (a registration is verified where it was made); its wake-ups reach the worker nodes through the
    relay on PostgreSQL, and worker nodes poll anyway."""

    def __init__(self, rt: Runtime, relay: EventRelay | None = None, *, background: bool = True) -> None:
        self.rt = rt
        self.relay = relay
        self.background = background
        self.started = False
        self.scheduler = Scheduler()
        self.heartbeat = Heartbeat(rt)
        self.delivery = DeliveryWorker(rt)
        self.webhooks = WebhookDispatcher(rt)
        self.accounts = AccountChecker(rt)
        self.sent_copy = SentCopier(rt)

    def _wake_delivery(self) -> None:
        self.delivery.wake()
        self.scheduler.run_now("poll_due_messages")

    def _wake_webhooks(self) -> None:
        self.webhooks.wake()
        self.scheduler.run_now("dispatch_webhooks")

    async def _recover_stalled(self) -> None:
        await recover_stalled(self.rt)

    def _wake_sent_copy(self) -> None:
        self.sent_copy.wake()
        self.scheduler.run_now("copy_to_sent")

    async def prune_finished(self) -> None:
        """The scheduler's `prune_finished` job. An error is logged and the next run tries again: what
        a failed run left behind is still old enough then."""
        try:
            counts = await prune(self.rt)
        except Exception:
            log.exception("pruning finished rows failed")
            return
        if counts.total:
            log.info(
                "pruned %d finished messages, %d webhook deliveries, %d event payloads (retention %g days)",
                counts.messages,
                counts.webhook_deliveries,
                counts.event_payloads,
                self.rt.settings.retention_days,
            )

    def problem(self) -> str | None:
        """Why the workers are not doing their job now (for /health/ready), or None."""
        if not self.started:
            return "workers are not running"
        if not self.background:
            return None
        if not self.scheduler.running:
            return "the scheduler is not running"
        if not self.heartbeat.running:
            return "the heartbeat has stopped"
        return None

    async def start(self) -> None:
        s = self.rt.settings
        if not self.background:
            wake = Wakers(account_check=self.accounts.request)
            self.rt.wake = self.relay.attach(wake) if self.relay is not None else wake
            self.started = True
            return
        await self.heartbeat.start()
        wake = Wakers(
            delivery=self._wake_delivery,
            webhooks=self._wake_webhooks,
            account_check=self.accounts.request,
            sent_copy=self._wake_sent_copy,
        )
        self.rt.wake = self.relay.attach(wake) if self.relay is not None else wake
        self.delivery.start()
        self.webhooks.start()
        self.scheduler.every("poll_due_messages", s.poll_interval_seconds, self.delivery.drain)
        self.scheduler.every("dispatch_webhooks", s.poll_interval_seconds, self.webhooks.drain)
        # As often as workers beat: a dead worker's claims come back within a lease and a beat of its death.
        self.scheduler.every("requeue_stalled", beat_interval(self.rt), self._recover_stalled)
        self.scheduler.every("copy_to_sent", s.poll_interval_seconds, self.sent_copy.drain)
        self.scheduler.every("check_accounts", s.account_check_interval_seconds, self.accounts.check_all)
        self.scheduler.every("prune_finished", s.prune_interval_seconds, self.prune_finished)
        self.scheduler.start()
        self.started = True

    async def stop(self) -> None:
        self.started = False
        self.rt.wake = Wakers()
        if self.relay is not None:
            self.relay.detach()
        if not self.background:
            await self.accounts.stop()
            return
        # Before the scheduler: a drain it is running must end its claim and give the rows back, not be
        # cancelled with them in hand.
        await self.delivery.stop()
        self.scheduler.shutdown()
        await self.accounts.stop()
        await self.sent_copy.stop()
        await self.webhooks.stop()
        # Last: with the row gone, anything still claimed (a send cut off by the grace) is stalled at once.
        await self.heartbeat.stop()


@asynccontextmanager
async def running(rt: Runtime, *, background: bool = True) -> AsyncIterator[Workers]:
    """The process's machinery around the API (or instead of it, `gql-mail serve --workers-only`): the
    database migrated, the relay on PostgreSQL, the workers; stopped in reverse order."""
    await upgrade(rt.settings.database_url)
    relay = relay_for(rt)
    if relay is not None:
        await relay.start()
    workers = Workers(rt, relay, background=background)
    await workers.start()
    try:
        yield workers
    finally:
        await workers.stop()
        if relay is not None:
            await relay.stop()
        rt.bus.close()
        await rt.db.dispose()


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    resolver: Resolver | None = None,
    workers: bool = True,
) -> Starlette:
    """The application; `resolver` replaces DNS for outbound connections (tests point names anywhere).
    `workers=False`: an API-only node (see `Workers`)."""
    install_log_redaction()
    settings = settings or Settings()
    rt = build_runtime(settings, clock=clock, rng=rng, resolver=resolver)
    quota = ConnectionQuota.from_settings(settings)  # one per process, whichever door a connection uses
    view = GqlMailView(
        rt,
        quota,
        ide_html=graphiql_html("/graphiql-static"),
        schema=build_schema(
            settings.max_query_depth, settings.max_aliases, settings.max_tokens, input_bound(settings)
        ),
        max_subscriptions_per_connection=settings.max_subscriptions_per_connection,
    )
    gate = RequestGate(rt)  # one per process: both front doors share its large-body slots
    endpoint = GraphQLEndpoint(view, gate)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with running(rt, background=workers) as started:
            app.state.relay = started.relay
            app.state.workers = started
            yield

    app = Starlette(
        routes=[
            # First: the router tries the routes in order, and nearly every request is for /graphql.
            Route("/graphql", endpoint, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", endpoint),
            Route("/health", health.health),
            Route("/health/live", health.live),
            Route("/health/ready", health.ready),
            Route("/metrics", metrics_endpoint(rt), methods=["GET"]),
            Mount("/graphiql-static", graphiql_static_app()),
            # EmailEngine's REST API; large bodies share /graphql's bound.
            Mount("/v1", rest_app(rt, gate)),
            # Where an OAuth2 provider sends the user back after the consent (EmailEngine's path).
            Route("/oauth", oauth_callback, methods=["GET"]),
        ],
        lifespan=lifespan,
        middleware=[Middleware(KeepServerSend), Middleware(RequestMetrics, metrics=rt.metrics)],
    )
    app.state.runtime = rt
    app.state.workers = None  # set by the lifespan; /health/ready is not ready before
    rt.metrics.websockets.set_function(lambda: endpoint.open_websockets)
    rt.metrics.subscribers.set_function(lambda: rt.bus.subscriber_count)
    app.state.graphql = endpoint  # its websocket count, for operators' and tests' eyes
    app.state.gate = gate  # its body reader (`bodies`), likewise; REST's front door reads bodies through it
    return app
