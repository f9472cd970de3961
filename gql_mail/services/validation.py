"""Field checks shared by the services; each raises BadInput naming the field, before anything is stored."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection

from gql_mail.events import ALL_EVENTS
from gql_mail.services.errors import BadInput

# Any list or map in a request's variables or argument literals (see graphql/input_bounds.py), checked
# before the GraphQL layer coerces it; settings that allow more (max_recipients, max_attachments,
# max_headers) widen it.
MAX_LIST_ITEMS = 100
# Lists of event names: webhook `events`, the `events` subscription's filter.
MAX_EVENT_NAMES = 10
# A name in such a list (event names, message statuses).
MAX_NAME_LENGTH = 64

_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def no_control_chars(value: str, field: str, *, max_length: int = 998) -> str:
    """Values that end up in headers or logs: CR/LF here would be header injection."""
    if _CONTROL.search(value):
        raise BadInput(f"{field} must not contain control characters (CR, LF, ...)", field=field)
    if len(value) > max_length:
        raise BadInput(f"{field} is longer than {max_length} characters", field=field)
    return value


def required_text(value: str | None, field: str, *, max_length: int = 998) -> str:
    if value is None or not value.strip():
        raise BadInput(f"{field} is required", field=field)
    return no_control_chars(value, field, max_length=max_length)


def hostname(value: str | None, field: str) -> str:
    host = required_text(value, field, max_length=253).strip().rstrip(".")
    try:
        ipaddress.ip_address(host.strip("[]"))
        return host.strip("[]")
    except ValueError:
        pass
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise BadInput(f"{field} is not a valid host name", field=field) from exc
    if not all(_HOST_LABEL.match(label) for label in ascii_host.split(".")):
        raise BadInput(f"{field} is not a valid host name", field=field)
    return host


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
