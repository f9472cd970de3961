"""Prometheus metrics of one gql-mail process, in a registry of its own.

Two kinds of figures, and where each comes from matters with several nodes on one PostgreSQL database:

- **Process figures** (counters, histograms, live gauges) count what *this* process did or holds: messages
  it delivered, its SMTP connections, its websockets, the HTTP requests it answered. Each node exports its
  own; Prometheus sums them (`sum without (instance)`).
- **Database figures** (queue depth, webhook backlog and its age, account states, live workers) are read
  from the shared tables at scrape time (`QueueSnapshot`, built by `services/stats.py`), so every node
  exports the same values; aggregate them with `max`, not `sum`.

The registry is per `Metrics` (one per runtime), not prometheus-client's global one: tests run many
runtimes in one process, and a global registry would refuse their second set of metrics. No metric has an
account label: an account id is a customer's name and the series would grow with the customers.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

__all__ = ["CONTENT_TYPE", "Metrics", "QueueSnapshot", "smtp_class"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Submit -> accepted: seconds for a healthy queue, hours when a server defers and retries pile up.
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
# One MAIL FROM .. DATA exchange on an open connection: milliseconds on loopback, seconds across the world.
_SMTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# Operation names come from clients: only names GraphQL could declare, and at most this many distinct
# ones per process (later ones count as "other"), so no client can grow the series without bound.
MAX_OPERATION_NAMES = 200
_OPERATION_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]{0,99}")


def smtp_class(code: int | None) -> str:
    """The reply class of an SMTP code ("2xx", "4xx", "5xx"), or "none" when no server answered."""
    if code is None or not 200 <= code < 600:
        return "none"
    return f"{code // 100}xx"


@dataclass(frozen=True)
class QueueSnapshot:
    """What the shared tables hold now (see the module docstring); ages in seconds, None: nothing waits."""

    messages: Mapping[str, int]  # by status; "queued" is due now, "scheduled" queued for later
    oldest_due_seconds: float | None
    webhook_deliveries: Mapping[str, int]  # by status; "pending" is due now, "delayed" waits for a retry
    webhook_oldest_seconds: Mapping[str, float]  # by status ("pending", "failed"): the oldest one's age
    accounts: Mapping[str, int]  # by AccountState
    workers: int  # processes whose heartbeat is within the lease


@dataclass(eq=False)  # a registry keeps its collectors in a dict: hashed by identity
class _SnapshotCollector:
    """Yields the snapshot the scrape just read (set right before `generate_latest`, in the same step of
    the event loop, so concurrent scrapes cannot mix theirs)."""

    snapshot: QueueSnapshot | None = None

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterable[Metric]:
        s = self.snapshot
        if s is None:
            return
        yield _by(
            "gql_mail_queue_messages",
            "Messages in the outbox by status, from the database (queued = due now, scheduled = later)",
            "status",
            s.messages,
        )
        yield GaugeMetricFamily(
            "gql_mail_queue_oldest_due_seconds",
            "How long the oldest due message has waited to be sent (0: none waits), from the database",
            value=s.oldest_due_seconds or 0.0,
        )
        yield _by(
            "gql_mail_webhook_deliveries",
            "Webhook deliveries by status, from the database (pending = due now, delayed = awaiting retry)",
            "status",
            s.webhook_deliveries,
        )
        yield _by(
            "gql_mail_webhook_oldest_seconds",
            "Age of the oldest webhook delivery not delivered, by status (pending includes delayed)",
            "status",
            s.webhook_oldest_seconds,
        )
        yield _by("gql_mail_accounts", "Accounts by state, from the database", "state", s.accounts)
        yield GaugeMetricFamily(
            "gql_mail_workers_alive", "gql-mail processes with a live heartbeat (all nodes)", value=s.workers
        )


def _by(name: str, documentation: str, label: str, values: Mapping[str, float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


@dataclass(eq=False)
class Metrics:
    """This process's metrics. Services and workers call the `record_*` methods; `render` is the scrape."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    _operations: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        r = self.registry
        self.messages = Counter(
            "gql_mail_messages",
            "Delivery attempts' outcomes in this process: sent, retried (a retry is scheduled) or failed "
            "(given up), by error code and the SMTP reply class",
            ["result", "error_code", "smtp_class"],
            registry=r,
        )
        self.delivery_latency = Histogram(
            "gql_mail_delivery_latency_seconds",
            "From submission (or its sendAt, when later) to the server accepting the message",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.smtp_transaction = Histogram(
            "gql_mail_smtp_transaction_seconds",
            "One SMTP transaction (MAIL FROM to the reply to DATA) on an open connection",
            buckets=_SMTP_BUCKETS,
            registry=r,
        )
        self.smtp_connections = Gauge(
            "gql_mail_smtp_connections", "SMTP connections the delivery worker holds open now", registry=r
        )
        self.websockets = Gauge(
            "gql_mail_websocket_connections", "Websocket connections open now", registry=r
        )
        self.subscribers = Gauge(
            "gql_mail_event_subscribers", "Event subscriptions (GraphQL) live in this process", registry=r
        )
        self.http_requests = Counter(
            "gql_mail_http_requests",
            "HTTP requests answered, by route (REST path template, /graphql, ...), GraphQL operation name, "
            "status code and outcome (ok, a GraphQL error code, or error)",
            ["route", "operation", "status", "outcome"],
            registry=r,
        )
        self.oauth2_refreshes = Counter(
            "gql_mail_oauth2_token_refresh",
            "OAuth2 token requests (refresh and consent code) by provider and result: ok, refused (the "
            "provider refused the grant: the account needs new tokens) or failed (retried later)",
            ["provider", "result"],
            registry=r,
        )
        self._database = _SnapshotCollector()
        r.register(self._database)

    def record_sent(self, latency_seconds: float | None) -> None:
        self.messages.labels("sent", "none", "2xx").inc()
        if latency_seconds is not None:
            self.delivery_latency.observe(max(latency_seconds, 0.0))

    def record_failure(self, *, retried: bool, error_code: str, smtp_code: int | None) -> None:
        result = "retried" if retried else "failed"
        self.messages.labels(result, error_code, smtp_class(smtp_code)).inc()

    def operation_label(self, name: object) -> str:
        """The label for a GraphQL operation name (see MAX_OPERATION_NAMES)."""
        if not isinstance(name, str) or not name:
            return "anonymous"
        if name in self._operations:
            return name
        if _OPERATION_NAME.fullmatch(name) is None:
            return "other"
        with self._lock:
            if len(self._operations) >= MAX_OPERATION_NAMES:
                return "other"
            self._operations.add(name)
        return name

    def render(self, snapshot: QueueSnapshot | None) -> bytes:
        """The exposition text: this process's figures and the database's (`snapshot`)."""
        with self._lock:
            self._database.snapshot = snapshot
            try:
                return generate_latest(self.registry)
            finally:
                self._database.snapshot = None
