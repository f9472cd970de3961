"""The access token of an OAuth2 account, valid when it is used: refreshed before it expires, and once more
when a server refuses it.

One refresh per account at a time, everywhere:
- in this process, concurrent callers share one flight (`Runtime.oauth2_refreshes`);
- across processes sharing the database, a refresh is *claimed* first: a compare-and-set on the account's
  `oauth2_token_version` that sets `oauth2_refreshing_until`. A node that loses the claim waits for the
  winner's new token (reading the row) instead of asking the provider too. Each database step is a short
  transaction of its own; the token request runs between them, never inside one.

Failures (`OAuth2TokenError`, a `MailError` with code EOAUTH2, so account checks and delivery classify it as
they classify a refused login or a dropped connection):
- the provider refused the grant (invalid_grant...): `auth_failure`, permanent; the refusal is stored and no
  refresh is tried again until new tokens are given (updateAccount) or the account is reconnected;
- 5xx, timeouts: transient; the next try waits a backoff (`oauth2_retry_at`, shared by all nodes).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from sqlalchemy import CursorResult, or_, update

from gql_mail.clock import utc
from gql_mail.mail.errors import MailError
from gql_mail.models import Account, OAuth2App, table
from gql_mail.oauth2_client import Limits, OAuth2Failure, refresh_grant
from gql_mail.runtime import Runtime
from gql_mail.services.oauth2_apps import token_client

log = logging.getLogger(__name__)

CODE = "EOAUTH2"
_ACCOUNT = table(Account)
# How often a node that lost the claim looks for the winner's token, and how many rounds it tries.
_WAIT_STEP_SECONDS = 0.05
_CLAIM_ROUNDS = 3

T = TypeVar("T")


class OAuth2TokenError(MailError):
    """No valid access token. `retry_at`: a transient failure's earliest next try."""

    def __init__(
        self, message: str, *, permanent: bool, response: str | None = None, retry_at: datetime | None = None
    ) -> None:
        super().__init__(message, code=CODE, permanent=permanent, auth_failure=permanent, response=response)
        self.retry_at = retry_at


@dataclass(frozen=True)
class _Stored:
    version: int
    access_token: str | None
    refresh_token: str | None
    expires: datetime | None
    refreshing_until: datetime | None
    retry_at: datetime | None
    failures: int
    error: str | None
    app: OAuth2App | None


async def _load(rt: Runtime, account_id: str) -> _Stored:
    async with rt.db.read() as session:
        row = await session.get(Account, account_id)
        if row is None or row.oauth2_app_id is None:
            raise OAuth2TokenError(f"account {account_id} has no OAuth2 login", permanent=True)
        app = await session.get(OAuth2App, row.oauth2_app_id)
    return _Stored(
        version=row.oauth2_token_version,
        access_token=rt.secrets.maybe_decrypt(row.oauth2_access_token_enc),
        refresh_token=rt.secrets.maybe_decrypt(row.oauth2_refresh_token_enc),
        expires=utc(row.oauth2_expires) if row.oauth2_expires else None,
        refreshing_until=utc(row.oauth2_refreshing_until) if row.oauth2_refreshing_until else None,
        retry_at=utc(row.oauth2_retry_at) if row.oauth2_retry_at else None,
        failures=row.oauth2_failures,
        error=row.oauth2_error,
        app=app,
    )


def limits(rt: Runtime) -> Limits:
    """The deployment's bounds of a token request."""
    return Limits(rt.outbound, rt.settings.oauth2_timeout_seconds, rt.settings.oauth2_max_response_bytes)


def _usable(rt: Runtime, stored: _Stored, refused: str | None) -> str | None:
    """The stored access token if it is neither the one a server just refused nor about to expire."""
    token = stored.access_token
    if token is None or token == refused:
        return None
    if stored.expires is None:  # given without `expires`: used until a server refuses it
        return token
    margin = timedelta(seconds=rt.settings.oauth2_refresh_margin_seconds)
    return token if stored.expires - margin > rt.clock.now() else None


async def access_token(rt: Runtime, account_id: str, *, refused: str | None = None) -> str:
    """A valid access token for the account's XOAUTH2 logins. `refused`: the token a server just refused;
    a new one is fetched unless the stored one is already another. Raises `OAuth2TokenError`."""
    stored = await _load(rt, account_id)
    token = _usable(rt, stored, refused)
    if token is not None:
        return token
    return await rt.oauth2_refreshes.run(account_id, lambda: _refresh(rt, account_id, refused))


async def with_token(rt: Runtime, account_id: str, attempt: Callable[[str], Awaitable[T]]) -> T:
    """`attempt(token)`; when the server refuses the login (an XOAUTH2 authentication failure), once more
    with a refreshed token. A second refusal is the server's verdict and is raised."""
    token = await access_token(rt, account_id)
    try:
        return await attempt(token)
    except MailError as exc:
        if not exc.auth_failure or isinstance(exc, OAuth2TokenError):
            raise
        log.info("account %s: the server refused its access token; refreshing it once", account_id)
    return await attempt(await access_token(rt, account_id, refused=token))


async def _refresh(rt: Runtime, account_id: str, refused: str | None) -> str:
    for _ in range(_CLAIM_ROUNDS):
        stored = await _load(rt, account_id)
        token = _usable(rt, stored, refused)
        if token is not None:
            return token  # another node refreshed it meanwhile
        _raise_if_blocked(rt, stored)
        if await _claim(rt, account_id, stored.version):
            return await _refresh_claimed(rt, account_id, stored)
        await _wait_for_other(rt, account_id, stored.version)
    raise OAuth2TokenError("the access token is being refreshed elsewhere; try again", permanent=False)


