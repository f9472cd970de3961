"""When a mail client may log in without TLS: one rule for SMTP and IMAP.

```
implicit TLS (secure)                          -> log in
STARTTLS offered, upgrade succeeded            -> log in (over TLS)
STARTTLS not offered          require_tls      -> ETLS, nothing sent
                              otherwise        -> log in in clear (opportunistic, as nodemailer does)
STARTTLS offered, refused     require_tls      -> ETLS, nothing sent
                              non-loopback     -> ETLS, nothing sent
                              loopback         -> log in in clear
STARTTLS offered, handshake failed             -> ETLS (the connection is gone anyway)
```

A server that says STARTTLS and then refuses it is what a network attacker who rewrites the answer looks
like, so credentials never go in clear after that, unless the bytes cannot leave this machine. Without
``require_tls`` an attacker who removes STARTTLS from the server's answer still gets a clear login; that
is what ``require_tls`` (per account ``smtp.tls.requireTLS`` / ``imap.tls.requireTLS``, default
``GQL_MAIL_REQUIRE_TLS``) is for.
"""

from __future__ import annotations

import ipaddress

from gql_mail.mail.errors import MailError

__all__ = ["is_loopback", "starttls_not_offered", "starttls_refused"]

_LOOPBACK_NAMES = frozenset({"localhost", "localhost."})


def is_loopback(host: str) -> bool:
    """True when ``host``, as configured, names this machine's loopback interface.

    Decided on the host *string*, never by resolving it: ``localhost`` (which resolvers answer from
    /etc/hosts or synthesise, RFC 6761, never from the network) or an IP literal in 127.0.0.0/8, ``::1``
    or an IPv4-mapped loopback address. Any other name counts as remote even if it resolves to 127.0.0.1
    today: the answer comes from DNS, which the attacker stripping STARTTLS may also forge, and the name
    is resolved again at connect time (rebinding). Being wrong in that direction only costs a clear login
    to a local relay that offers STARTTLS and then refuses it.
    """
    name = host.strip().lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(name.removeprefix("[").removesuffix("]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def starttls_not_offered(require_tls: bool) -> MailError | None:
    """The error that stops the login when the server offers no STARTTLS (None: log in in clear)."""
    if not require_tls:
        return None
    return MailError(
        "TLS is required but the server does not offer STARTTLS; no credentials were sent",
        code="ETLS",
    )


def starttls_refused(host: str, require_tls: bool, reply: str) -> MailError | None:
    """The error that stops the login when the server offered STARTTLS and then refused it (``reply``).

    None only for a loopback host without ``require_tls``: the login goes on in clear."""
    if not require_tls and is_loopback(host):
        return None
    return MailError(f"STARTTLS failed ({reply}); no credentials were sent", code="ETLS", response=reply)
