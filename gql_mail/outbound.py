"""Where gql-mail may connect to: the outbound policy every webhook, SMTP, IMAP (and OAuth2) connection obeys.

Customers choose the hosts we connect to (an account's SMTP/IMAP host, a webhook URL), so without a rule they
could make the server reach what only it can reach: the cloud metadata service at 169.254.169.254, link-local
devices, an operator's internal relays. The rule is a value built once from the settings:

- ``outbound_deny`` (``GQL_MAIL_OUTBOUND_DENY``): networks no connection may reach; deny wins;
- ``outbound_allow`` (``GQL_MAIL_OUTBOUND_ALLOW``): when set, the only networks a connection may reach.

It is checked on the *resolved* address, at connect time, and the connection then goes to the address that
was checked (never to the name again): resolving once to check and letting the library resolve again to
connect is exactly what DNS rebinding exploits. Every address a name resolves to is checked; a connection
tries the allowed ones in the resolver's order, and a name with none allowed is refused (``OutboundRefused``,
code ``EPOLICY``). An IPv4-mapped IPv6 address (``::ffff:169.254.169.254``) is checked, and connected to, as
the IPv4 address it is.

The resolver is injectable (``loop.getaddrinfo`` by default) so tests can point a name anywhere. Adapters:
``connect`` gives SMTP and IMAP a connected socket; ``gql_mail.outbound_httpx`` plugs ``addresses``
into httpx.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from gql_mail.config import Settings

__all__ = ["IPAddress", "OutboundPolicy", "OutboundRefused", "Resolver", "system_resolver"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) -> the addresses the name stands for, as text ("192.0.2.1", "2001:db8::1").
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]


class OutboundRefused(Exception):
    """A connection the outbound policy forbids; nothing was sent to the address. Its text names the host,
    the address and the rule, and is meant to be shown (an account's or a webhook's last error)."""

    code = "EPOLICY"

    def __init__(self, host: str, address: IPAddress, rule: str) -> None:
        target = str(address) if host == str(address) else f"{host} ({address})"
        super().__init__(f"Outbound connection to {target} refused by policy: {rule}")
        self.host = host
        self.address = address


async def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's answer (getaddrinfo, off the event loop), each address once, in its order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[str] = []
    for family, _, _, _, sockaddr in infos:
        text = str(sockaddr[0])
        if family == socket.AF_INET6 and len(sockaddr) >= 4 and sockaddr[3]:
            text = f"{text}%{sockaddr[3]}"  # a link-local address means nothing without its interface
        if text not in found:
            found.append(text)
    return found


def _networks(values: Iterable[str], setting: str) -> tuple[IPNetwork, ...]:
    networks: list[IPNetwork] = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"GQL_MAIL_{setting.upper()}: {value!r} is not a network ({exc})") from exc
    return tuple(networks)


def _normalised(address: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address is the IPv4 address it carries: checked and connected to as such."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _literal(host: str) -> IPAddress | None:
    """``host`` as an address when it is one ("192.0.2.1", "::1", "[::1]"), else None (a name)."""
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        return None


@dataclass(frozen=True)
class OutboundPolicy:
    """The networks outbound connections may not (``deny``) and, when given, may only (``allow``) reach."""

    deny: tuple[IPNetwork, ...] = ()
    allow: tuple[IPNetwork, ...] | None = None  # None: every network not denied
    resolver: Resolver = field(default=system_resolver, compare=False, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings, resolver: Resolver | None = None) -> OutboundPolicy:
        """The policy of ``GQL_MAIL_OUTBOUND_DENY`` / ``_ALLOW``; a ValueError names a bad entry."""
        allow = settings.outbound_allow
        return cls(
            deny=_networks(settings.outbound_deny, "outbound_deny"),
            allow=None if allow is None else _networks(allow, "outbound_allow"),
            resolver=resolver or system_resolver,
        )

    def refusal(self, address: IPAddress) -> str | None:
        """Why ``address`` may not be reached (the rule, short), or None when it may."""
        address = _normalised(address)
        for network in self.deny:
            if address in network:
                return f"{network} is in GQL_MAIL_OUTBOUND_DENY"
        if self.allow is not None and not any(address in network for network in self.allow):
            return "not in GQL_MAIL_OUTBOUND_ALLOW"
        return None

    def literal_refusal(self, host: str) -> str | None:
        """Why ``host`` may not be reached when it is an address literal that the policy refuses, else None
        (a name is only judged when it is resolved, at connect time): settings naming a refused address
        are refused when they are given, not on every later connection."""
        literal = _literal(host)
        return None if literal is None else self.refusal(literal)

    async def addresses(self, host: str, port: int) -> list[IPAddress]:
        """The addresses of ``host`` a connection may use, resolved now, in the resolver's order.

        Raises ``OutboundRefused`` (naming the first refused address) when none is allowed, and the
        resolver's own error (``socket.gaierror``, an ``OSError``) when the name does not resolve."""
        literal = _literal(host)
        if literal is not None:
            resolved: list[IPAddress] = [literal]
        else:
            resolved = []
            for text in await self.resolver(host, port):
                try:
                    resolved.append(ipaddress.ip_address(text))
                except ValueError:
                    continue  # not an address: nothing to connect to
            if not resolved:
                raise socket.gaierror(socket.EAI_NONAME, f"{host} resolves to no address")
        allowed: list[IPAddress] = []
        first_refused: tuple[IPAddress, str] | None = None
        for address in resolved:
            address = _normalised(address)
            rule = self.refusal(address)
            if rule is None:
                if address not in allowed:
                    allowed.append(address)
            elif first_refused is None:
                first_refused = (address, rule)
        if not allowed:
            assert first_refused is not None
            raise OutboundRefused(host, *first_refused)
        return allowed

    async def connect(self, host: str, port: int) -> socket.socket:
        """A connected non-blocking TCP socket to an allowed address of ``host`` (tried in order).

        For libraries that take a socket (aiosmtplib's ``sock=``, ``loop.create_connection(sock=...)``); they
        must still be given ``host`` for TLS, so the certificate is verified against the name, not the
        address. Unbounded in time: the caller bounds it."""
        loop = asyncio.get_running_loop()
        failure: OSError | None = None
        for address in await self.addresses(host, port):
            family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setblocking(False)
                await loop.sock_connect(sock, (str(address), port))
            except OSError as exc:
                sock.close()
                failure = exc
                continue
            except BaseException:
                sock.close()
                raise
            return sock
        assert failure is not None
        raise failure
