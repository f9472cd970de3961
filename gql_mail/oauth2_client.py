"""One token request to an OAuth2 provider (the refresh_token or authorization_code grant), through
Authlib's httpx client.

Every connection goes through the outbound policy (`PolicyTransport`), the whole request is bounded in time
and the answer in size (a token endpoint is a peer like a webhook receiver: it may trickle, or answer a
gigabyte). The outcome is a `TokenGrant` or an `OAuth2Failure`, classified here and only here:

```
Exception
 └── OAuth2Failure            .permanent .status .error .description
       permanent=True     the provider refused the grant (a 4xx, e.g. invalid_grant, invalid_client): no
                          retry can mend it; new tokens (or a new consent) must be given
       permanent=False    5xx, timeout, connection refused or reset, an unreadable answer: try again later
```
Like EmailEngine, the refresh posts `grant_type, refresh_token, client_id, client_secret` as a form and no
scope (the grant keeps the scopes it was given).
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from authlib.deprecate import AuthlibDeprecationWarning

with warnings.catch_warnings():
    # Authlib >= 1.9.9 prefers the `httpx2` package and warns when it falls back to httpx. gql-mail means
    # httpx: its outbound policy is an httpx transport (outbound_httpx.py), which an httpx2 client can't use.
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError

if not issubclass(AsyncOAuth2Client, httpx.AsyncClient):  # httpx2 installed: our transport would not fit
    raise ImportError(
        "Authlib's AsyncOAuth2Client is not an httpx.AsyncClient (is the httpx2 package installed?); "
        "gql_mail/oauth2_client.py needs the httpx one to send token requests through the outbound policy"
    )

from gql_mail.outbound import OutboundPolicy
from gql_mail.outbound_httpx import PolicyTransport

__all__ = ["Limits", "OAuth2Failure", "TokenClient", "TokenGrant", "exchange_code", "refresh_grant"]


@dataclass(frozen=True)
class TokenClient:
    """What a token request needs of the app (decrypted); `repr` never shows the secret."""

    token_url: str
    client_id: str
    client_secret: str | None = field(repr=False)
    provider: str


@dataclass(frozen=True)
class TokenGrant:
    access_token: str = field(repr=False)
    expires: datetime | None
    # A rotated refresh token, when the provider sent one (Microsoft does; Google rarely).
    refresh_token: str | None = field(default=None, repr=False)
    scope: str | None = None


class OAuth2Failure(Exception):
    """A failed token request; its text names the provider's error, never a token or the secret."""

    def __init__(
        self,
        message: str,
        *,
        permanent: bool,
        status: int | None = None,
        error: str | None = None,
        description: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.status = status
        self.error = error
        self.description = description


class _Bounded(httpx.AsyncBaseTransport):
    """Reads at most `limit` bytes of an answer; a longer one is a transient failure (`_TooLarge`)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, limit: int) -> None:
        self._inner = inner
        self._limit = limit

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        body = bytearray()
        try:
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) > self._limit:
                    raise _TooLarge(f"the token endpoint answered more than {self._limit} bytes")
        finally:
            await response.aclose()
        return httpx.Response(
            response.status_code, headers=response.headers, content=bytes(body), request=request
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


class _TooLarge(Exception):
    pass


def _errors_without_json(response: httpx.Response) -> httpx.Response:
    """A failed answer that is no JSON object (a gateway's page) is an HTTP error, classified by its status.
    Newer Authlib releases do this themselves; older ones fail parsing it, which would hide the status."""
    if response.status_code >= 400:
        try:
            parsed = response.json()
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            response.raise_for_status()
    return response


def _text(value: Any, limit: int = 300) -> str:
    return str(value)[:limit]


@dataclass(frozen=True)
class Limits:
    """Where a token request may go and how long and large it may be."""

    outbound: OutboundPolicy
    timeout: float
    max_response_bytes: int


async def refresh_grant(
    client: TokenClient, refresh_token: str, *, limits: Limits, now: datetime
) -> TokenGrant:
    """Exchange `refresh_token` for a new access token at `client.token_url`."""

    async def ask(oauth: Any) -> Any:
        oauth.register_compliance_hook("refresh_token_response", _errors_without_json)
        return await oauth.refresh_token(client.token_url, refresh_token=refresh_token)

    return await _token_request(client, "refresh_token", ask, limits=limits, now=now, previous=refresh_token)


async def exchange_code(
    client: TokenClient, code: str, redirect_uri: str, *, limits: Limits, now: datetime
) -> TokenGrant:
    """Exchange a consent's authorization `code` for the account's first tokens."""

    async def ask(oauth: Any) -> Any:
        oauth.register_compliance_hook("access_token_response", _errors_without_json)
        return await oauth.fetch_token(
            client.token_url, grant_type="authorization_code", code=code, redirect_uri=redirect_uri
        )

    return await _token_request(client, "authorization_code", ask, limits=limits, now=now)


async def _token_request(
    client: TokenClient,
    grant: str,
    ask: Callable[[Any], Awaitable[Any]],
    *,
    limits: Limits,
    now: datetime,
    previous: str | None = None,
) -> TokenGrant:
    timeout = limits.timeout
    transport = _Bounded(PolicyTransport(limits.outbound), limits.max_response_bytes)
    where = f"Token request failed for {client.provider} ({grant}"
    try:
        async with (
            asyncio.timeout(timeout),
            AsyncOAuth2Client(
                client_id=client.client_id,
                client_secret=client.client_secret,
                token_endpoint_auth_method="client_secret_post",
                transport=transport,
                trust_env=False,
                follow_redirects=False,
                timeout=timeout,
            ) as oauth,
        ):
            token = await ask(oauth)
    except OAuthError as exc:
        # The provider answered a JSON error: only 4xx answers get here (5xx raise HTTPStatusError).
        error, description = _text(exc.error, 100), _text(exc.description or "")
        text = f"{where}): {error}" + (f" - {description}" if description else "")
        raise OAuth2Failure(text, permanent=True, error=error, description=description or None) from None
    except httpx.HTTPStatusError as exc:
        status = exc.response.status_code
        # 5xx and 429 pass; any other non-JSON 4xx (a gateway's page) is a refusal of this request.
        permanent = 400 <= status < 500 and status not in (408, 429)
        raise OAuth2Failure(f"{where}, HTTP {status})", permanent=permanent, status=status) from None
    except (TimeoutError, httpx.TimeoutException):
        raise OAuth2Failure(f"{where}): timed out after {timeout:g} s", permanent=False) from None
    except (httpx.HTTPError, _TooLarge, ValueError) as exc:
        raise OAuth2Failure(f"{where}): {_text(exc) or type(exc).__name__}", permanent=False) from None
    access = token.get("access_token")
    if not isinstance(access, str) or not access:
        raise OAuth2Failure(f"{where}): the answer has no access_token", permanent=False)
    expires_in = token.get("expires_in")
    expires = None
    if isinstance(expires_in, int | float) or (isinstance(expires_in, str) and expires_in.isdigit()):
        expires = now + timedelta(seconds=float(expires_in))
    rotated = token.get("refresh_token")
    return TokenGrant(
        access_token=access,
        expires=expires,
        refresh_token=rotated if isinstance(rotated, str) and rotated != previous else None,
        scope=token.get("scope") if isinstance(token.get("scope"), str) else None,
    )
