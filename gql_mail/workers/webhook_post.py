"""One webhook POST: signed, bounded in time and in what is read back, its outcome a value.

A receiver is a stranger's server, so nothing it does may wedge the worker:

- the whole POST (connect, send, answer) has one deadline, `GQL_MAIL_WEBHOOK_TIMEOUT_SECONDS` (httpx's own
  timeout is per phase: a receiver that trickles a byte now and then would never trip it);
- at most `GQL_MAIL_WEBHOOK_MAX_RESPONSE_BYTES` of the answer is read (it is only a status to us; an
  endless body would otherwise be read until the deadline, and a huge one into memory);
- *any* exception is a failed attempt with a reason, not only httpx's: a URL the client library refuses
  (an invalid IDNA label raises `UnicodeError`), an outbound-policy refusal (`code = "EPOLICY"`), a bug.
  Only cancellation passes through.

`post_webhook` returns None when the receiver answered 2xx, else the reason, `"<code>: <detail>"`.

Besides its own `X-GqlMail-*` headers, each POST carries EmailEngine's (workers/webhooks.js in 2.79.2), so
a receiver written for EmailEngine verifies it unchanged: `X-EE-Wh-Signature` (HMAC-SHA256 of the raw body,
base64url without padding, as Node's `digest('base64url')`), keyed by the webhook's secret or else the
service secret (`services/settings.py`; EmailEngine signs every POST with its `serviceSecret`),
`X-EE-Wh-Id` (the delivery id, the same on every retry), `X-EE-Wh-Event-Id` (the same id written as a
UUID, EmailEngine's form, which receivers use to drop duplicates), `X-EE-Wh-Attempts-Made` (attempts
before this one: "0" on the first POST) and `X-EE-Wh-Queued-Time` (whole seconds since the event was
staged, rounded, with an `s`: "5s"), and a `User-Agent` in EmailEngine's form, `gql-mail/<version>`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import math
import uuid
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version

import httpx

from gql_mail.mail.peer_text import TRUNCATED, peer_text

# A reason is shown in `lastError` and stored on every failed delivery: a line, not a page.
MAX_REASON = 300


def _user_agent() -> str:
    try:
        return f"gql-mail/{version('gql-mail')}"
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "gql-mail"


USER_AGENT = _user_agent()


def signature(secret: str, body: bytes) -> str:
    """`X-GqlMail-Signature`: HMAC-SHA256 of the raw body (kept as it was; it carries no time)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_v2(secret: str, timestamp: int, body: bytes) -> str:
    """`X-GqlMail-Signature-V2`: HMAC-SHA256 over `"<timestamp>." + body`, as Stripe signs, so a receiver
    that checks `X-GqlMail-Timestamp` can refuse a captured POST replayed later."""
    message = f"{timestamp}.".encode() + body
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def ee_signature(key: str, body: bytes) -> str:
    """`X-EE-Wh-Signature`: base64url (no padding) of HMAC-SHA256 of the raw body, EmailEngine's."""
    digest = hmac.new(key.encode(), body, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def queued_time(queued_at: datetime, now: datetime) -> str:
    """`X-EE-Wh-Queued-Time`: seconds since the event was staged, rounded half up (JavaScript's
    `Math.round`), never negative, with an `s`."""
    return f"{max(0, math.floor((now - queued_at).total_seconds() + 0.5))}s"


def event_id(delivery_id: str) -> str:
    """`X-EE-Wh-Event-Id`: the delivery id (a uuid4's hex) written as EmailEngine writes its event ids."""
    try:
        return str(uuid.UUID(hex=delivery_id))
    except ValueError:
        return delivery_id


def reason(exc: BaseException) -> str:
    """What failed, for `lastError`: the error's code (`EPOLICY`, ...) or its type's name, then its text,
    made safe (a receiver's bytes may be quoted in it) and short."""
    code = str(getattr(exc, "code", None) or type(exc).__name__)
    return short(f"{code}: {exc}" if str(exc) else code)


def short(text: str) -> str:
    text = peer_text(text)
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - len(TRUNCATED)] + TRUNCATED


@dataclass(frozen=True)
class Outgoing:
    url: str
    body: bytes
    event: str
    delivery_id: str
    secret: str | None  # the webhook's own, decrypted
    service_secret: str | None = None  # decrypted; signs X-EE-Wh-Signature when the webhook has no secret
    attempts_made: int = 0  # attempts before this one
    queued_at: datetime | None = None  # when the event was staged


def headers_for(out: Outgoing, now: datetime) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-GqlMail-Event": out.event,
        "X-GqlMail-Delivery": out.delivery_id,
        "X-EE-Wh-Id": out.delivery_id,
        "X-EE-Wh-Event-Id": event_id(out.delivery_id),
        "X-EE-Wh-Attempts-Made": str(out.attempts_made),
        "X-EE-Wh-Queued-Time": queued_time(out.queued_at or now, now),
    }
    if key := out.secret or out.service_secret:
        headers["X-EE-Wh-Signature"] = ee_signature(key, out.body)
    if out.secret:
        timestamp = int(now.timestamp())
        headers["X-GqlMail-Signature"] = signature(out.secret, out.body)
        headers["X-GqlMail-Timestamp"] = str(timestamp)
        headers["X-GqlMail-Signature-V2"] = signature_v2(out.secret, timestamp, out.body)
    return headers


async def post_webhook(
    client: httpx.AsyncClient, out: Outgoing, *, now: datetime, seconds: float, max_response_bytes: int
) -> str | None:
    """POST `out`; None on a 2xx answer (read up to `max_response_bytes`) within `seconds` in all,
    else the reason."""
    deadline = asyncio.timeout(seconds)
    try:
        async with deadline:
            request = client.build_request("POST", out.url, content=out.body, headers=headers_for(out, now))
            response = await client.send(request, stream=True)
            try:
                await _read_at_most(response, max_response_bytes)
            finally:
                await response.aclose()
    except TimeoutError as exc:
        return f"ETIMEDOUT: no complete answer within {seconds:g} s" if deadline.expired() else reason(exc)
    except Exception as exc:
        return reason(exc)
    if 200 <= response.status_code < 300:
        return None
    return short(f"HTTP {response.status_code}: {response.reason_phrase or 'not a 2xx answer'}")


async def _read_at_most(response: httpx.Response, limit: int) -> None:
    """Read the answer until it ends or `limit` bytes came (at most one network read past it); the rest is
    never read: the connection is closed instead of being reused."""
    if limit <= 0:
        return
    read = 0
    async for chunk in response.aiter_raw():
        read += len(chunk)
        if read >= limit:
            return
