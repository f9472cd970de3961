"""`GET /metrics`: the Prometheus scrape of this process (gql_mail/metrics.py).

Not public: it tells queue sizes and traffic, which is an operator's business. A scraper passes with a token
of scope `metrics` (or `api`) as `Authorization: Bearer`, or by connecting from a network listed in
`GQL_MAIL_METRICS_ALLOW` (a Prometheus server inside the cluster usually has no secret to send). The
address is the TCP peer's: behind a reverse proxy that is the proxy, so list the scraper's network only
where it connects directly.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Sequence

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gql_mail.metrics import CONTENT_TYPE
from gql_mail.runtime import Runtime
from gql_mail.services.stats import queue_snapshot
from gql_mail.services.tokens import METRICS_SCOPES, authenticate, bearer

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def allowed_networks(cidrs: Sequence[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def _in(address: str | None, networks: Sequence[Network]) -> bool:
    if not address or not networks:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


def metrics_endpoint(rt: Runtime) -> Callable[[Request], Awaitable[Response]]:
    networks = allowed_networks(rt.settings.metrics_allow)

    async def scrape(request: Request) -> Response:
        client = request.client.host if request.client is not None else None
        if not _in(client, networks):
            token = bearer(request.headers.get("authorization"))
            if await authenticate(rt, token, METRICS_SCOPES) is None:
                return JSONResponse(
                    {"error": "a token with scope metrics (or api), or an allowed address, is required"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        snapshot = await queue_snapshot(rt)
        return Response(rt.metrics.render(snapshot), media_type=CONTENT_TYPE)

    return scrape
