"""Field checks shared by the services; each raises BadInput naming the field, before anything is stored."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection

from gql_mail.control_chars import control_fault
from gql_mail.events import ALL_EVENTS
from gql_mail.services.errors import BadInput

# Any list or map in a request's variables or argument literals (see graphql/input_bounds.py), checked
# before the GraphQL layer coerces it; settings that allow more (max_recipients, max_attachments,
# max_headers) widen it.
MAX_LIST_ITEMS = 100
# Lists of event names: webhook `events`, the `events` subscription's filter: every name and the wildcard.
MAX_EVENT_NAMES = len(ALL_EVENTS) + 1
# A name in such a list (event names, message statuses).
MAX_NAME_LENGTH = 64

# A DNS label as resolvers and HTTP clients take it: letters, digits, hyphens not at either end, and the
# underscore that internal names use (docker compose services) and EmailEngine's URL validation accepts.
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
MAX_HOST_OCTETS = 253


def no_control_chars(value: str, field: str, *, max_length: int = 998) -> str:
    """Values that end up in headers or logs: CR/LF here would be header injection. The rule is
    control_chars.py's, the one composed headers follow too."""
    if (fault := control_fault(value)) is not None:
        raise BadInput(f"{field} must not contain {fault}", field=field)
    if len(value) > max_length:
        raise BadInput(f"{field} is longer than {max_length} characters", field=field)
    return value


def required_text(value: str | None, field: str, *, max_length: int = 998) -> str:
    if value is None or not value.strip():
        raise BadInput(f"{field} is required", field=field)
    return no_control_chars(value, field, max_length=max_length)


def host_fault(host: str) -> str | None:
    """Why `host` is no host we can connect to, or None: the one host rule, for accounts' SMTP and IMAP
    hosts and webhook URLs alike. An IP literal (IPv6 with or without brackets), or a name whose IDNA form
    is at most 253 octets of 1-63-octet labels (letters, digits, hyphens not at either end, underscores),
    with at most one trailing dot, every `xn--` label a valid one (ssl and httpx raise UnicodeError at
    connect time on one that is not: a host that only fails when used would fail every attempt)."""
    try:
        ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        pass
    else:
        return None
    name = host.removesuffix(".")
    try:
        ascii_name = name.encode("idna").decode("ascii")
        for label in ascii_name.split("."):
            if label.lower().startswith("xn--"):
                label.lower().encode("ascii").decode("idna")  # must decode and round-trip
    except UnicodeError:
        return "an empty, overlong or invalid IDNA label"
    if not 0 < len(ascii_name) <= MAX_HOST_OCTETS:
        return f"not 1 to {MAX_HOST_OCTETS} octets long"
    if not all(_HOST_LABEL.fullmatch(label) for label in ascii_name.split(".")):
        return "a label that is not letters, digits, hyphens and underscores"
    return None


def hostname(value: str | None, field: str) -> str:
    """An account's SMTP or IMAP host: trimmed, without brackets (an IPv6 literal) or a trailing dot."""
    host = required_text(value, field, max_length=MAX_HOST_OCTETS).strip()
    if (fault := host_fault(host)) is not None:
        raise BadInput(f"{field} is not a valid host name ({fault})", field=field)
    literal = host.removeprefix("[").removesuffix("]")
    try:
        ipaddress.ip_address(literal)
    except ValueError:
        return host.removesuffix(".")
    return literal


def port(value: int | None, field: str) -> int:
    if value is None:
        raise BadInput(f"{field} is required", field=field)
    if not 1 <= value <= 65535:
        raise BadInput(f"{field} must be between 1 and 65535", field=field)
    return value


def known_names(
    values: Collection[str], *, known: Collection[str], field: str, max_count: int, what: str
) -> list[str]:
    """The one check of a list of names from a fixed set (event names, message statuses): its size first,
    so an unknown name costs nothing however many were sent; the names de-duplicated, in their order."""
    if len(values) > max_count:
        raise BadInput(f"{field}: at most {max_count} {what} names", field=field)
    if any(len(name) > MAX_NAME_LENGTH for name in values):
        raise BadInput(f"{field}: a {what} name is at most {MAX_NAME_LENGTH} characters", field=field)
    if unknown := sorted(set(values) - set(known)):
        raise BadInput(
            f"unknown {what} name(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}", field=field
        )
    return list(dict.fromkeys(values))


# What webhook `events` may hold besides the event names: every event, now and later ones.
EVENT_WILDCARD = "*"


def event_names(values: Collection[str], *, wildcard: bool = False, field: str = "events") -> list[str]:
    """The one check of event names from a client, whichever API brought them: webhook `events` (where
    `wildcard` allows "*"), the `events` subscription's filter (its fan-out fast path included)."""
    known = ALL_EVENTS | {EVENT_WILDCARD} if wildcard else ALL_EVENTS
    return known_names(values, known=known, field=field, max_count=MAX_EVENT_NAMES, what="event")


MAX_PAGE_SIZE = 1000
MAX_PAGE = 1048576  # EmailEngine's bound on `page`


def check_page(page: int, page_size: int) -> None:
    """A 0-based page of a listing, within EmailEngine's bounds (every paged listing uses these)."""
    if not 0 <= page <= MAX_PAGE:
        raise BadInput(f"page must be between 0 and {MAX_PAGE}", field="page")
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise BadInput(f"pageSize must be between 1 and {MAX_PAGE_SIZE}", field="pageSize")
