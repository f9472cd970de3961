"""httpx under the outbound policy: a transport whose every connection goes to a resolved, checked address.

httpx resolves names inside httpcore's network backend, which httpx does not let us replace through its
public API. So ``PolicyTransport`` is httpx's own ``AsyncHTTPTransport`` with its connection pool's network
backend wrapped: the wrapper resolves the name through the ``OutboundPolicy``, checks every address, and asks
the original backend to connect to an allowed *address*. Everything above the TCP connection is untouched:
httpcore still starts TLS with the URL's host as ``server_hostname`` (the certificate is verified against the
name) and sends the URL's ``Host`` header.

Private API relied on (one place, here; hence httpx ``<0.30`` and httpcore ``<2`` in pyproject):
``httpx.AsyncHTTPTransport._pool`` is an ``httpcore.AsyncConnectionPool`` when no proxy is given, and the pool
reads its ``_network_backend`` attribute each time it opens a connection. tests/test_outbound_policy.py checks
both (``test_httpx_internals_the_policy_relies_on``) and ``PolicyTransport`` refuses to start without them.

A refused connection is raised as ``PolicyRefused``, an ``httpx.ConnectError`` (callers that handle httpx's
errors handle it) whose ``code`` is ``EPOLICY``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpcore
import httpx

from gql_mail.outbound import OutboundPolicy, OutboundRefused

__all__ = ["PolicyRefused", "PolicyTransport"]


class PolicyRefused(httpx.ConnectError):
    """The outbound policy refused every address of the URL's host; nothing was sent."""

    code = "EPOLICY"


class _PolicyBackend(httpcore.AsyncNetworkBackend):
    """Resolve and check here; connect through the wrapped backend to a checked address only."""

    def __init__(self, policy: OutboundPolicy, inner: httpcore.AsyncNetworkBackend) -> None:
        self._policy = policy
        self._inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = await self._policy.addresses(host, port)
        except OutboundRefused as exc:
            raise PolicyRefused(str(exc)) from exc
        except TimeoutError as exc:  # httpx maps httpcore's errors to its own (ConnectTimeout here)
            raise httpcore.ConnectTimeout(f"Timed out resolving {host}") from exc
        except OSError as exc:
            raise httpcore.ConnectError(f"Can't resolve {host}: {exc}") from exc
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("Unix sockets are not outbound connections")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class PolicyTransport(httpx.AsyncHTTPTransport):
    """``httpx.AsyncHTTPTransport`` (same keyword arguments, no proxy) that obeys ``policy``.

    Give it to a client made with ``trust_env=False``: otherwise proxies from the environment get transports
    of their own, which this one does not govern."""

    def __init__(self, policy: OutboundPolicy, **kwargs: Any) -> None:
        if kwargs.get("proxy") is not None:
            raise ValueError("PolicyTransport does not go through proxies")
        super().__init__(**kwargs)
        pool = getattr(self, "_pool", None)
        if not isinstance(pool, httpcore.AsyncConnectionPool) or not hasattr(pool, "_network_backend"):
            raise RuntimeError(
                "httpx/httpcore changed: AsyncHTTPTransport._pool is no httpcore.AsyncConnectionPool with a "
                "_network_backend; gql_mail/outbound_httpx.py must be adapted before this release is used"
            )
        pool._network_backend = _PolicyBackend(policy, pool._network_backend)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except PolicyRefused as exc:
            exc.request = request  # as httpx does for the errors it raises itself
            raise
