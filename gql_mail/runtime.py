"""The shared dependencies every service and worker is given (no module-level singletons).

Built once by the app's lifespan (or by a test); time, randomness and the bus live here so tests swap them.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gql_mail.clock import Clock, SystemClock
from gql_mail.config import Settings
from gql_mail.crypto import SecretBox
from gql_mail.db import Database
from gql_mail.events import EventBus
from gql_mail.group_commit import GroupCommit
from gql_mail.metrics import Metrics
from gql_mail.outbound import OutboundPolicy
from gql_mail.retry import RetryPolicy
from gql_mail.single_flight import SingleFlight


def _noop(*_args: object) -> None:
    return None


@dataclass
class Wakers:
    """Hooks that nudge a worker at once instead of waiting for its next poll; the workers set them."""

    delivery: Callable[[], None] = _noop
    webhooks: Callable[[], None] = _noop
    account_check: Callable[[str], None] = _noop
    sent_copy: Callable[[], None] = _noop


@dataclass
class Runtime:
    settings: Settings
    db: Database
    secrets: SecretBox
    # Where webhooks, SMTP, IMAP and OAuth2 may connect to (gql_mail/outbound.py); built from the settings.
    outbound: OutboundPolicy = field(kw_only=True)
    bus: EventBus = field(default_factory=EventBus)
    clock: Clock = field(default_factory=SystemClock)
    rng: random.Random = field(default_factory=random.Random)
    wake: Wakers = field(default_factory=Wakers)
    # New outbox rows of concurrent submissions, written together (services/outbox.py).
    new_messages: GroupCommit[dict[str, Any]] = field(default_factory=GroupCommit)
    # This process's identity as a claimer of work (the `worker` table; see workers/heartbeat.py).
    worker_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # OAuth2 token refreshes in flight in this process, one per account (services/oauth2_tokens.py).
    oauth2_refreshes: SingleFlight[str, str] = field(default_factory=SingleFlight)
    # This process's Prometheus figures, in a registry of its own (gql_mail/metrics.py).
    metrics: Metrics = field(default_factory=Metrics)

    @property
    def delivery_retry(self) -> RetryPolicy:
        return RetryPolicy(self.settings.retry_base_seconds, self.settings.retry_max_seconds)

    @property
    def webhook_retry(self) -> RetryPolicy:
        return RetryPolicy(self.settings.retry_base_seconds, self.settings.retry_max_seconds)
