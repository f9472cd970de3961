"""Settings, read once from `GQL_MAIL_*` environment variables (and an optional `.env`).

Everything a deployment tunes lives here, so services receive plain values and tests build their own
`Settings(...)` without touching the environment.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GQL_MAIL_", env_file=".env", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./gql_mail.db"
    # Derives the key of secrets at rest; a SecretStr so that no repr, log line or traceback shows it.
    secret: SecretStr | None = None
    data_dir: Path = Path(".gql_mail")
    service_url: str = "http://127.0.0.1:3000"

    delivery_attempts: int = Field(10, ge=1, le=100)
    retry_base_seconds: float = Field(5.0, gt=0)
    retry_max_seconds: float = Field(3600.0, gt=0)
    poll_interval_seconds: float = Field(1.0, gt=0)
    # A worker whose heartbeat is older than this is dead and its claims go back to the queue (crash
    # recovery in about this long); live workers beat every lease/5 and keep their claims however long.
    lease_seconds: float = Field(15.0, gt=0)
    # A message that comes back from a dead worker more often than this fails instead of being sent again.
    max_stalled: int = Field(3, ge=0)
    # A graceful stop waits this long for SMTP transactions in progress; what has not started is given back.
    shutdown_grace_seconds: float = Field(10.0, ge=0)
    account_check_interval_seconds: float = Field(300.0, gt=0)
    # Consecutive failed periodic checks (a connection, timeout or TLS error; never a refused login) that
    # move a CONNECTED account to CONNECT_ERROR: one network blip must not pause its queue.
    account_check_failures_before_error: int = Field(3, ge=1)

    # Finished messages (with their attempts), finished webhook deliveries and relayed event payloads are
    # deleted this long after they finished, by a job that runs every `prune_interval_seconds`.
    retention_days: float = Field(30.0, gt=0)
    prune_interval_seconds: float = Field(3600.0, gt=0)

    webhook_attempts: int = Field(10, ge=1, le=100)
    # The whole POST (connect, send, answer) must end within this; a receiver that never answers holds only
    # its own webhook's deliveries.
    webhook_timeout_seconds: float = Field(10.0, gt=0)
    # At most this much of a receiver's answer is read (it is only a status to us).
    webhook_max_response_bytes: int = Field(64 * 1024, ge=0)
    # POSTs in flight at once, over all webhooks, and per webhook.
    webhook_concurrency: int = Field(16, ge=1)
    webhook_concurrency_per_webhook: int = Field(4, ge=1)

    # Outbound connections (webhooks, SMTP, IMAP, OAuth2) are refused when the *resolved* address is in one
    # of these networks (checked at connect time, so DNS rebinding cannot bypass it): link-local and cloud
    # metadata by default. `outbound_allow`, when set, is the only networks allowed (deny still wins).
    outbound_deny: list[str] = Field(
        default_factory=lambda: ["169.254.0.0/16", "fe80::/10", "0.0.0.0/8", "fd00:ec2::254/128"]
    )
    outbound_allow: list[str] | None = None
    # Per account `smtp.tls.requireTLS` / `imap.tls.requireTLS` override this default: with it, a server
    # that offers no STARTTLS, or a failed upgrade, is ETLS and no credential is sent.
    require_tls: bool = False

    # OAuth2 mailboxes: an access token is refreshed when it expires within this margin; one token request
    # (connect, send, answer) must end within the timeout, and at most this much of its answer is read.
    oauth2_refresh_margin_seconds: float = Field(300.0, ge=0)
    oauth2_timeout_seconds: float = Field(10.0, gt=0)
    oauth2_max_response_bytes: int = Field(64 * 1024, ge=1024)

    smtp_timeout_seconds: float = Field(30.0, gt=0)
    imap_timeout_seconds: float = Field(30.0, gt=0)
    max_concurrent_deliveries: int = Field(32, ge=1)
    max_concurrent_per_account: int = Field(4, ge=1)
    delivery_batch_size: int = Field(100, ge=1)
    # Tries of a sent message's copy to the Sent folder (backoff as for delivery). Spent, the copy is given up
    # (messageCopyError) and the kept body dropped; 10 bridge an IMAP outage of about an hour by default.
    sent_copy_attempts: int = Field(10, ge=1, le=100)

    max_message_bytes: int = Field(25 * 1024 * 1024, ge=1024)
    max_request_bytes: int = Field(40 * 1024 * 1024, ge=1024)
    max_recipients: int = Field(100, ge=1)
    max_attachments: int = Field(50, ge=0)
    idempotency_window_seconds: float = Field(24 * 3600, gt=0)
    send_at_tolerance_seconds: float = Field(60.0, ge=0)
    max_query_depth: int = Field(12, ge=2)
    max_subscriptions_per_connection: int = Field(20, ge=1)
    max_ws_connections_per_token: int = Field(1000, ge=1)
    # Websocket connections open at once in this process, over all tokens.
    max_ws_connections: int = Field(10000, ge=1)
    # Events queued for one websocket connection (over its subscriptions) before it is closed as too slow.
    max_ws_queued_events: int = Field(10000, ge=1)
    # Events waiting in this process's PostgreSQL relay, in each direction; past it the subscribers that
    # would miss the events dropped are ended as too slow (never left to miss them silently).
    max_relay_queue: int = Field(100000, ge=1000)
    # Request bodies above this size count as large: at most `max_large_bodies` are read at once.
    large_body_bytes: int = Field(1024 * 1024, ge=1024)
    max_large_bodies: int = Field(16, ge=1)
    # A request body must keep arriving (no pause longer than the first) and be complete within the second:
    # a client trickling bytes holds a connection and, if large, one of the slots above.
    body_idle_seconds: float = Field(30.0, gt=0)
    body_read_seconds: float = Field(300.0, gt=0)
    # Nesting of JSON in a request body (objects and arrays), checked before it is parsed.
    max_json_depth: int = Field(64, ge=4)
    # Extra headers of one message: how many, and their names and values together in bytes.
    max_headers: int = Field(100, ge=0)
    max_headers_bytes: int = Field(64 * 1024, ge=1024)
    max_aliases: int = Field(50, ge=1)
    max_tokens: int = Field(5000, ge=100)
    # How often an open subscription re-checks that its token was not revoked in another process
    # (revocations in this process end subscriptions at once).
    token_recheck_seconds: float = Field(5.0, gt=0)

    host: str = "127.0.0.1"
    port: int = Field(3000, ge=1, le=65535)
    log_level: str = "info"
    # "json": one JSON object per line (gql_mail/log_format.py), for log shippers; "text" for people.
    log_format: Literal["text", "json"] = "text"
    # uvicorn's line per HTTP request: off by default (a busy API writes more of it than of anything else,
    # and /metrics counts the requests); `gql-mail serve --access-log` turns it on.
    access_log: bool = False
    # Networks (CIDRs, as a JSON list) whose clients may scrape /metrics without a token.
    metrics_allow: list[str] = Field(default_factory=list)
    # An idle keep-alive connection is closed after this. Longer than the idle expiry of the clients that
    # reuse connections (httpx and most pools: 5 s; load balancers: 60 s), so the client always closes
    # first: with equal timers, a request sent just as the server closes is reset (ReadError, or a 502 at
    # the proxy) instead of answered.
    http_keep_alive_seconds: int = Field(75, ge=1)

    @field_validator("metrics_allow")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)  # ValueError: the setting is refused at start
        return value

    def secret_value(self) -> str | None:
        """`GQL_MAIL_SECRET` itself (None: not configured); the one place it is unwrapped."""
        return self.secret.get_secret_value() if self.secret is not None else None