def _raise_if_blocked(rt: Runtime, stored: _Stored) -> None:
    if stored.error is not None:
        raise OAuth2TokenError(stored.error, permanent=True)
    if stored.app is not None and not stored.app.enabled:
        raise OAuth2TokenError(f"the OAuth2 app {stored.app.id} is disabled", permanent=True)
    if stored.refresh_token is None or stored.app is None:
        raise OAuth2TokenError(
            "the access token expired or was refused, and there is no refresh token", permanent=True
        )
    if stored.retry_at is not None and stored.retry_at > rt.clock.now():
        raise OAuth2TokenError(
            "the last token refresh failed; waiting before the next",
            permanent=False,
            retry_at=stored.retry_at,
        )


def _rows(result: Any) -> int:
    return int(cast(CursorResult[Any], result).rowcount or 0)


async def _claim(rt: Runtime, account_id: str, version: int) -> bool:
    """Take the refresh for this version of the tokens, unless someone holds an unexpired claim."""
    now = rt.clock.now()
    deadline = now + timedelta(seconds=rt.settings.oauth2_timeout_seconds * 2)
    statement = (
        update(_ACCOUNT)
        .where(
            _ACCOUNT.c.id == account_id,
            _ACCOUNT.c.oauth2_token_version == version,
            or_(_ACCOUNT.c.oauth2_refreshing_until.is_(None), _ACCOUNT.c.oauth2_refreshing_until <= now),
        )
        .values(oauth2_refreshing_until=deadline)
    )
    async with rt.db.write() as session:
        return _rows(await session.execute(statement)) == 1


async def _wait_for_other(rt: Runtime, account_id: str, version: int) -> None:
    """Wait (bounded, in real time: the other node's request takes real time) until the claim's holder
    stored its outcome: a new version, or the claim released."""
    deadline = time.monotonic() + rt.settings.oauth2_timeout_seconds + 1
    while time.monotonic() < deadline:
        await asyncio.sleep(_WAIT_STEP_SECONDS)
        stored = await _load(rt, account_id)
        if stored.version != version or stored.refreshing_until is None:
            return


async def _refresh_claimed(rt: Runtime, account_id: str, stored: _Stored) -> str:
    assert stored.app is not None and stored.refresh_token is not None
    try:
        grant = await refresh_grant(
            token_client(rt, stored.app), stored.refresh_token, limits=limits(rt), now=rt.clock.now()
        )
    except OAuth2Failure as failure:
        result = "refused" if failure.permanent else "failed"
        rt.metrics.oauth2_refreshes.labels(stored.app.provider, result).inc()
        raise await _record_failure(rt, account_id, stored, failure) from None
    except BaseException:
        await _release(rt, account_id, stored.version)
        raise
    rt.metrics.oauth2_refreshes.labels(stored.app.provider, "ok").inc()
    values: dict[str, Any] = {
        "oauth2_access_token_enc": rt.secrets.maybe_encrypt(grant.access_token),
        "oauth2_expires": grant.expires,
        "oauth2_token_version": stored.version + 1,
        "oauth2_refreshing_until": None,
        "oauth2_failures": 0,
        "oauth2_retry_at": None,
        "oauth2_error": None,
    }
    if grant.refresh_token is not None:  # rotated: the old one may stop working at once
        values["oauth2_refresh_token_enc"] = rt.secrets.maybe_encrypt(grant.refresh_token)
    if not await _store(rt, account_id, stored.version, values):
        # New tokens were given (updateAccount) while we asked: theirs win, refreshed when they need it.
        # (Not through `access_token`: this runs inside the account's flight, which it would wait for.)
        given = _usable(rt, await _load(rt, account_id), None)
        return given if given is not None else await _refresh(rt, account_id, None)
    log.info("account %s: access token refreshed", account_id)
    return grant.access_token


async def _store(rt: Runtime, account_id: str, version: int, values: dict[str, Any]) -> bool:
    statement = (
        update(_ACCOUNT)
        .where(_ACCOUNT.c.id == account_id, _ACCOUNT.c.oauth2_token_version == version)
        .values(**values)
    )
    async with rt.db.write() as session:
        return _rows(await session.execute(statement)) == 1


async def _release(rt: Runtime, account_id: str, version: int) -> None:
    try:
        await _store(rt, account_id, version, {"oauth2_refreshing_until": None})
    except Exception:  # the claim expires by itself
        log.exception("account %s: releasing the token refresh claim failed", account_id)


async def _record_failure(
    rt: Runtime, account_id: str, stored: _Stored, failure: OAuth2Failure
) -> OAuth2TokenError:
    if failure.permanent:
        log.warning("account %s: %s", account_id, failure.message)
        await _store(
            rt,
            account_id,
            stored.version,
            {"oauth2_refreshing_until": None, "oauth2_error": failure.message, "oauth2_failures": 0},
        )
        return OAuth2TokenError(failure.message, permanent=True, response=failure.description)
    failures = stored.failures + 1
    retry_at = rt.clock.now() + timedelta(seconds=rt.delivery_retry.delay(failures, rt.rng))
    log.warning("account %s: %s (failure %d, next try %s)", account_id, failure.message, failures, retry_at)
    await _store(
        rt,
        account_id,
        stored.version,
        {"oauth2_refreshing_until": None, "oauth2_failures": failures, "oauth2_retry_at": retry_at},
    )
    return OAuth2TokenError(failure.message, permanent=False, retry_at=retry_at)
